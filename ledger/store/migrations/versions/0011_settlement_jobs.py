"""Settlement: every price batch a run used; settlement jobs; scheduled parameter changes; a dispute's
unconfirmed opening.

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-06

- `run_price_batches`: a run is priced by the current price of each interval, whichever batch
  holds it, so it records every batch it took a price from (as `run_reading_batches` does).
- `settlement_jobs`: `POST /settlement-runs` stores a job, which the workers' settlement thread
  executes (ledger/services/settlement/jobs.py).
- `parameter_changes`: settlement parameters the operator scheduled from a period start on, only
  ever inserted; `settlement_runs.parameter_change_id` is the one a run used (null: the settings').
- `disputes.opening_unconfirmed`: a dispute opening a reorg took back, waiting to be mined again or
  relayed again, kept in the database so that a restarted service still follows it up
  (ledger/services/reconcile).

Written by hand; tests/test_store.py proves it matches ledger/store/settlement_models.py on SQLite
and PostgreSQL. Names go through op.f() so the models' naming convention does not rename them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.String(66)
CODE = sa.String(16)


def one_of(column: str, values: Sequence[str], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(name))


def upgrade() -> None:
    op.create_table(
        "run_price_batches",
        sa.Column("run_id", HASH, nullable=False),
        sa.Column("batch_id", HASH, nullable=False),
        sa.Column("root", HASH, nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["settlement_runs.run_id"],
            name=op.f("fk_run_price_batches_run_id_settlement_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_id", "batch_id", name=op.f("pk_run_price_batches")),
    )
    # Runs written before this revision took their prices from one batch: settlement_runs.price_batch_id.
    op.execute(
        "INSERT INTO run_price_batches (run_id, batch_id, root) "
        "SELECT r.run_id, r.price_batch_id, b.root FROM settlement_runs r "
        "JOIN price_batches b ON b.batch_id = r.price_batch_id"
    )

    op.create_table(
        "settlement_jobs",
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("status", CODE, nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(32), nullable=True),
        sa.Column("step_detail", sa.Text(), nullable=True),
        sa.Column("step_done", sa.BigInteger(), nullable=True),
        sa.Column("step_total", sa.BigInteger(), nullable=True),
        sa.Column("run_id", HASH, nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("action", CODE, nullable=True),
        sa.Column("problem", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_settlement_jobs")),
        one_of("status", ("queued", "running", "succeeded", "failed"), "ck_settlement_jobs_settlement_job_status"),
    )
    op.create_index(op.f("ix_settlement_jobs_status_created_at"), "settlement_jobs", ["status", "created_at"])
    op.create_index(
        op.f("ix_settlement_jobs_period_start_period_end"), "settlement_jobs", ["period_start", "period_end"]
    )

    op.create_table(
        "parameter_changes",
        sa.Column("change_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("effective_from", sa.BigInteger(), nullable=False),
        sa.Column("tolerance_bps", sa.BigInteger(), nullable=False),
        sa.Column("penalty_bps", sa.BigInteger(), nullable=False),
        sa.Column("scheduled_by", sa.String(255), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("change_id", name=op.f("pk_parameter_changes")),
    )
    op.create_index(op.f("ix_parameter_changes_effective_from"), "parameter_changes", ["effective_from"])
    op.add_column("settlement_runs", sa.Column("parameter_change_id", sa.Integer(), nullable=True))
    op.add_column("disputes", sa.Column("opening_unconfirmed", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("disputes") as batch:
        batch.drop_column("opening_unconfirmed")
    with op.batch_alter_table("settlement_runs") as batch:
        batch.drop_column("parameter_change_id")
    op.drop_table("parameter_changes")
    op.drop_table("settlement_jobs")
    op.drop_table("run_price_batches")
