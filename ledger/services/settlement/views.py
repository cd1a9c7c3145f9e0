"""What the settlement service answers with: a run's summary, outcome and detail, an account's
statement, a line's proof, a dispute."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from ledger.chain.settlement import RunStatus as ChainRunStatus
from ledger.domain.settlement import LineKind, ReadingQuality
from ledger.signing.disputes import DisputeLine
from ledger.store.settlement_models import DisputeStatus, RunStatus, SettlementRun


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    period_start: int
    period_end: int
    version: int
    status: RunStatus
    rules_version: int
    root: str
    inputs_hash: str
    line_count: int
    total_receivable_minor: int
    total_payable_minor: int
    price_batch_id: str
    tolerance_bps: int
    penalty_bps: int
    balancing_account: str
    parameter_change_id: int | None
    superseded_by: str | None
    transaction_hash: str | None
    block_number: int | None
    block_hash: str | None
    committed_at: int | None
    dispute_window_ends: int | None
    created_at: datetime

    @classmethod
    def of(cls, row: SettlementRun) -> RunSummary:
        return cls(
            run_id=row.run_id,
            period_start=row.period_start,
            period_end=row.period_end,
            version=row.version,
            status=row.status,
            rules_version=row.rules_version,
            root=row.root,
            inputs_hash=row.inputs_hash,
            line_count=row.line_count,
            total_receivable_minor=int(row.total_receivable_minor),
            total_payable_minor=int(row.total_payable_minor),
            price_batch_id=row.price_batch_id,
            tolerance_bps=row.tolerance_bps,
            penalty_bps=row.penalty_bps,
            balancing_account=row.balancing_account,
            parameter_change_id=row.parameter_change_id,
            superseded_by=row.superseded_by,
            transaction_hash=row.transaction_hash,
            block_number=row.block_number,
            block_hash=row.block_hash,
            committed_at=row.committed_at,
            dispute_window_ends=row.dispute_window_ends,
            created_at=row.created_at,
        )


class RunAction(StrEnum):
    COMMITTED = "committed"  # this invocation computed and committed a new version
    RESUMED = "resumed"  # it finished a version an earlier invocation had left computed
    UNCHANGED = "unchanged"  # the inputs equal the current version's: nothing was done


@dataclass(frozen=True)
class RunOutcome:
    run: RunSummary
    action: RunAction
    gas_used: int | None = None  # of the run's commitRun transaction, when this invocation saw its receipt
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step

    @property
    def created(self) -> bool:
        return self.action is not RunAction.UNCHANGED


@dataclass(frozen=True)
class ChainState:
    """The contract's view of a run: `status` carries finality (open until the dispute window
    passed with no dispute open or accepted)."""

    status: ChainRunStatus
    dispute_window_ends: int
    open_disputes: int
    accepted_disputes: int
    superseded_by: str | None


@dataclass(frozen=True)
class RunDetail:
    run: RunSummary
    trade_count: int
    reading_batch_ids: list[str]
    price_batch_ids: list[str]
    chain: ChainState | None  # None when the node cannot be reached


@dataclass(frozen=True)
class LineDelta:
    """A line against the same (account, kind, ref) line of the previous version; a line the
    previous version did not have counts whole (previous values None)."""

    previous_energy_wh: int | None
    previous_amount_minor: int | None
    energy_wh: int
    amount_minor: int


@dataclass(frozen=True)
class LineView:
    account: str
    kind: LineKind
    ref: str
    energy_wh: int
    amount_minor: int
    leaf_index: int
    delta: LineDelta | None  # None for version 1


@dataclass(frozen=True)
class RemovedLine:
    """A line of the previous version that this version no longer has (its delta is its negation)."""

    kind: LineKind
    ref: str
    previous_energy_wh: int
    previous_amount_minor: int


@dataclass(frozen=True)
class PositionView:
    interval_start: int
    sold_wh: int
    bought_wh: int
    contracted_wh: int
    metered_wh: int
    imbalance_wh: int
    tolerance_wh: int
    excess_wh: int
    estimated: bool
    reading_quality: ReadingQuality | None
    reading_batch_id: str | None
    reading_version: int | None


@dataclass(frozen=True)
class Statement:
    run: RunSummary
    account: str
    lines: list[LineView]
    positions: list[PositionView]
    previous_run_id: str | None
    removed_lines: list[RemovedLine]


@dataclass(frozen=True)
class LineProof:
    """Everything needed to verify one line without GridLedger's code: with
    `StandardMerkleTree.verify(root, leafEncoding, values, proof)` of @openzeppelin/merkle-tree, or
    the contract's `verifyLine` at `contract_address` on chain `chain_id`."""

    run_id: str
    root: str
    leaf_encoding: list[str]
    values: list[Any]  # JSON-safe: integers as decimal strings, as StandardMerkleTree.dump() writes them
    leaf_hash: str
    leaf_index: int
    proof: list[str]
    contract_address: str
    chain_id: int
    transaction_hash: str | None
    block_number: int | None
    line: DisputeLine


@dataclass(frozen=True)
class DisputeView:
    dispute_id: str
    run_id: str
    account: str
    kind: LineKind
    ref: str
    energy_wh: int
    amount_minor: int
    leaf_hash: str
    reason: str
    reason_hash: str
    deadline: int
    status: DisputeStatus
    resolution: str | None
    resolution_hash: str | None
    opened_transaction_hash: str
    opened_block_number: int
    opening_unconfirmed: bool  # a reorg took the opening back: it is followed up (ledger.services.reconcile)
    resolved_transaction_hash: str | None
    resolved_block_number: int | None
    created: bool = False  # by this call (False: the same dispute was relayed before)
