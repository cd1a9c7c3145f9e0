"""Metering: reading and price batches committed on chain, their meter readings and reference prices.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-27

Written by hand; tests/test_store.py proves it matches ledger/store/metering_models.py on SQLite
and PostgreSQL. Names go through op.f() so the models' naming convention does not rename them again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite assigns row ids only to an INTEGER PRIMARY KEY column.
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CODE = sa.String(16)


def one_of(column: str, values: Sequence[str], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(name))


def batch_columns(table: str, count_column: str) -> list[sa.Column[object] | sa.Constraint]:
    return [
        sa.Column("batch_id", sa.String(66), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.String(66), nullable=False),
        sa.Column("supersedes", sa.String(66), nullable=True),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("status", CODE, nullable=False),
        sa.Column("transaction_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(count_column, sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", name=op.f(f"pk_{table}")),
        one_of("status", ("prepared", "committed"), f"ck_{table}_batch_status"),
    ]


def upgrade() -> None:
    op.create_table("reading_batches", *batch_columns("reading_batches", "reading_count"))
    op.create_table(
        "meter_readings",
        sa.Column("id", ROW_ID, nullable=False),
        sa.Column("batch_id", sa.String(66), nullable=False),
        sa.Column("participant", sa.String(42), nullable=False),
        sa.Column("interval_start", sa.BigInteger(), nullable=False),
        sa.Column("injected_wh", sa.BigInteger(), nullable=False),
        sa.Column("withdrawn_wh", sa.BigInteger(), nullable=False),
        sa.Column("quality", CODE, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("leaf_index", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meter_readings")),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["reading_batches.batch_id"],
            name=op.f("fk_meter_readings_batch_id_reading_batches"),
        ),
        sa.UniqueConstraint(
            "batch_id",
            "participant",
            "interval_start",
            name=op.f("uq_meter_readings_batch_id_participant_interval_start"),
        ),
        one_of("quality", ("measured", "estimated", "substituted"), "ck_meter_readings_reading_quality"),
    )
    op.create_index(
        op.f("ix_meter_readings_participant_interval_start_version"),
        "meter_readings",
        ["participant", "interval_start", "version"],
    )
    op.create_index(op.f("ix_meter_readings_interval_start"), "meter_readings", ["interval_start"])

    op.create_table("price_batches", *batch_columns("price_batches", "price_count"))
    op.create_table(
        "reference_prices",
        sa.Column("id", ROW_ID, nullable=False),
        sa.Column("batch_id", sa.String(66), nullable=False),
        sa.Column("interval_start", sa.BigInteger(), nullable=False),
        sa.Column("price_minor_per_mwh", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("leaf_index", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_prices")),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["price_batches.batch_id"],
            name=op.f("fk_reference_prices_batch_id_price_batches"),
        ),
        sa.UniqueConstraint("batch_id", "interval_start", name=op.f("uq_reference_prices_batch_id_interval_start")),
    )
    op.create_index(
        op.f("ix_reference_prices_interval_start_version"), "reference_prices", ["interval_start", "version"]
    )


def downgrade() -> None:
    for table in ("reference_prices", "price_batches", "meter_readings", "reading_batches"):
        op.drop_table(table)
