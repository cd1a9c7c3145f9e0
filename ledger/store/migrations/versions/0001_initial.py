"""Initial schema: participants, trades and their events, the relayer outbox, indexer state.

Revision ID: 0001
Revises:
Create Date: 2025-11-27

Written by hand; tests/test_store.py proves it matches ledger/store/models.py on SQLite and
PostgreSQL. Names go through op.f() so the models' naming convention does not rename them again.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite assigns row ids only to an INTEGER PRIMARY KEY column.
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
CODE = sa.String(16)


def provenance() -> list[sa.Column[object]]:
    return [
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.Column("transaction_hash", sa.String(66), nullable=False),
        sa.Column("transaction_index", sa.Integer(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
    ]


def one_of(column: str, values: Sequence[str], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{value}'" for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(name))


PARTICIPANT_KINDS = ("generator", "retailer", "consumer", "prosumer")


def upgrade() -> None:
    op.create_table(
        "participants",
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("kind", CODE, nullable=False),
        sa.Column("status", CODE, nullable=False),
        sa.Column("identifier_hash", sa.String(66), nullable=False),
        sa.Column("registered_at", sa.BigInteger(), nullable=False),
        *provenance(),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_participants")),
        one_of("kind", PARTICIPANT_KINDS, "ck_participants_participant_kind"),
        one_of("status", ("active", "suspended"), "ck_participants_participant_status"),
    )
    op.create_index(
        op.f("ix_participants_block_number_log_index"),
        "participants",
        ["block_number", "log_index"],
        unique=True,
    )

    op.create_table(
        "participant_events",
        sa.Column("id", EVENT_ID, nullable=False),
        sa.Column("event", CODE, nullable=False),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("kind", CODE, nullable=True),
        sa.Column("identifier_hash", sa.String(66), nullable=True),
        *provenance(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_participant_events")),
        sa.UniqueConstraint("block_hash", "log_index", name=op.f("uq_participant_events_block_hash_log_index")),
        one_of("event", ("registered", "suspended", "reinstated"), "ck_participant_events_participant_event_kind"),
        one_of("kind", PARTICIPANT_KINDS, "ck_participant_events_participant_kind"),
    )
    op.create_index(
        op.f("ix_participant_events_address_block_number_log_index"),
        "participant_events",
        ["address", "block_number", "log_index"],
    )

    op.create_table(
        "trades",
        sa.Column("trade_id", sa.String(66), nullable=False),
        sa.Column("seller", sa.String(42), nullable=False),
        sa.Column("buyer", sa.String(42), nullable=False),
        sa.Column("delivery_start", sa.BigInteger(), nullable=False),
        sa.Column("delivery_end", sa.BigInteger(), nullable=False),
        sa.Column("energy_per_interval_wh", sa.BigInteger(), nullable=False),
        sa.Column("price_minor_per_mwh", sa.BigInteger(), nullable=False),
        sa.Column("nonce", sa.String(78), nullable=False),
        sa.Column("deadline", sa.String(20), nullable=False),
        sa.Column("replaces", sa.String(66), nullable=True),
        sa.Column("status", CODE, nullable=False),
        sa.Column("replaced_by", sa.String(66), nullable=True),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        *provenance(),
        sa.PrimaryKeyConstraint("trade_id", name=op.f("pk_trades")),
        one_of("status", ("recorded", "cancelled", "amended"), "ck_trades_trade_status"),
    )
    op.create_index(op.f("ix_trades_seller_delivery_start"), "trades", ["seller", "delivery_start"])
    op.create_index(op.f("ix_trades_buyer_delivery_start"), "trades", ["buyer", "delivery_start"])
    op.create_index(op.f("ix_trades_status"), "trades", ["status"])
    op.create_index(op.f("ix_trades_delivery_start"), "trades", ["delivery_start"])
    op.create_index(op.f("ix_trades_block_number_log_index"), "trades", ["block_number", "log_index"], unique=True)

    op.create_table(
        "trade_events",
        sa.Column("id", EVENT_ID, nullable=False),
        sa.Column("trade_id", sa.String(66), nullable=False),
        sa.Column("event", CODE, nullable=False),
        sa.Column("related_trade_id", sa.String(66), nullable=True),
        sa.Column("reason_selector", sa.String(10), nullable=True),
        sa.Column("reason_name", sa.String(100), nullable=True),
        sa.Column("reason_data", sa.Text(), nullable=True),
        *provenance(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trade_events")),
        sa.UniqueConstraint("block_hash", "log_index", name=op.f("uq_trade_events_block_hash_log_index")),
        one_of("event", ("recorded", "cancelled", "amended", "rejected"), "ck_trade_events_trade_event_kind"),
    )
    op.create_index(
        op.f("ix_trade_events_trade_id_block_number_log_index"),
        "trade_events",
        ["trade_id", "block_number", "log_index"],
    )

    op.create_table(
        "submissions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("trade_id", sa.String(66), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", CODE, nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("transaction_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submissions")),
        sa.UniqueConstraint("trade_id", name=op.f("uq_submissions_trade_id")),
        one_of("status", ("accepted", "pending", "recorded", "rejected"), "ck_submissions_submission_status"),
    )
    op.create_index(op.f("ix_submissions_status_created_at"), "submissions", ["status", "created_at"])

    op.create_table(
        "indexer_checkpoints",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(66), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_indexer_checkpoints")),
    )

    op.create_table(
        "indexed_blocks",
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(66), nullable=False),
        sa.Column("parent_hash", sa.String(66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_indexed_blocks")),
    )


def downgrade() -> None:
    for table in (
        "indexed_blocks",
        "indexer_checkpoints",
        "submissions",
        "trade_events",
        "trades",
        "participant_events",
        "participants",
    ):
        op.drop_table(table)
