"""Settlement: runs, the inputs each run used, statement lines, positions, disputes.

Revision ID: 0003
Revises: 0002
Create Date: 2025-11-27

Written by hand; tests/test_store.py proves it matches ledger/store/settlement_models.py on SQLite
and PostgreSQL. Names go through op.f() so the models' naming convention does not rename them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CODE = sa.String(16)
HASH = sa.String(66)
ADDRESS = sa.String(42)


def one_of(column: str, values: Sequence[str], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(name))


def run_id_key(table: str) -> list[sa.schema.SchemaItem]:
    """The run id column of a child table, a foreign key to its run."""
    return [
        sa.Column("run_id", HASH, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["settlement_runs.run_id"],
            name=op.f(f"fk_{table}_run_id_settlement_runs"),
            ondelete="CASCADE",
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "settlement_runs",
        sa.Column("run_id", HASH, nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", CODE, nullable=False),
        sa.Column("rules_version", sa.Integer(), nullable=False),
        sa.Column("root", HASH, nullable=False),
        sa.Column("inputs_hash", HASH, nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("total_receivable_minor", sa.String(78), nullable=False),
        sa.Column("total_payable_minor", sa.String(78), nullable=False),
        sa.Column("price_batch_id", HASH, nullable=False),
        sa.Column("tolerance_bps", sa.Integer(), nullable=False),
        sa.Column("penalty_bps", sa.Integer(), nullable=False),
        sa.Column("balancing_account", ADDRESS, nullable=False),
        sa.Column("superseded_by", HASH, nullable=True),
        sa.Column("transaction_hash", HASH, nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("block_hash", HASH, nullable=True),
        sa.Column("committed_at", sa.BigInteger(), nullable=True),
        sa.Column("dispute_window_ends", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_settlement_runs")),
        sa.UniqueConstraint(
            "period_start", "period_end", "version", name=op.f("uq_settlement_runs_period_start_period_end_version")
        ),
        one_of("status", ("computed", "committed", "superseded"), "ck_settlement_runs_settlement_run_status"),
    )
    op.create_index(op.f("ix_settlement_runs_status_period_start"), "settlement_runs", ["status", "period_start"])

    op.create_table(
        "run_trades",
        *run_id_key("run_trades"),
        sa.Column("trade_id", HASH, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "trade_id", name=op.f("pk_run_trades")),
    )

    op.create_table(
        "run_reading_batches",
        *run_id_key("run_reading_batches"),
        sa.Column("batch_id", HASH, nullable=False),
        sa.Column("root", HASH, nullable=False),
        sa.PrimaryKeyConstraint("run_id", "batch_id", name=op.f("pk_run_reading_batches")),
    )

    op.create_table(
        "statement_lines",
        *run_id_key("statement_lines"),
        sa.Column("account", ADDRESS, nullable=False),
        sa.Column("kind", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("ref", HASH, nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("leaf_index", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "account", "kind", "ref", name=op.f("pk_statement_lines")),
        sa.CheckConstraint("kind IN (1, 2, 3, 9)", name=op.f("ck_statement_lines_line_kind")),
    )

    op.create_table(
        "positions",
        *run_id_key("positions"),
        sa.Column("participant", ADDRESS, nullable=False),
        sa.Column("interval_start", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("sold_wh", sa.BigInteger(), nullable=False),
        sa.Column("bought_wh", sa.BigInteger(), nullable=False),
        sa.Column("contracted_wh", sa.BigInteger(), nullable=False),
        sa.Column("metered_wh", sa.BigInteger(), nullable=False),
        sa.Column("imbalance_wh", sa.BigInteger(), nullable=False),
        sa.Column("tolerance_wh", sa.BigInteger(), nullable=False),
        sa.Column("excess_wh", sa.BigInteger(), nullable=False),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.Column("reading_quality", CODE, nullable=True),
        sa.Column("reading_batch_id", HASH, nullable=True),
        sa.Column("reading_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", "participant", "interval_start", name=op.f("pk_positions")),
        one_of("reading_quality", ("measured", "estimated", "substituted"), "ck_positions_reading_quality"),
    )

    op.create_table(
        "disputes",
        sa.Column("dispute_id", HASH, nullable=False),
        *run_id_key("disputes"),
        sa.Column("account", ADDRESS, nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.Column("ref", HASH, nullable=False),
        sa.Column("leaf_hash", HASH, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reason_hash", HASH, nullable=False),
        sa.Column("deadline", sa.String(20), nullable=False),
        sa.Column("signature", sa.String(132), nullable=False),
        sa.Column("status", CODE, nullable=False),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("resolution_hash", HASH, nullable=True),
        sa.Column("opened_transaction_hash", HASH, nullable=False),
        sa.Column("opened_block_number", sa.BigInteger(), nullable=False),
        sa.Column("resolved_transaction_hash", HASH, nullable=True),
        sa.Column("resolved_block_number", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("dispute_id", name=op.f("pk_disputes")),
        sa.UniqueConstraint("run_id", "account", "kind", "ref", name=op.f("uq_disputes_run_id_account_kind_ref")),
        one_of("status", ("open", "accepted", "rejected"), "ck_disputes_dispute_status"),
    )
    op.create_index(op.f("ix_disputes_account_status"), "disputes", ["account", "status"])


def downgrade() -> None:
    for table in ("disputes", "positions", "statement_lines", "run_reading_batches", "run_trades", "settlement_runs"):
        op.drop_table(table)
