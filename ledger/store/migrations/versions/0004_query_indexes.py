"""Query indexes: a participant's trades in chain order, for GET /trades?participant=...

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

Without them a participant's page read and sorted every trade of the participant (about 2,000
rows per participant with 1,000,000 trades; see scripts/bench_api.py). Written by hand;
tests/test_store.py proves it matches ledger/store/models.py on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_trades_seller_block_number_log_index": ["seller", "block_number", "log_index"],
    "ix_trades_buyer_block_number_log_index": ["buyer", "block_number", "log_index"],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(op.f(name), "trades", columns)


def downgrade() -> None:
    for name in INDEXES:
        op.drop_index(op.f(name), table_name="trades")
