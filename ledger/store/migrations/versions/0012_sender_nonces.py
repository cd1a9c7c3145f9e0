"""Each sending key's next nonce, shared by every process, and the relayer's last progress.

Revision ID: 0012
Revises: 0007
Create Date: 2026-12-06

Written by hand; tests/test_store.py proves it matches ledger/store/sender_models.py on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sender_nonces",
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("next_nonce", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_sender_nonces")),
    )
    op.create_table(
        "worker_progress",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("progressed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_progress")),
    )


def downgrade() -> None:
    op.drop_table("worker_progress")
    op.drop_table("sender_nonces")
