"""The access log: a chain of hashes, and no INSERT OR REPLACE on SQLite.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

Each entry gets `prev_hash` and `hash` (ledger/auth/access_chain.py); the entries already stored
are chained here, oldest first. The append-only triggers of 0005 are suspended for that and only
for that. On SQLite, INSERT OR REPLACE deletes the row it replaces without firing the DELETE
trigger (unless recursive triggers are on), so a BEFORE INSERT trigger refuses an entry whose id
is taken.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from ledger.auth import access_chain

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_MESSAGE = "access_log is append-only"
_CHUNK = 5_000


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    _suspend_triggers(postgres)
    # NOT NULL needs a value for the rows already there; the chain then gives each its own.
    for column in ("prev_hash", "hash"):
        op.add_column("access_log", sa.Column(column, sa.String(64), nullable=False, server_default=""))
    _chain_existing_entries()
    if postgres:
        for column in ("prev_hash", "hash"):
            op.alter_column("access_log", column, server_default=None)
    _restore_triggers(postgres)
    if not postgres:
        op.execute(
            "CREATE TRIGGER access_log_no_replace BEFORE INSERT ON access_log "
            "WHEN EXISTS (SELECT 1 FROM access_log WHERE id = NEW.id) "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if not postgres:
        op.execute("DROP TRIGGER IF EXISTS access_log_no_replace")
    _suspend_triggers(postgres)
    with op.batch_alter_table("access_log") as batch:
        batch.drop_column("hash")
        batch.drop_column("prev_hash")
    _restore_triggers(postgres)


def _chain_existing_entries() -> None:
    connection = op.get_bind()
    table = sa.table(
        "access_log",
        sa.column("id", sa.Integer),
        *(sa.column(name) for name in access_chain.FIELDS if name != "at"),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("prev_hash", sa.String),
        sa.column("hash", sa.String),
    )
    previous, after = access_chain.GENESIS, None
    while True:
        query = sa.select(table).order_by(table.c.id).limit(_CHUNK)
        if after is not None:
            query = query.where(table.c.id > after)
        rows = connection.execute(query).mappings().all()
        if not rows:
            return
        links = []
        for row in rows:
            entry = dict(row)
            entry["at"] = _aware(entry["at"])
            current = access_chain.link(previous, entry)
            links.append({"entry_id": row["id"], "prev_hash": previous, "hash": current})
            previous = current
        connection.execute(
            table.update()
            .where(table.c.id == sa.bindparam("entry_id"))
            .values(prev_hash=sa.bindparam("prev_hash"), hash=sa.bindparam("hash")),
            links,
        )
        after = rows[-1]["id"]


def _aware(value: object) -> object:
    """SQLite hands back naive UTC datetimes (the models' UtcDateTime makes them aware)."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _suspend_triggers(postgres: bool) -> None:
    if postgres:
        op.execute("ALTER TABLE access_log DISABLE TRIGGER access_log_no_change")
        return
    for action in ("update", "delete"):
        op.execute(f"DROP TRIGGER access_log_no_{action}")


def _restore_triggers(postgres: bool) -> None:
    if postgres:
        op.execute("ALTER TABLE access_log ENABLE TRIGGER access_log_no_change")
        return
    for action in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER access_log_no_{action.lower()} BEFORE {action} ON access_log "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
        )
