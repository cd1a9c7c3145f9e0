"""The cancellation outbox: cancellations are accepted, then relayed in batches like trades.

Revision ID: 0009
Revises: 0007
Create Date: 2026-12-06

A cancellation both parties signed used to be sent at once from the API process, from the same
key as the relayer's batches and with a nonce cache of its own. It is now a row here that the
relayer sends in a `cancelTrades` batch. Written by hand; tests/test_store.py proves it matches
ledger/store/models.py on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("accepted", "pending", "recorded", "rejected")


def upgrade() -> None:
    allowed = ", ".join(f"'{value}'" for value in STATUSES)
    op.create_table(
        "cancellations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("digest", sa.String(66), nullable=False),
        sa.Column("trade_id", sa.String(66), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("transaction_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cancellations")),
        sa.UniqueConstraint("digest", name=op.f("uq_cancellations_digest")),
        sa.CheckConstraint(f"status IN ({allowed})", name=op.f("ck_cancellations_cancellation_status")),
    )
    op.create_index(op.f("ix_cancellations_status_created_at"), "cancellations", ["status", "created_at"])
    op.create_index(op.f("ix_cancellations_trade_id"), "cancellations", ["trade_id"])


def downgrade() -> None:
    op.drop_table("cancellations")
