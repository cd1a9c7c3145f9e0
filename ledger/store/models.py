"""The ledger's tables: the read model the indexer builds from contract events, and the relayer's outbox.

Formats shared by every table: energy and money are integers in their unit (Wh, minor currency
units); times read from the chain are UTC Unix seconds (BigInteger); addresses are EIP-55
checksummed (String(42)); 32-byte ids and hashes are 0x-prefixed lowercase hex (String(66)).
Every event-derived row carries the position of its log (`LogProvenance`).

`ledger/store/migrations/versions/` must describe exactly these tables; a test compares them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from eth_utils import is_address, to_checksum_address
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Enum,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship

from ledger.domain.trade import ParticipantKind
from ledger.errors import ValidationError

# Explicit constraint names, identical on SQLite and PostgreSQL, so migrations can name what they
# alter and the migration test can compare constraints by name.
NAMING_CONVENTION = {
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# --- code lists --------------------------------------------------------------------------------
# Participant kinds are the domain's (ledger.domain.trade.ParticipantKind). The statuses below are
# those a stored row can have: the chain's TradeStatus and ParticipantStatus (ledger.domain.trade)
# also have NONE, the state of an id the chain never saw, which is never stored.


class ParticipantStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class ParticipantEventKind(StrEnum):
    REGISTERED = "registered"
    SUSPENDED = "suspended"
    REINSTATED = "reinstated"


class TradeStatus(StrEnum):
    RECORDED = "recorded"
    CANCELLED = "cancelled"
    AMENDED = "amended"


class TradeEventKind(StrEnum):
    RECORDED = "recorded"
    CANCELLED = "cancelled"
    AMENDED = "amended"
    REJECTED = "rejected"


class SubmissionStatus(StrEnum):
    ACCEPTED = "accepted"
    PENDING = "pending"
    RECORDED = "recorded"
    REJECTED = "rejected"


def _code_list(enum: type[StrEnum], name: str) -> Enum:
    # VARCHAR + CHECK rather than a native PostgreSQL ENUM: it behaves the same on SQLite, and a
    # new value is a plain constraint change instead of an ALTER TYPE.
    return Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
    )


# --- column formats ----------------------------------------------------------------------------

_HASH32 = re.compile(r"0x[0-9a-fA-F]{64}")


def hash32(value: str, *, field: str) -> str:
    """The stored form of a 32-byte id or hash, or ValidationError naming `field`."""
    if not isinstance(value, str) or not _HASH32.fullmatch(value):
        raise ValidationError(f"{field} must be 0x followed by 64 hex digits", field=field, value=value)
    return value.lower()


def checksum_address(value: str, *, field: str) -> str:
    """The stored (EIP-55) form of an address, or ValidationError naming `field`."""
    if not isinstance(value, str) or not is_address(value):
        raise ValidationError(f"{field} must be a 20-byte hex address", field=field, value=value)
    return to_checksum_address(value)


def utc_now() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no time zone type and returns naive values, which cannot be compared with aware
    ones; this stores UTC and hands back aware UTC datetimes everywhere.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite assigns row ids only to a column declared exactly INTEGER PRIMARY KEY; PostgreSQL gets a
# 64-bit key because event tables grow without bound.
_EVENT_ID = BigInteger().with_variant(Integer(), "sqlite")


class LogProvenance:
    """The position of the log a row was derived from."""

    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    transaction_hash: Mapped[str] = mapped_column(String(66))
    transaction_index: Mapped[int] = mapped_column(Integer)
    log_index: Mapped[int] = mapped_column(Integer)


# --- read model --------------------------------------------------------------------------------


class Participant(LogProvenance, Base):
    """A registered participant; provenance is that of its ParticipantRegistered log."""

    __tablename__ = "participants"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    kind: Mapped[ParticipantKind] = mapped_column(_code_list(ParticipantKind, "participant_kind"))
    status: Mapped[ParticipantStatus] = mapped_column(_code_list(ParticipantStatus, "participant_status"))
    identifier_hash: Mapped[str] = mapped_column(String(66))
    registered_at: Mapped[int] = mapped_column(BigInteger)

    # lazy="raise": events are loaded on purpose (queries.get_participant), never one query per
    # listed participant.
    events: Mapped[list[ParticipantEvent]] = relationship(
        primaryjoin=lambda: foreign(ParticipantEvent.address) == Participant.address,
        order_by=lambda: (ParticipantEvent.block_number, ParticipantEvent.log_index),
        viewonly=True,
        lazy="raise",
    )

    __table_args__ = (
        # Keyset pagination order; unique because a log registers one participant.
        Index("ix_participants_block_number_log_index", "block_number", "log_index", unique=True),
    )


class ParticipantEvent(LogProvenance, Base):
    __tablename__ = "participant_events"

    id: Mapped[int] = mapped_column(_EVENT_ID, primary_key=True)
    event: Mapped[ParticipantEventKind] = mapped_column(_code_list(ParticipantEventKind, "participant_event_kind"))
    address: Mapped[str] = mapped_column(String(42))
    kind: Mapped[ParticipantKind | None] = mapped_column(_code_list(ParticipantKind, "participant_kind"))
    identifier_hash: Mapped[str | None] = mapped_column(String(66))

    __table_args__ = (
        UniqueConstraint("block_hash", "log_index"),
        Index("ix_participant_events_address_block_number_log_index", "address", "block_number", "log_index"),
    )


class Trade(LogProvenance, Base):
    """A recorded trade with its current status; provenance is that of its TradeRecorded log."""

    __tablename__ = "trades"

    trade_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    seller: Mapped[str] = mapped_column(String(42))
    buyer: Mapped[str] = mapped_column(String(42))
    delivery_start: Mapped[int] = mapped_column(BigInteger)
    delivery_end: Mapped[int] = mapped_column(BigInteger)
    energy_per_interval_wh: Mapped[int] = mapped_column(BigInteger)
    price_minor_per_mwh: Mapped[int] = mapped_column(BigInteger)
    # uint256 on chain: SQLite integers are 64-bit and larger values silently become floats, so
    # the exact value is kept as a decimal string on every backend.
    nonce: Mapped[str] = mapped_column(String(78))
    # uint64 on chain and chosen freely by the signers (type(uint64).max is the usual "never
    # expires"), so it can exceed a signed 64-bit column: decimal string, like the nonce. The
    # other uint64 terms are bounded by the contract's checks (horizon, market limits).
    deadline: Mapped[str] = mapped_column(String(20))
    replaces: Mapped[str | None] = mapped_column(String(66))
    status: Mapped[TradeStatus] = mapped_column(_code_list(TradeStatus, "trade_status"))
    replaced_by: Mapped[str | None] = mapped_column(String(66))
    recorded_at: Mapped[int] = mapped_column(BigInteger)

    # See Participant.events for lazy="raise".
    events: Mapped[list[TradeEvent]] = relationship(
        primaryjoin=lambda: foreign(TradeEvent.trade_id) == Trade.trade_id,
        order_by=lambda: (TradeEvent.block_number, TradeEvent.log_index),
        viewonly=True,
        lazy="raise",
    )

    __table_args__ = (
        Index("ix_trades_seller_delivery_start", "seller", "delivery_start"),
        Index("ix_trades_buyer_delivery_start", "buyer", "delivery_start"),
        # A participant's trades in chain order (queries.list_trade_rows), one page at a time; with
        # the delivery window, which a window filter tests on the index entry (migration 0007).
        Index(
            "ix_trades_seller_block_number_log_index_delivery",
            "seller",
            "block_number",
            "log_index",
            "delivery_start",
            "delivery_end",
        ),
        Index(
            "ix_trades_buyer_block_number_log_index_delivery",
            "buyer",
            "block_number",
            "log_index",
            "delivery_start",
            "delivery_end",
        ),
        Index("ix_trades_status", "status"),
        Index("ix_trades_delivery_start", "delivery_start"),
        # Keyset pagination order; unique because a log records one trade.
        Index("ix_trades_block_number_log_index", "block_number", "log_index", unique=True),
    )


class TradeEvent(LogProvenance, Base):
    """One TradeRecorded, TradeCancelled or TradeRejected log, filed under the trade it concerns.

    `related_trade_id`: for "amended", the amending trade; for "recorded", the trade it replaces.
    `reason_*` (only "rejected"): the ABI-encoded custom error, its selector and its name.
    """

    __tablename__ = "trade_events"

    id: Mapped[int] = mapped_column(_EVENT_ID, primary_key=True)
    trade_id: Mapped[str] = mapped_column(String(66))
    event: Mapped[TradeEventKind] = mapped_column(_code_list(TradeEventKind, "trade_event_kind"))
    related_trade_id: Mapped[str | None] = mapped_column(String(66))
    reason_selector: Mapped[str | None] = mapped_column(String(10))
    reason_name: Mapped[str | None] = mapped_column(String(100))
    reason_data: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("block_hash", "log_index"),
        Index("ix_trade_events_trade_id_block_number_log_index", "trade_id", "block_number", "log_index"),
    )


# --- relayer outbox ----------------------------------------------------------------------------


class Submission(Base):
    """A signed trade the API accepted, until the chain has recorded or rejected it."""

    __tablename__ = "submissions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    trade_id: Mapped[str] = mapped_column(String(66), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[SubmissionStatus] = mapped_column(_code_list(SubmissionStatus, "submission_status"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    transaction_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)

    __table_args__ = (
        # claim_accepted and list_pending: by status, oldest first.
        Index("ix_submissions_status_created_at", "status", "created_at"),
    )


class Cancellation(Base):
    """A cancellation both parties signed, which the API accepted, until the chain has cancelled
    the trade or refused the cancellation. One row per signed `CancelTrade` (its digest)."""

    __tablename__ = "cancellations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    digest: Mapped[str] = mapped_column(String(66), unique=True)
    trade_id: Mapped[str] = mapped_column(String(66), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[SubmissionStatus] = mapped_column(_code_list(SubmissionStatus, "cancellation_status"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    transaction_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)

    __table_args__ = (Index("ix_cancellations_status_created_at", "status", "created_at"),)


# --- indexer state -----------------------------------------------------------------------------


class IndexerCheckpoint(Base):
    """The last final block an indexer has fully indexed."""

    __tablename__ = "indexer_checkpoints"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))


class IndexedBlock(Base):
    """A recent block the indexer processed (a bounded window) for continuity and reorg checks."""

    __tablename__ = "indexed_blocks"

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(66))
    parent_hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)
