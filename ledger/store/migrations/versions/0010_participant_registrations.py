"""The registrar's queue of participant registrations.

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-06

Written by hand; tests/test_store.py proves it matches ledger/store/registration_models.py on
SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "'generator', 'retailer', 'consumer', 'prosumer'"
STATUSES = "'accepted', 'pending', 'registered', 'rejected'"


def upgrade() -> None:
    op.create_table(
        "participant_registrations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("identifier_hash", sa.String(66), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("transaction_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_participant_registrations")),
        sa.UniqueConstraint("address", name=op.f("uq_participant_registrations_address")),
        sa.CheckConstraint(f"kind IN ({KINDS})", name=op.f("ck_participant_registrations_participant_kind")),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_participant_registrations_registration_status")),
    )
    op.create_index(
        op.f("ix_participant_registrations_status_created_at"),
        "participant_registrations",
        ["status", "created_at"],
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_participant_registrations_status_created_at"), table_name="participant_registrations")
    op.drop_table("participant_registrations")
