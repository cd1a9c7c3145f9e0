"""Settlement: every price batch a run used.

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-06

- `run_price_batches`: a run is priced by the current price of each interval, whichever batch
  holds it, so it records every batch it took a price from (as `run_reading_batches` does).

Written by hand; tests/test_store.py proves it matches ledger/store/settlement_models.py on SQLite
and PostgreSQL. Names go through op.f() so the models' naming convention does not rename them.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.String(66)


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


def downgrade() -> None:
    op.drop_table("run_price_batches")
