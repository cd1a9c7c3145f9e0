"""Chain facts of MeterData and Settlement: batch commitments, run commitments, disputes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27

Written by hand; tests/test_store.py proves it matches ledger/store/chain_models.py on SQLite and
PostgreSQL.

The indexer fills these tables from events. An index built before this revision has checkpoints
past MeterData and Settlement logs it never read, so the upgrade deletes the indexer's checkpoints
and block window: the indexer then re-reads the chain from the deployment block, which re-inserts
nothing twice (trade and participant rows are keyed by id and (block hash, log index)) and fills
the new tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.String(66)
ADDRESS = sa.String(42)


def provenance() -> list[sa.Column[object]]:
    return [
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", HASH, nullable=False),
        sa.Column("transaction_hash", HASH, nullable=False),
        sa.Column("transaction_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
    ]


def superseded() -> list[sa.Column[object]]:
    return [
        sa.Column("superseded_by", HASH, nullable=True),
        sa.Column("superseded_block_number", sa.BigInteger(), nullable=True),
        sa.Column("superseded_transaction_hash", HASH, nullable=True),
        sa.Column("superseded_log_index", sa.Integer(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "chain_batches",
        sa.Column("batch_id", HASH, nullable=False),
        sa.Column("batch_kind", sa.String(16), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("root", HASH, nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("supersedes", HASH, nullable=True),
        sa.Column("committer", ADDRESS, nullable=False),
        *superseded(),
        *provenance(),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_chain_batches")),
        sa.CheckConstraint("batch_kind IN ('readings', 'prices')", name=op.f("ck_chain_batches_chain_batch_kind")),
    )
    op.create_index(op.f("ix_chain_batches_block_number"), "chain_batches", ["block_number"])
    op.create_index(op.f("ix_chain_batches_superseded_block_number"), "chain_batches", ["superseded_block_number"])

    op.create_table(
        "chain_runs",
        sa.Column("run_id", HASH, nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("root", HASH, nullable=False),
        sa.Column("inputs_hash", HASH, nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("total_receivable_minor", sa.String(78), nullable=False),
        sa.Column("total_payable_minor", sa.String(78), nullable=False),
        sa.Column("dispute_window_ends", sa.BigInteger(), nullable=False),
        sa.Column("committed_at", sa.BigInteger(), nullable=False),
        *superseded(),
        *provenance(),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_chain_runs")),
    )
    op.create_index(op.f("ix_chain_runs_block_number"), "chain_runs", ["block_number"])
    op.create_index(op.f("ix_chain_runs_superseded_block_number"), "chain_runs", ["superseded_block_number"])

    op.create_table(
        "chain_disputes",
        sa.Column("dispute_id", HASH, nullable=False),
        sa.Column("run_id", HASH, nullable=False),
        sa.Column("account", ADDRESS, nullable=False),
        sa.Column("leaf_hash", HASH, nullable=False),
        sa.Column("reason_hash", HASH, nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=True),
        sa.Column("resolution_hash", HASH, nullable=True),
        sa.Column("resolved_block_number", sa.BigInteger(), nullable=True),
        sa.Column("resolved_block_hash", HASH, nullable=True),
        sa.Column("resolved_transaction_hash", HASH, nullable=True),
        sa.Column("resolved_log_index", sa.Integer(), nullable=True),
        *provenance(),
        sa.PrimaryKeyConstraint("dispute_id", name=op.f("pk_chain_disputes")),
    )
    op.create_index(op.f("ix_chain_disputes_run_id"), "chain_disputes", ["run_id"])
    op.create_index(op.f("ix_chain_disputes_block_number"), "chain_disputes", ["block_number"])
    op.create_index(op.f("ix_chain_disputes_resolved_block_number"), "chain_disputes", ["resolved_block_number"])

    # See the module docstring: the indexer must read the chain again to fill these tables.
    op.execute("DELETE FROM indexer_checkpoints")
    op.execute("DELETE FROM indexed_blocks")


def downgrade() -> None:
    for table in ("chain_disputes", "chain_runs", "chain_batches"):
        op.drop_table(table)
