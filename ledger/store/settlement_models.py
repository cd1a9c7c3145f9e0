"""The settlement tables: runs, the inputs each run used, its statement lines and positions, and
the disputes of its lines.

Formats as in `ledger.store.models` (energy and money as integers in their unit, times as UTC Unix
seconds, addresses EIP-55, ids and hashes 0x lowercase hex). A run is written whole, with every
line and position, in the transaction that creates it with status `computed`; it becomes
`committed` only once its root is on chain (see `ledger.services.settlement`), so a `computed` row
is always complete and can be committed by whichever invocation comes next.

Column types of amounts and energies:
- `statement_lines`, `positions`: BigInteger (signed 64-bit). Every value is bounded by the
  market's limits times the period's length: at the default limits (10 GWh per interval,
  10,000,000 minor/MWh) a trade line of a one-year period is at most 3.5e14 Wh and 3.5e15 minor,
  four orders of magnitude under 9.2e18. The service refuses to write a run with any value
  outside int64 rather than let a database truncate or round it.
- `settlement_runs.total_*_minor`: decimal strings. They are sums over every account of a run
  and `uint256` on chain, and SQLite stores integers past int64 as floats, so, like the trade
  nonce, the exact value is kept as text on every backend.

`ledger/store/migrations/versions/0003_settlement.py` must describe exactly these tables; a test
compares them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from ledger.domain.settlement import LineKind, ReadingQuality
from ledger.store.models import Base, UtcDateTime, _code_list, utc_now

# --- code lists --------------------------------------------------------------------------------


class RunStatus(StrEnum):
    """Where a run is in its life in this index (the chain's own view is `ledger.chain.settlement.RunStatus`).

    computed:   lines and positions written; the root is not known to be on chain yet.
    committed:  the root is on chain (provenance filled in); the period's current version.
    superseded: a later version of the period was committed.
    """

    COMPUTED = "computed"
    COMMITTED = "committed"
    SUPERSEDED = "superseded"


class DisputeStatus(StrEnum):
    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class JobStatus(StrEnum):
    """A settlement job (`POST /settlement-runs`) as the worker takes it through.

    queued:    stored, waiting for the worker;
    running:   the worker executes its run (after a crash, the worker takes it again and finishes it);
    succeeded: the run is committed (or was already: `action`);
    failed:    the run was refused; `problem` says why.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


_LINE_KINDS = ", ".join(str(int(kind)) for kind in LineKind)


def _run_id_column() -> Mapped[str]:
    # Children go with their run: a run is only ever deleted whole (by hand, never by the service).
    return mapped_column(String(66), ForeignKey("settlement_runs.run_id", ondelete="CASCADE"), primary_key=True)


# --- runs --------------------------------------------------------------------------------------


class SettlementRun(Base):
    """One version of the settlement of a period (SETTLEMENT.md "Runs, versions and finality")."""

    __tablename__ = "settlement_runs"

    run_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    period_start: Mapped[int] = mapped_column(BigInteger)
    period_end: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[RunStatus] = mapped_column(_code_list(RunStatus, "settlement_run_status"))
    rules_version: Mapped[int] = mapped_column(Integer)
    root: Mapped[str] = mapped_column(String(66))
    inputs_hash: Mapped[str] = mapped_column(String(66))
    line_count: Mapped[int] = mapped_column(Integer)
    # Sums of the positive and of the negative TOTAL-line amounts (as a magnitude): decimal strings,
    # see the module docstring.
    total_receivable_minor: Mapped[str] = mapped_column(String(78))
    total_payable_minor: Mapped[str] = mapped_column(String(78))
    # The newest price batch the run used (all of them: `run_price_batches`).
    price_batch_id: Mapped[str] = mapped_column(String(66))
    tolerance_bps: Mapped[int] = mapped_column(Integer)
    penalty_bps: Mapped[int] = mapped_column(Integer)
    balancing_account: Mapped[str] = mapped_column(String(42))
    # The scheduled change whose parameters the run used (None: the settings' initial ones).
    parameter_change_id: Mapped[int | None] = mapped_column(Integer)
    superseded_by: Mapped[str | None] = mapped_column(String(66))
    # The commitRun transaction: its hash is stored before it is broadcast, so that an
    # invocation resuming after a crash can find it; block and times once it is mined.
    transaction_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    block_hash: Mapped[str | None] = mapped_column(String(66))
    committed_at: Mapped[int | None] = mapped_column(BigInteger)
    dispute_window_ends: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)

    __table_args__ = (
        # One row per version of a period: two invocations racing for the same version collide here.
        UniqueConstraint("period_start", "period_end", "version"),
        Index("ix_settlement_runs_status_period_start", "status", "period_start"),
    )


class RunTrade(Base):
    """A trade a run settled (the trade ids of its inputs hash)."""

    __tablename__ = "run_trades"

    run_id: Mapped[str] = _run_id_column()
    trade_id: Mapped[str] = mapped_column(String(66), primary_key=True)


class RunReadingBatch(Base):
    """A meter-reading batch a run read (one of the reading batch roots of its inputs hash)."""

    __tablename__ = "run_reading_batches"

    run_id: Mapped[str] = _run_id_column()
    batch_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    root: Mapped[str] = mapped_column(String(66))


class RunPriceBatch(Base):
    """A price batch holding at least one price a run used (its roots make the price root of the
    run's inputs hash: `ledger.domain.settlement.price_inputs_root`). Migration 0011."""

    __tablename__ = "run_price_batches"

    run_id: Mapped[str] = _run_id_column()
    batch_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    root: Mapped[str] = mapped_column(String(66))


