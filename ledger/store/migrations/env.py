"""Alembic environment for the ledger database.

`ledger.store.db.migrate()` runs it with a connection in `config.attributes["connection"]`;
there is no alembic.ini. `target_metadata` is what autogenerate compares against when drafting
a new revision (revisions are still reviewed and finished by hand).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from ledger.store import (  # noqa: F401  (their tables join Base.metadata)
    access_models,
    chain_models,
    metering_models,
    registration_models,
    sender_models,
    settlement_models,
)
from ledger.store.models import Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations through ledger.store.db.migrate(), which passes a connection")
run_migrations(connection)
