"""Chain facts of MeterData and Settlement, projected by the indexer from their events.

The split of truth: meter readings, reference prices and statement lines are OFF-CHAIN content
(`metering_models`, `settlement_models`) whose Merkle roots are on chain. What the chain itself
says about them lives here, one row per fact, derived from events alone, so a reindex rebuilds
these tables from the chain and nothing else:

- `chain_batches`: a reading or price batch commitment (ReadingBatchCommitted /
  PriceBatchCommitted) and its supersession (ReadingBatchSuperseded / PriceBatchSuperseded).
- `chain_runs`: a settlement run commitment (RunCommitted) and its supersession (RunSuperseded).
- `chain_disputes`: a dispute opened (DisputeOpened) and its resolution (DisputeResolved).

Each row carries the provenance of the event that created it (`LogProvenance`); the event that
later changes it (supersession, resolution) is recorded in the `superseded_*` / `resolved_*`
columns, so undoing a reorg needs no replay: a later event's columns are cleared when its block is
orphaned. The services write the same rows from their transactions' receipts (read-your-writes)
through the indexer's own projection (`ledger.indexer.indexer.write_receipt_logs`): one
definition of each row, whoever sees the log first.

Formats as in `ledger.store.models`. `ledger/store/migrations/versions/0006_chain_facts.py` must
describe exactly these tables; a test compares them.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, func, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from ledger.store.models import Base, LogProvenance, _code_list


class ChainBatchKind(StrEnum):
    READINGS = "readings"
    PRICES = "prices"


class ChainBatch(LogProvenance, Base):
    __tablename__ = "chain_batches"

    batch_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    batch_kind: Mapped[ChainBatchKind] = mapped_column(_code_list(ChainBatchKind, "chain_batch_kind"))
    period_start: Mapped[int] = mapped_column(BigInteger)
    period_end: Mapped[int] = mapped_column(BigInteger)
    root: Mapped[str] = mapped_column(String(66))
    item_count: Mapped[int] = mapped_column(Integer)  # readingCount or priceCount
    supersedes: Mapped[str | None] = mapped_column(String(66))
    committer: Mapped[str] = mapped_column(String(42))
    superseded_by: Mapped[str | None] = mapped_column(String(66))
    superseded_block_number: Mapped[int | None] = mapped_column(BigInteger)
    superseded_transaction_hash: Mapped[str | None] = mapped_column(String(66))
    superseded_log_index: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_chain_batches_block_number", "block_number"),
        Index("ix_chain_batches_superseded_block_number", "superseded_block_number"),
    )


class ChainRun(LogProvenance, Base):
    __tablename__ = "chain_runs"

    run_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    period_start: Mapped[int] = mapped_column(BigInteger)
    period_end: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    root: Mapped[str] = mapped_column(String(66))
    inputs_hash: Mapped[str] = mapped_column(String(66))
    line_count: Mapped[int] = mapped_column(Integer)
    # uint256 on chain: decimal strings, as settlement_runs keeps them.
    total_receivable_minor: Mapped[str] = mapped_column(String(78))
    total_payable_minor: Mapped[str] = mapped_column(String(78))
    dispute_window_ends: Mapped[int] = mapped_column(BigInteger)
    committed_at: Mapped[int] = mapped_column(BigInteger)  # the commit block's timestamp
    superseded_by: Mapped[str | None] = mapped_column(String(66))
    superseded_block_number: Mapped[int | None] = mapped_column(BigInteger)
    superseded_transaction_hash: Mapped[str | None] = mapped_column(String(66))
    superseded_log_index: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_chain_runs_block_number", "block_number"),
        Index("ix_chain_runs_superseded_block_number", "superseded_block_number"),
    )


class ChainDispute(LogProvenance, Base):
    __tablename__ = "chain_disputes"

    dispute_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(66))
    account: Mapped[str] = mapped_column(String(42))
    leaf_hash: Mapped[str] = mapped_column(String(66))
    reason_hash: Mapped[str] = mapped_column(String(66))
    accepted: Mapped[bool | None] = mapped_column(Boolean)  # None while open
    resolution_hash: Mapped[str | None] = mapped_column(String(66))
    resolved_block_number: Mapped[int | None] = mapped_column(BigInteger)
    resolved_block_hash: Mapped[str | None] = mapped_column(String(66))
    resolved_transaction_hash: Mapped[str | None] = mapped_column(String(66))
    resolved_log_index: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_chain_disputes_run_id", "run_id"),
        Index("ix_chain_disputes_block_number", "block_number"),
        Index("ix_chain_disputes_resolved_block_number", "resolved_block_number"),
    )


class ChainRunStatus(StrEnum):
    """A run as the chain sees it: SETTLEMENT.md "A run is final once its dispute window has
    passed with no open dispute"; superseded once a later version is committed."""

    OPEN = "open"
    FINAL = "final"
    SUPERSEDED = "superseded"


def chain_run_status(session: Session, run_id: str, now: int) -> ChainRunStatus | None:
    """The run's status as `Settlement.runStatus` computes it at block time `now`, from the indexed
    facts alone (None for a run the index does not hold). An accepted dispute keeps a run open
    until its corrected version supersedes it."""
    run = session.get(ChainRun, run_id)
    if run is None:
        return None
    if run.superseded_by is not None:
        return ChainRunStatus.SUPERSEDED
    undecided_or_accepted = session.scalar(
        select(func.count())
        .select_from(ChainDispute)
        .where(ChainDispute.run_id == run_id, or_(ChainDispute.accepted.is_(None), ChainDispute.accepted.is_(True)))
    )
    if now >= run.dispute_window_ends and not undecided_or_accepted:
        return ChainRunStatus.FINAL
    return ChainRunStatus.OPEN