class StatementLine(Base):
    """One statement line and one leaf of the run's Merkle tree.

    `(run_id, account, kind, ref)` is the key (SETTLEMENT.md: it identifies a line within a run).
    `leaf_index`: the line's position in the run's line order (account, kind, ref), which is the
    order of the values the tree was built from, i.e. the index `getProof(i)` takes."""

    __tablename__ = "statement_lines"

    run_id: Mapped[str] = _run_id_column()
    account: Mapped[str] = mapped_column(String(42), primary_key=True)
    kind: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    ref: Mapped[str] = mapped_column(String(66), primary_key=True)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    leaf_index: Mapped[int] = mapped_column(Integer)

    __table_args__ = (CheckConstraint(f"kind IN ({_LINE_KINDS})", name="line_kind"),)


class Position(Base):
    """SETTLEMENT.md "Positions" of one participant in one interval of a run, with the reading
    behind `metered_wh` (none where the interval was estimated: metered = contracted)."""

    __tablename__ = "positions"

    run_id: Mapped[str] = _run_id_column()
    participant: Mapped[str] = mapped_column(String(42), primary_key=True)
    interval_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    sold_wh: Mapped[int] = mapped_column(BigInteger)
    bought_wh: Mapped[int] = mapped_column(BigInteger)
    contracted_wh: Mapped[int] = mapped_column(BigInteger)
    metered_wh: Mapped[int] = mapped_column(BigInteger)
    imbalance_wh: Mapped[int] = mapped_column(BigInteger)
    tolerance_wh: Mapped[int] = mapped_column(BigInteger)
    excess_wh: Mapped[int] = mapped_column(BigInteger)
    estimated: Mapped[bool] = mapped_column(Boolean)
    reading_quality: Mapped[ReadingQuality | None] = mapped_column(_code_list(ReadingQuality, "reading_quality"))
    reading_batch_id: Mapped[str | None] = mapped_column(String(66))
    reading_version: Mapped[int | None] = mapped_column(Integer)


# --- disputes ----------------------------------------------------------------------------------


class Dispute(Base):
    """A line's dispute, signed by its account and relayed on chain; `dispute_id` is the chain's
    `keccak256(abi.encode(runId, leafHash))`. The reasons are kept here; the chain holds their hashes."""

    __tablename__ = "disputes"

    dispute_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(66), ForeignKey("settlement_runs.run_id", ondelete="CASCADE"))
    account: Mapped[str] = mapped_column(String(42))
    kind: Mapped[int] = mapped_column(SmallInteger)
    ref: Mapped[str] = mapped_column(String(66))
    leaf_hash: Mapped[str] = mapped_column(String(66))
    reason: Mapped[str] = mapped_column(Text)
    reason_hash: Mapped[str] = mapped_column(String(66))
    # The signed message's deadline: uint64 chosen by the signer, so a decimal string (as trades').
    deadline: Mapped[str] = mapped_column(String(20))
    signature: Mapped[str] = mapped_column(String(132))
    status: Mapped[DisputeStatus] = mapped_column(_code_list(DisputeStatus, "dispute_status"))
    resolution: Mapped[str | None] = mapped_column(Text)
    resolution_hash: Mapped[str | None] = mapped_column(String(66))
    opened_transaction_hash: Mapped[str] = mapped_column(String(66))
    opened_block_number: Mapped[int] = mapped_column(BigInteger)
    # The opening is not on chain now (a reorg took it): its transaction waits to be mined again,
    # or it is relayed again once its run is committed again. Kept here, not in a process's
    # memory, so that a restarted service still follows it up (migration 0011).
    opening_unconfirmed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    resolved_transaction_hash: Mapped[str | None] = mapped_column(String(66))
    resolved_block_number: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)

    __table_args__ = (
        UniqueConstraint("run_id", "account", "kind", "ref"),
        Index("ix_disputes_account_status", "account", "status"),
    )


# --- jobs ---------------------------------------------------------------------------------------


class SettlementJob(Base):
    """A requested settlement run, executed by the workers' settlement thread
    (`ledger.services.settlement.jobs`). Stored before the request is answered. Migration 0011."""

    __tablename__ = "settlement_jobs"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    period_start: Mapped[int] = mapped_column(BigInteger)
    period_end: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[JobStatus] = mapped_column(_code_list(JobStatus, "settlement_job_status"))
    requested_by: Mapped[str] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The run's last reported step (ledger.services.settlement.progress), with its counts.
    step: Mapped[str | None] = mapped_column(String(32))
    step_detail: Mapped[str | None] = mapped_column(Text)
    step_done: Mapped[int | None] = mapped_column(BigInteger)
    step_total: Mapped[int | None] = mapped_column(BigInteger)
    run_id: Mapped[str | None] = mapped_column(String(66))
    version: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str | None] = mapped_column(String(16))  # committed, resumed or unchanged
    problem: Mapped[str | None] = mapped_column(Text)  # JSON: {code, detail, status, context}
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        Index("ix_settlement_jobs_status_created_at", "status", "created_at"),
        Index("ix_settlement_jobs_period_start_period_end", "period_start", "period_end"),
    )


# --- parameters ---------------------------------------------------------------------------------


class ParameterChangeRow(Base):
    """Settlement parameters the operator scheduled (`POST /market/parameter-changes`), in effect
    for periods starting at or after `effective_from`. Only ever inserted: a change is undone by
    scheduling another. Migration 0011."""

    __tablename__ = "parameter_changes"

    change_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    effective_from: Mapped[int] = mapped_column(BigInteger, index=True)
    tolerance_bps: Mapped[int] = mapped_column(BigInteger)
    penalty_bps: Mapped[int] = mapped_column(BigInteger)
    scheduled_by: Mapped[str] = mapped_column(String(255))
    scheduled_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
