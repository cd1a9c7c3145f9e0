"""Tables of meter readings and reference prices, kept in batches committed on chain (MeterData).

A batch is stored with all its rows as "prepared" in one transaction, committed on chain, then
marked "committed" with the transaction that did it; only committed batches are inputs of a
settlement run. Formats as in `ledger/store/models.py`: Wh and money as integers, interval starts
as UTC Unix seconds, addresses EIP-55, ids and hashes 0x lowercase hex.

`version` numbers the stored values of one (participant, interval) for readings, or one interval
for prices: 1 for the first ever stored, +1 for each later batch that holds it again. The value of
a row in the tree of its batch is at `leaf_index` of the list given to `StandardMerkleTree.of`.

These models live on the same `Base` as `ledger/store/models.py` but in their own module, which
`ledger/store/migrations/env.py` imports so that the metadata holds them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, foreign, mapped_column, relationship

from ledger.domain.settlement import ReadingQuality
from ledger.store.models import Base, UtcDateTime, _code_list, utc_now

# See models._EVENT_ID: SQLite assigns row ids only to INTEGER PRIMARY KEY; readings grow fast.
_ROW_ID = BigInteger().with_variant(Integer(), "sqlite")


class BatchStatus(StrEnum):
    PREPARED = "prepared"  # stored; its on-chain commit has not been seen yet
    COMMITTED = "committed"  # committed on chain by `transaction_hash` in `block_number`


class _BatchColumns:
    """What reading and price batches share."""

    batch_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    period_start: Mapped[int] = mapped_column(BigInteger)
    period_end: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[str] = mapped_column(String(66))
    supersedes: Mapped[str | None] = mapped_column(String(66))
    source: Mapped[str] = mapped_column(String(255))  # the imported file's name, or "api"
    status: Mapped[BatchStatus] = mapped_column(_code_list(BatchStatus, "batch_status"))
    transaction_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)


class ReadingBatchRow(_BatchColumns, Base):
    __tablename__ = "reading_batches"

    reading_count: Mapped[int] = mapped_column(Integer)

    @property
    def count(self) -> int:
        return self.reading_count


class MeterReadingRow(Base):
    __tablename__ = "meter_readings"

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(66), ForeignKey("reading_batches.batch_id"))
    participant: Mapped[str] = mapped_column(String(42))
    interval_start: Mapped[int] = mapped_column(BigInteger)
    injected_wh: Mapped[int] = mapped_column(BigInteger)
    withdrawn_wh: Mapped[int] = mapped_column(BigInteger)
    quality: Mapped[ReadingQuality] = mapped_column(_code_list(ReadingQuality, "reading_quality"))
    version: Mapped[int] = mapped_column(Integer)
    leaf_index: Mapped[int] = mapped_column(Integer)

    # lazy="raise": a list of readings must not load its batches one query each
    # (metering_queries.reading_history loads them on purpose).
    batch: Mapped[ReadingBatchRow] = relationship(
        primaryjoin=lambda: foreign(MeterReadingRow.batch_id) == ReadingBatchRow.batch_id,
        viewonly=True,
        lazy="raise",
    )

    __table_args__ = (
        UniqueConstraint("batch_id", "participant", "interval_start"),
        # The versions of one participant's interval (history, next version).
        Index("ix_meter_readings_participant_interval_start_version", "participant", "interval_start", "version"),
        # The readings of a period, all participants (latest_readings, the settlement's input).
        Index("ix_meter_readings_interval_start", "interval_start"),
    )


class PriceBatchRow(_BatchColumns, Base):
    __tablename__ = "price_batches"

    price_count: Mapped[int] = mapped_column(Integer)

    @property
    def count(self) -> int:
        return self.price_count


class ReferencePriceRow(Base):
    __tablename__ = "reference_prices"

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True)
    batch_id: Mapped[str] = mapped_column(String(66), ForeignKey("price_batches.batch_id"))
    interval_start: Mapped[int] = mapped_column(BigInteger)
    price_minor_per_mwh: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    leaf_index: Mapped[int] = mapped_column(Integer)

    batch: Mapped[PriceBatchRow] = relationship(
        primaryjoin=lambda: foreign(ReferencePriceRow.batch_id) == PriceBatchRow.batch_id,
        viewonly=True,
        lazy="raise",
    )

    __table_args__ = (
        UniqueConstraint("batch_id", "interval_start"),
        Index("ix_reference_prices_interval_start_version", "interval_start", "version"),
    )
