"""Settlement runs: from the index to a committed root, and everything read back from a run.

`SettlementService(context).execute(period_start, period_end)` is one run (SETTLEMENT.md "Runs,
versions and finality"):

1. gather the inputs from the index: trades recorded and still active (status `recorded`: a
   cancelled trade is out, an amended one is replaced by its amendment, itself a recorded trade)
   overlapping the period; the latest committed reading per participant and interval; the latest
   price batch covering the period; the parameters of the settings; the balancing account;
2. hash them (`inputs_hash`). The period's current version with the same hash is the answer: a
   no-op. Otherwise the next version is computed by the pure engine (`ledger.domain.settlement`);
3. write the run with status `computed`, with all its lines, positions and input references, in
   one database transaction;
4. commit its root on chain, one transaction whatever the run's size;
5. mark it `committed` with the transaction's provenance, and the version before `superseded`.

Resumability: the run is marked done (`committed`) only after every output is written, and each
step can be redone by the next invocation:

- killed before (3) ends: nothing was written; the next invocation starts afresh;
- killed after (3): the next invocation finds the `computed` run and finishes *that* run (its
  lines are stored, so nothing is recomputed) before it looks at the inputs again;
- (4) stores the signed transaction's hash before broadcasting it. Resuming, the chain is asked
  first: if it has the run id already (killed after sending), the run is adopted once its root
  and inputs hash are checked equal to ours; if the node still knows the stored transaction
  (pending), its receipt is awaited; only otherwise is a new transaction signed. The contract
  refuses a second commit of a run id (`SettlementDuplicateRun`), so even a lost race cannot put
  a run on chain twice.

Balancing account: the operator's address (the `operator_key` setting), as SETTLEMENT.md says;
the contract's operator is who nets the imbalances. It must not be a registered participant, which
the engine checks (a party to a trade or a metered account is refused).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from eth_utils import keccak, to_checksum_address
from sqlalchemy import exists, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger import errors
from ledger.chain.contract import hex32
from ledger.chain.settlement import DisputeStatus as ChainDisputeStatus
from ledger.chain.settlement import RunStatus as ChainRunStatus
from ledger.chain.settlement import SettlementRun as ChainRun
from ledger.chain.transactions import Receipt, SignedTransaction
from ledger.domain.merkle import StandardMerkleTree
from ledger.domain.settlement import (
    LEAF_ENCODING,
    SETTLEMENT_RULES_VERSION,
    LineKind,
    MeterReading,
    MissingReferencePrice,
    ReadingQuality,
    RecordedTrade,
    SettlementInputs,
    SettlementParameters,
    SettlementResult,
    inputs_hash,
    run_id,
    settle,
)
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID
from ledger.indexer.indexer import final_block_number
from ledger.indexer.ports import BlockHeader
from ledger.services.chain_facts import ChainFacts
from ledger.services.context import LedgerContext
from ledger.signing.disputes import DisputeLine, dispute_digest, dispute_typed_data
from ledger.signing.trader import recover_signer
from ledger.store import metering_queries
from ledger.store.metering_models import BatchStatus, PriceBatchRow, ReadingBatchRow
from ledger.store.models import (
    IndexedBlock,
    IndexerCheckpoint,
    Trade,
    TradeEvent,
    TradeEventKind,
    checksum_address,
    hash32,
)
from ledger.store.settlement_models import (
    Dispute,
    DisputeStatus,
    Position,
    RunReadingBatch,
    RunStatus,
    RunTrade,
    SettlementRun,
    StatementLine,
)

# ISettlement's events, by signature (topic 0 is its keccak-256).
RUN_COMMITTED = "RunCommitted(bytes32,uint64,uint64,uint32,bytes32,bytes32,uint32,uint256,uint256,uint64)"
DISPUTE_OPENED = "DisputeOpened(bytes32,bytes32,address,bytes32,bytes32)"
DISPUTE_RESOLVED = "DisputeResolved(bytes32,bool,bytes32)"

WRITE_CHUNK_ROWS = 20_000
LOG_SEARCH_WINDOW = 5_000  # blocks per eth_getLogs when looking for a lost commit's log
# How long a run waits for the reading and price batches committed for its period to become final
# in the index (the indexer follows the head; a batch counts once its block is final).
FINAL_INPUTS_WAIT_SECONDS = 15.0
TREE_CACHE_RUNS = 4
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# --- errors ------------------------------------------------------------------------------------


class IndexBehind(errors.ConflictError):
    """The index has not reached the end of the period: trades of it may be missing."""

    code = "index_behind_period"


class NothingToSettle(errors.ValidationError):
    """No trade and no reading in the period: a run needs at least one line."""

    code = "nothing_to_settle"


class RunInProgress(errors.ConflictError):
    """Another invocation is writing this version of the period."""

    code = "run_in_progress"


class RunMismatch(errors.ConflictError):
    """The chain has this run id with another root or inputs hash than the index: the index and
    the chain disagree, and only a person can tell which is wrong."""

    code = "run_mismatch"


class SettlementValueOutOfRange(errors.LedgerError):
    """A line or position value does not fit the index's 64-bit columns (see settlement_models)."""

    code = "settlement_value_out_of_range"


# --- progress ----------------------------------------------------------------------------------


class Step(StrEnum):
    GATHERING = "gathering inputs"
    RESUMING = "resuming"
    COMPUTING = "computing"
    BUILDING_TREE = "building the tree"
    WRITING = "writing lines"
    COMMITTING = "committing"
    DONE = "done"


@dataclass(frozen=True)
class ProgressEvent:
    step: Step
    detail: str = ""
    done: int | None = None
    total: int | None = None


Progress = Callable[[ProgressEvent], None]


def _no_progress(_event: ProgressEvent) -> None:
    pass


# --- views -------------------------------------------------------------------------------------


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
    resolved_transaction_hash: str | None
    resolved_block_number: int | None
    created: bool = False  # by this call (False: the same dispute was relayed before)


# --- gathered inputs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GatheredInputs:
    period_start: int
    period_end: int
    trades: list[RecordedTrade]
    readings: list[MeterReading]
    # (participant, interval start) -> (batch id, version) of the reading used.
    reading_origin: dict[tuple[str, int], tuple[str, int]]
    reading_batches: dict[str, str]  # batch id -> root
    price_batch_id: str
    price_batch_root: str
    prices: dict[int, int]
    parameters: SettlementParameters
    balancing_account: str
    inputs_hash: str

    def engine_inputs(self, version: int) -> SettlementInputs:
        return SettlementInputs(
            period_start=self.period_start,
            period_end=self.period_end,
            version=version,
            balancing_account=self.balancing_account,
            trades=self.trades,
            readings=self.readings,
            reference_prices_minor_per_mwh=self.prices,
            parameters=self.parameters,
        )


@dataclass(frozen=True)
class _Provenance:
    transaction_hash: str
    block_number: int
    block_hash: str
    committed_at: int
    dispute_window_ends: int
    gas_used: int | None
    logs: list[dict[str, Any]]  # of the commit's receipt (or the RunCommitted log alone), for ChainFacts
    block: BlockHeader


# --- the service -------------------------------------------------------------------------------


class SettlementService:
    def __init__(self, context: LedgerContext) -> None:
        self._context = context
        self._sessions = context.sessions
        self._read_sessions = context.read_sessions
        self._settler = context.settler
        self._operator = context.settlement_operator
        self._chain_facts = ChainFacts(context.rpc, context.deployment)
        settings = context.settings
        self._parameters = SettlementParameters(settings.tolerance_bps, settings.penalty_bps)
        self._balancing_account = context.settlement_operator.sender.address
        trade_ledger = context.deployment.contracts["TradeLedger"].address
        # The trade indexer's checkpoint (the name `LedgerService` gives its indexer).
        self._index_name = f"{context.deployment.chain_id}:{trade_ledger}"
        # One run at a time per process (the API's worker threads); across processes the run's
        # primary key and the contract's version check keep runs apart.
        self._run_lock = threading.Lock()
        self._trees: OrderedDict[str, StandardMerkleTree] = OrderedDict()
        self._trees_lock = threading.Lock()

    @property
    def balancing_account(self) -> str:
        return self._balancing_account

    @property
    def parameters(self) -> SettlementParameters:
        return self._parameters

    # --- the run ---------------------------------------------------------------------------

    def execute(self, period_start: int, period_end: int, *, progress: Progress | None = None) -> RunOutcome:
        """Settles `[period_start, period_end)`, or finishes its interrupted run, or returns its
        current version when the inputs have not changed. See the module docstring."""
        report = progress or _no_progress
        run_id(period_start, period_end, 1)  # validates the period (ValidationError)
        with self._run_lock:
            started = time.perf_counter()
            resumed = self._finish_pending(period_start, period_end, report)
            report(ProgressEvent(Step.GATHERING))
            timings: dict[str, float] = {}
            mark = time.perf_counter()
            self._check_index_covers(period_end)
            self._await_final_batches(period_start, period_end)
            gathered = self.gather_inputs(period_start, period_end)
            timings["gathering"] = time.perf_counter() - mark
            current = self._current_run(period_start, period_end)
            if current is not None and current.inputs_hash == gathered.inputs_hash:
                timings["total"] = time.perf_counter() - started
                if resumed is not None:
                    report(ProgressEvent(Step.DONE, f"version {current.version} finished"))
                    return RunOutcome(current, RunAction.RESUMED, resumed[1], timings)
                report(ProgressEvent(Step.DONE, f"version {current.version} has these inputs already"))
                return RunOutcome(current, RunAction.UNCHANGED, None, timings)
            version = (current.version if current is not None else 0) + 1
            self._check_chain_version(period_start, period_end, version, gathered.inputs_hash)

            counts = f"{len(gathered.trades)} trades, {len(gathered.readings)} readings"
            report(ProgressEvent(Step.COMPUTING, f"version {version}: {counts}"))
            mark = time.perf_counter()
            result = settle(gathered.engine_inputs(version))
            if not result.lines:
                raise NothingToSettle(
                    "no trade and no meter reading in the period: there is nothing to settle",
                    period_start=period_start,
                    period_end=period_end,
                )
            _check_int64(result)
            timings["computing"] = time.perf_counter() - mark

            report(ProgressEvent(Step.BUILDING_TREE, f"{len(result.lines)} leaves"))
            mark = time.perf_counter()
            tree = result.merkle_tree()
            timings["tree"] = time.perf_counter() - mark

            mark = time.perf_counter()
            self._write_computed(gathered, result, tree.root, report)
            self._remember_tree(result.run_id, tree)
            timings["writing"] = time.perf_counter() - mark

            mark = time.perf_counter()
            run, gas_used = self._commit(result.run_id, report)
            timings["commit"] = time.perf_counter() - mark
            timings["total"] = time.perf_counter() - started
            report(ProgressEvent(Step.DONE, f"version {run.version} committed"))
            return RunOutcome(run, RunAction.COMMITTED, gas_used, timings)

    def gather_inputs(self, period_start: int, period_end: int) -> GatheredInputs:
        """The inputs of a run of the period as the FINAL part of the index has them now, and their
        hash. The indexer follows the head, so the index holds unconfirmed blocks too; a run only
        takes what is in the blocks up to the final checkpoint (trades recorded there and not
        cancelled there, batches committed there), so a reorg cannot take an input back."""
        with self._read_sessions() as session:
            _one_snapshot(session)
            final = final_block_number(session, self._index_name)
            final = -1 if final is None else final  # nothing is final before the first step
            trades = _active_trades(session, period_start, period_end, final)
            reading_rows = metering_queries.latest_readings(session, period_start, period_end, final_block=final)
            batches = {
                hash32(row.batch_id, field="batch_id"): hash32(row.root, field="root")
                for row in metering_queries.reading_batches_used(session, period_start, period_end, final_block=final)
            }
            price_batch = metering_queries.latest_price_batch(session, period_start, period_end, final_block=final)
            if price_batch is None:
                raise MissingReferencePrice(list(range(period_start, period_end, INTERVAL_SECONDS)))
            prices = dict(metering_queries.prices(session, price_batch.batch_id))
        readings, origin = _readings(reading_rows)
        price_batch_id = hash32(price_batch.batch_id, field="price_batch_id")
        price_batch_root = hash32(price_batch.root, field="price_batch_root")
        digest = inputs_hash(
            period_start=period_start,
            period_end=period_end,
            trade_ids=[trade.trade_id for trade in trades],
            reading_batch_roots=sorted(set(batches.values())),
            price_batch_root=price_batch_root,
            parameters=self._parameters,
            balancing_account=self._balancing_account,
        )
        return GatheredInputs(
            period_start=period_start,
            period_end=period_end,
            trades=trades,
            readings=readings,
            reading_origin=origin,
            reading_batches=batches,
            price_batch_id=price_batch_id,
            price_batch_root=price_batch_root,
            prices=prices,
            parameters=self._parameters,
            balancing_account=self._balancing_account,
            inputs_hash=digest,
        )

    # --- steps of the run ------------------------------------------------------------------

    def _finish_pending(
        self, period_start: int, period_end: int, report: Progress
    ) -> tuple[RunSummary, int | None] | None:
        """Commits the period's `computed` run if an earlier invocation left one: the run and the
        gas of the commit sent now (None when the chain had it already)."""
        with self._read_sessions() as session:
            pending = session.scalars(
                select(SettlementRun.run_id)
                .where(
                    SettlementRun.period_start == period_start,
                    SettlementRun.period_end == period_end,
                    SettlementRun.status == RunStatus.COMPUTED,
                )
                # A reorg can leave two versions computed (both commits dropped): the earlier first,
                # since the contract takes a period's versions only in order.
                .order_by(SettlementRun.version)
            ).first()
        if pending is None:
            return None
        report(ProgressEvent(Step.RESUMING, f"run {pending} was computed but not committed: finishing it"))
        return self._commit(pending, report)

    def _check_index_covers(self, period_end: int) -> None:
        """Trades are recorded and cancelled only before their gate closure, so once the index
        holds a block at or after the period's end, the period's trade set is complete in it."""
        with self._read_sessions() as session:
            checkpoint = session.get(IndexerCheckpoint, self._index_name)
            indexed_until = None
            if checkpoint is not None:
                indexed_until = session.scalar(
                    select(IndexedBlock.timestamp).where(IndexedBlock.number == checkpoint.block_number)
                )
        if indexed_until is None or indexed_until < period_end:
            raise IndexBehind(
                "the trade index has not reached the end of the period yet: settle once the period is "
                "over and the indexer has caught up",
                period_end=period_end,
                indexed_until=indexed_until,
            )

    def _await_final_batches(self, period_start: int, period_end: int) -> None:
        """Waits (FINAL_INPUTS_WAIT_SECONDS at most) until every batch of the period that its
        receipt puts in a block is final in the index, else refuses: a run takes only final
        inputs, and silently leaving out a reading just imported would settle the wrong values.
        A batch whose receipt block is final but which the indexed chain lacks was reorged out:
        it is not waited for (and `_live` leaves it out)."""
        deadline = time.monotonic() + FINAL_INPUTS_WAIT_SECONDS
        while True:
            with self._read_sessions() as session:
                final = final_block_number(session, self._index_name)
                final = -1 if final is None else final
                pending = {
                    row.batch_id: row.block_number
                    for model in (ReadingBatchRow, PriceBatchRow)
                    for row in session.execute(
                        select(model.batch_id, model.block_number).where(
                            model.status == BatchStatus.COMMITTED,
                            model.block_number > final,
                            model.period_start < period_end,
                            model.period_end > period_start,
                        )
                    )
                }
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise IndexBehind(
                    "batches of the period are committed in blocks that are not final yet: settle once "
                    "the indexer has them final",
                    final_block=final,
                    pending_batches=sorted(pending),
                    blocks=sorted(set(pending.values())),
                )
            time.sleep(0.2)

    def _current_run(self, period_start: int, period_end: int) -> RunSummary | None:
        with self._read_sessions() as session:
            row = session.scalars(
                select(SettlementRun).where(
                    SettlementRun.period_start == period_start,
                    SettlementRun.period_end == period_end,
                    SettlementRun.status == RunStatus.COMMITTED,
                )
            ).first()
            return None if row is None else RunSummary.of(row)

    def _check_chain_version(self, period_start: int, period_end: int, version: int, digest: str) -> None:
        """The chain may have the version about to be computed only if the index lost it: then
        with the same inputs (the commit adopts it once the root is equal too); never a later one.
        Checked before anything is written, so that a refusal leaves nothing behind."""
        latest = self._settler.latest_version(period_start, period_end)
        if latest < version:
            return
        if latest == version and self._settler.run(run_id(period_start, period_end, version)).inputs_hash == digest:
            return
        raise RunMismatch(
            "the chain has versions of this period the index does not: restore the index first",
            period_start=period_start,
            period_end=period_end,
            chain_version=latest,
            index_version=version - 1,
        )

    def _write_computed(self, gathered: GatheredInputs, result: SettlementResult, root: str, report: Progress) -> None:
        """The run, its input references, lines and positions: one transaction, all or nothing."""
        identity = result.run_id
        totals = [line.amount_minor for line in result.lines if line.kind is LineKind.TOTAL]
        line_rows = [
            {
                "run_id": identity,
                "account": account,
                "kind": int(kind),
                "ref": ref,
                "energy_wh": energy,
                "amount_minor": amount,
                "leaf_index": index,
            }
            for index, (account, kind, ref, energy, amount) in enumerate(result.lines)
        ]
        origin = gathered.reading_origin
        position_rows = []
        for p in result.positions:
            batch_id, reading_version = origin.get((p.participant, p.interval_start), (None, None))
            position_rows.append(
                {
                    "run_id": identity,
                    "participant": p.participant,
                    "interval_start": p.interval_start,
                    "sold_wh": p.sold_wh,
                    "bought_wh": p.bought_wh,
                    "contracted_wh": p.contracted_net_wh,
                    "metered_wh": p.metered_net_wh,
                    "imbalance_wh": p.imbalance_wh,
                    "tolerance_wh": p.tolerance_wh,
                    "excess_wh": p.excess_wh,
                    "estimated": p.estimated,
                    "reading_quality": None if p.reading_quality is None else p.reading_quality.value,
                    "reading_batch_id": None if p.estimated else batch_id,
                    "reading_version": None if p.estimated else reading_version,
                }
            )
        run = SettlementRun(
            run_id=identity,
            period_start=result.period_start,
            period_end=result.period_end,
            version=result.version,
            status=RunStatus.COMPUTED,
            rules_version=SETTLEMENT_RULES_VERSION,
            root=root,
            inputs_hash=gathered.inputs_hash,
            line_count=len(result.lines),
            total_receivable_minor=str(sum(a for a in totals if a > 0)),
            total_payable_minor=str(-sum(a for a in totals if a < 0)),
            price_batch_id=gathered.price_batch_id,
            tolerance_bps=gathered.parameters.tolerance_bps,
            penalty_bps=gathered.parameters.penalty_bps,
            balancing_account=gathered.balancing_account,
        )
        total = len(line_rows)
        try:
            with self._sessions.begin() as session:
                session.add(run)
                session.flush()  # the run first: a concurrent writer of this version fails here, early
                _insert_rows(session, RunTrade, [{"run_id": identity, "trade_id": t.trade_id} for t in gathered.trades])
                _insert_rows(
                    session,
                    RunReadingBatch,
                    [{"run_id": identity, "batch_id": b, "root": r} for b, r in gathered.reading_batches.items()],
                )
                for start in range(0, total, WRITE_CHUNK_ROWS):
                    _insert_rows(session, StatementLine, line_rows[start : start + WRITE_CHUNK_ROWS])
                    report(ProgressEvent(Step.WRITING, done=min(start + WRITE_CHUNK_ROWS, total), total=total))
                for start in range(0, len(position_rows), WRITE_CHUNK_ROWS):
                    _insert_rows(session, Position, position_rows[start : start + WRITE_CHUNK_ROWS])
        except IntegrityError as exc:
            raise RunInProgress(
                "another invocation is writing this version of the period", run_id=identity, version=result.version
            ) from exc

    def _commit(self, identity: str, report: Progress) -> tuple[RunSummary, int | None]:
        """Puts a `computed` run on chain (or finds it there) and marks it committed."""
        with self._read_sessions() as session:
            row = session.get(SettlementRun, identity)
            if row is None:
                raise errors.NotFoundError("no such settlement run", run_id=identity)
            run = RunSummary.of(row)
        if run.status is not RunStatus.COMPUTED:
            return run, None
        report(ProgressEvent(Step.COMMITTING, f"version {run.version}, root {run.root}"))
        provenance = self._on_chain(run) or self._send_commit(run)
        return self._mark_committed(identity, provenance), provenance.gas_used

    def _on_chain(self, run: RunSummary) -> _Provenance | None:
        """The commit of `run` if the chain has it, or will have it (its transaction pending)."""
        chain_run = self._settler.run(run.run_id)
        if chain_run.exists:
            return self._adopt(run, chain_run)
        if run.transaction_hash is not None and self._transaction_known(run.transaction_hash):
            return self._await_commit(run, run.transaction_hash)
        return None

    def _send_commit(self, run: RunSummary) -> _Provenance:
        settler, sender = self._settler, self._settler.sender
        data = settler.encode("commitRun", _commit_arguments(run))
        try:
            gas = sender.estimate_gas(settler.address, data, settler.errors.decode)
        except errors.DuplicateRun:  # committed between our look and now (another process)
            return self._adopt(run, settler.run(run.run_id))
        # Re-read the nonce: a transaction signed but never sent (a crash, another process using
        # the key) must not leave a gap that would hold this one back forever.
        sender.nonces.resync()
        tx = sender.sign(settler.address, data, gas)
        self._record_transaction(run.run_id, tx.hash)  # before broadcasting: see the module docstring
        refused = sender.broadcast([tx])
        if refused:
            raise errors.ChainError(f"node refused the commit transaction: {refused[tx.hash]}", tx=tx.hash)
        return self._await_commit(run, tx.hash)

    def _await_commit(self, run: RunSummary, tx_hash: str) -> _Provenance:
        settler, sender = self._settler, self._settler.sender
        receipt = sender.wait([tx_hash])[tx_hash]
        if receipt.status != 1:
            replay = SignedTransaction(
                tx_hash, "", 0, settler.address, settler.encode("commitRun", _commit_arguments(run))
            )
            reason = sender.revert_reason(replay, receipt, settler.errors.decode)
            if isinstance(reason, errors.DuplicateRun):
                return self._adopt(run, settler.run(run.run_id))
            raise reason
        provenance = self._provenance(run.run_id, receipt)
        if provenance is None:
            raise errors.ChainError("the commit transaction emitted no RunCommitted", tx=tx_hash, run_id=run.run_id)
        return provenance

    def _adopt(self, run: RunSummary, chain_run: ChainRun) -> _Provenance:
        """Takes the chain's commit of `run.run_id` as ours once it is proven to be the same run."""
        if (chain_run.root, chain_run.inputs_hash) != (run.root, run.inputs_hash):
            raise RunMismatch(
                "the chain has this run id with another root or inputs hash",
                run_id=run.run_id,
                chain_root=chain_run.root,
                index_root=run.root,
                chain_inputs_hash=chain_run.inputs_hash,
                index_inputs_hash=run.inputs_hash,
            )
        if run.transaction_hash is not None:
            raw = self._context.rpc.call("eth_getTransactionReceipt", run.transaction_hash)
            if raw is not None:
                provenance = self._provenance(run.run_id, Receipt.from_rpc(raw))
                if provenance is not None:
                    return provenance
        log = self._find_log(RUN_COMMITTED, run.run_id)
        if log is None:
            raise errors.ChainError("the chain has the run but no RunCommitted log of it", run_id=run.run_id)
        provenance = self._provenance(run.run_id, _receipt_of_log(log))
        assert provenance is not None  # the log is a RunCommitted of this run
        return provenance

    def _provenance(self, identity: str, receipt: Receipt) -> _Provenance | None:
        committed = [e for e in self._settler.events(receipt, "RunCommitted") if e["runId"] == identity]
        if not committed:
            return None
        block = self._chain_facts.block(receipt.block_hash)
        if block is None:
            # The commit's block was replaced: its transaction is re-mined or dropped. The run stays
            # computed, and the next invocation finds where the chain has it now.
            raise errors.ChainError("the commit's block is no longer on the chain", block_hash=receipt.block_hash)
        return _Provenance(
            transaction_hash=receipt.transaction_hash,
            block_number=receipt.block_number,
            block_hash=receipt.block_hash,
            committed_at=block.timestamp,
            dispute_window_ends=int(committed[0]["disputeWindowEnds"]),
            gas_used=receipt.gas_used or None,
            logs=receipt.logs,
            block=block,
        )

    def _record_transaction(self, identity: str, tx_hash: str) -> None:
        with self._sessions.begin() as session:
            row = session.get(SettlementRun, identity)
            assert row is not None
            row.transaction_hash = tx_hash

    def _mark_committed(self, identity: str, provenance: _Provenance) -> RunSummary:
        """The run done, and the period's earlier committed version superseded: one transaction."""
        with self._sessions.begin() as session:
            row = session.get(SettlementRun, identity)
            assert row is not None
            earlier = session.scalars(
                select(SettlementRun).where(
                    SettlementRun.period_start == row.period_start,
                    SettlementRun.period_end == row.period_end,
                    SettlementRun.version < row.version,
                    SettlementRun.status == RunStatus.COMMITTED,
                )
            )
            for previous in earlier:
                previous.status = RunStatus.SUPERSEDED
                previous.superseded_by = identity
            row.status = RunStatus.COMMITTED
            row.transaction_hash = provenance.transaction_hash
            row.block_number = provenance.block_number
            row.block_hash = provenance.block_hash
            row.committed_at = provenance.committed_at
            row.dispute_window_ends = provenance.dispute_window_ends
            self._chain_facts.write(session, provenance.logs, provenance.block)
            session.flush()
            return RunSummary.of(row)

    # --- after a reorg (ledger.services.reconcile) -------------------------------------------

    def locate_commit(self, identity: str) -> _Provenance | None:
        """Where the chain has the commit of the stored run `identity` now, or None when it has
        none: after a reorg, the block its transaction was mined again in, or another one's."""
        with self._read_sessions() as session:
            run = RunSummary.of(_run_row(session, identity))
        chain_run = self._settler.run(run.run_id)
        return self._adopt(run, chain_run) if chain_run.exists else None

    def dispute_log(self, dispute_id: str, *, resolved: bool) -> Receipt | None:
        """The chain's DisputeOpened (or DisputeResolved) log of the dispute, as a one-log receipt,
        or None when the chain has no such event (a reorg took it, or it never happened)."""
        status = self._operator.dispute(dispute_id).status
        decided = (ChainDisputeStatus.ACCEPTED, ChainDisputeStatus.REJECTED)
        if (status not in decided) if resolved else (status is ChainDisputeStatus.NONE):
            return None
        log = self._find_log(DISPUTE_RESOLVED if resolved else DISPUTE_OPENED, dispute_id)
        return None if log is None else _receipt_of_log(log)

    def relay_dispute_again(self, dispute_id: str) -> Receipt | None:
        """Relays a recorded dispute once more with its stored signature (a reorg dropped the
        transaction that opened it); the chain's log if it has the dispute already, since the
        contract opens a dispute id only once. None while the chain lacks the dispute's run (the
        reorg took its commit too): the run is committed again first, by the next `execute`."""
        with self._read_sessions() as session:
            row = session.get(Dispute, hash32(dispute_id, field="dispute_id"))
            if row is None:
                raise errors.NotFoundError("no such dispute", dispute_id=dispute_id)
            stored = row.run_id, row.account, row.kind, row.ref, row.reason_hash, int(row.deadline), row.signature
        identity, account, kind, ref, reason_hash, deadline, signature = stored
        if not self._settler.run(identity).exists:
            return None
        run, line, leaf_index = self._line(identity, account, kind, ref)
        proof = self._tree(run).get_proof(leaf_index)
        try:
            return self._operator.open_dispute(line, proof, reason_hash, deadline, bytes.fromhex(signature[2:]))
        except errors.DisputeExists:
            receipt = self.dispute_log(dispute_id, resolved=False)
            if receipt is None:
                raise
            return receipt

    # --- chain helpers ---------------------------------------------------------------------

    def _transaction_known(self, tx_hash: str) -> bool:
        return self._context.rpc.call("eth_getTransactionByHash", tx_hash) is not None

    def _find_log(self, event_signature: str, first_topic: str) -> dict[str, Any] | None:
        """The Settlement contract's log of this event with this first indexed argument, searched
        backwards from the head (what we look for is recent) in windows public nodes accept."""
        contract = self._context.deployment.contracts["Settlement"]
        topics = ["0x" + keccak(text=event_signature).hex(), first_topic]
        to_block = int(self._context.rpc.call("eth_blockNumber"), 16)
        while to_block >= contract.block_number:
            from_block = max(contract.block_number, to_block - LOG_SEARCH_WINDOW + 1)
            logs = self._context.rpc.call(
                "eth_getLogs",
                {"address": contract.address, "fromBlock": hex(from_block), "toBlock": hex(to_block), "topics": topics},
            )
            if logs:
                return dict(logs[-1])
            to_block = from_block - 1
        return None

    # --- reads -----------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        period_start: int | None = None,
        period_end: int | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
    ) -> list[RunSummary]:
        """Runs, newest period first and the latest version first within a period. With both
        bounds, runs of exactly that period; with one, periods starting at or after
        `period_start` / ending at or before `period_end`."""
        query = select(SettlementRun)
        if period_start is not None:
            query = query.where(SettlementRun.period_start >= period_start)
        if period_end is not None:
            query = query.where(SettlementRun.period_end <= period_end)
        if status is not None:
            query = query.where(SettlementRun.status == status)
        query = query.order_by(
            SettlementRun.period_start.desc(), SettlementRun.period_end.desc(), SettlementRun.version.desc()
        ).limit(limit)
        with self._read_sessions() as session:
            return [RunSummary.of(row) for row in session.scalars(query)]

    def get_run(self, identity: str) -> RunDetail:
        with self._read_sessions() as session:
            row = _run_row(session, identity)
            trade_count = session.scalar(
                select(func.count()).select_from(RunTrade).where(RunTrade.run_id == row.run_id)
            )
            batch_ids = list(
                session.scalars(
                    select(RunReadingBatch.batch_id)
                    .where(RunReadingBatch.run_id == row.run_id)
                    .order_by(RunReadingBatch.batch_id)
                )
            )
            run = RunSummary.of(row)
        return RunDetail(run, int(trade_count or 0), batch_ids, self.chain_state(run.run_id))

    def chain_state(self, identity: str) -> ChainState | None:
        """The contract's status of the run (finality), or None when the node is unreachable."""
        try:
            status = self._settler.run_status(identity)
            chain_run = self._settler.run(identity)
        except errors.ChainError:
            return None
        superseded_by = None if chain_run.superseded_by == ZERO_ID else chain_run.superseded_by
        return ChainState(
            status, chain_run.dispute_window_ends, chain_run.open_disputes, chain_run.accepted_disputes, superseded_by
        )

    def statement(self, identity: str, account: str) -> Statement:
        """The account's lines and positions in the run, and each line's delta against the
        previous version of the period (matched by (kind, ref)); lines the previous version had
        and this one has not are listed as removed."""
        account = checksum_address(account, field="account")
        with self._read_sessions() as session:
            row = _run_row(session, identity)
            run = RunSummary.of(row)
            lines = _account_lines(session, run.run_id, account)
            positions = [
                PositionView(
                    p.interval_start,
                    p.sold_wh,
                    p.bought_wh,
                    p.contracted_wh,
                    p.metered_wh,
                    p.imbalance_wh,
                    p.tolerance_wh,
                    p.excess_wh,
                    p.estimated,
                    p.reading_quality,
                    p.reading_batch_id,
                    p.reading_version,
                )
                for p in session.scalars(
                    select(Position)
                    .where(Position.run_id == run.run_id, Position.participant == account)
                    .order_by(Position.interval_start)
                )
            ]
            previous_id = None
            previous: dict[tuple[int, str], StatementLine] | None = None
            if run.version > 1:
                previous_id = run_id(run.period_start, run.period_end, run.version - 1)
                if session.get(SettlementRun, previous_id) is not None:
                    previous = {(line.kind, line.ref): line for line in _account_lines(session, previous_id, account)}
                else:
                    previous_id = None
        views = []
        for line in lines:
            delta = None
            if previous is not None:
                before = previous.pop((line.kind, line.ref), None)
                delta = LineDelta(
                    None if before is None else before.energy_wh,
                    None if before is None else before.amount_minor,
                    line.energy_wh - (0 if before is None else before.energy_wh),
                    line.amount_minor - (0 if before is None else before.amount_minor),
                )
            views.append(
                LineView(
                    account, LineKind(line.kind), line.ref, line.energy_wh, line.amount_minor, line.leaf_index, delta
                )
            )
        removed = [
            RemovedLine(LineKind(line.kind), line.ref, line.energy_wh, line.amount_minor)
            for line in (previous or {}).values()
        ]
        if not views and not positions and not removed:
            raise errors.NotFoundError("the account has no line in this run", run_id=run.run_id, account=account)
        return Statement(run, account, views, positions, previous_id, removed)

    def line_proof(self, identity: str, account: str, kind: int, ref: str) -> LineProof:
        run, line, leaf_index = self._line(identity, account, kind, ref)
        tree = self._tree(run)
        settlement = self._context.deployment.contracts["Settlement"]
        return LineProof(
            run_id=run.run_id,
            root=run.root,
            leaf_encoding=list(LEAF_ENCODING),
            # As StandardMerkleTree.dump() renders a value: integers as decimal strings.
            values=[run.run_id, line.account, str(line.kind), line.ref, str(line.energy_wh), str(line.amount_minor)],
            leaf_hash="0x" + line.leaf_hash().hex(),
            leaf_index=leaf_index,
            proof=tree.get_proof(leaf_index),
            contract_address=settlement.address,
            chain_id=self._context.deployment.chain_id,
            transaction_hash=run.transaction_hash,
            block_number=run.block_number,
            line=line,
        )

    def _line(self, identity: str, account: str, kind: int, ref: str) -> tuple[RunSummary, DisputeLine, int]:
        account = checksum_address(account, field="account")
        ref = hash32(ref, field="ref")
        if kind not in set(LineKind):
            raise errors.ValidationError("unknown line kind", field="kind", kind=kind, known=[int(k) for k in LineKind])
        with self._read_sessions() as session:
            run = RunSummary.of(_run_row(session, identity))
            row = session.get(StatementLine, (run.run_id, account, kind, ref))
            if row is None:
                raise errors.NotFoundError(
                    "no such line in the run", run_id=run.run_id, account=account, kind=kind, ref=ref
                )
            line = DisputeLine(run.run_id, account, kind, ref, row.energy_wh, row.amount_minor)
            return run, line, row.leaf_index

    def _tree(self, run: RunSummary) -> StandardMerkleTree:
        """The run's tree, rebuilt from its stored lines (and checked against its root) when it
        is not among the last few built."""
        with self._trees_lock:
            tree = self._trees.get(run.run_id)
            if tree is not None:
                self._trees.move_to_end(run.run_id)
                return tree
        with self._read_sessions() as session:
            values = [
                [run.run_id, account, kind, ref, energy, amount]
                for account, kind, ref, energy, amount in session.execute(
                    select(
                        StatementLine.account,
                        StatementLine.kind,
                        StatementLine.ref,
                        StatementLine.energy_wh,
                        StatementLine.amount_minor,
                    )
                    .where(StatementLine.run_id == run.run_id)
                    .order_by(StatementLine.leaf_index)
                )
            ]
        tree = StandardMerkleTree.of(values, LEAF_ENCODING)
        if tree.root != run.root:
            raise errors.LedgerError("the stored lines do not hash to the run's root", run_id=run.run_id)
        self._remember_tree(run.run_id, tree)
        return tree

    def _remember_tree(self, identity: str, tree: StandardMerkleTree) -> None:
        with self._trees_lock:
            self._trees[identity] = tree
            self._trees.move_to_end(identity)
            while len(self._trees) > TREE_CACHE_RUNS:
                self._trees.popitem(last=False)

    # --- disputes --------------------------------------------------------------------------

    def dispute_typed_data(
        self, identity: str, account: str, kind: int, ref: str, reason: str, deadline: int
    ) -> dict[str, Any]:
        """The EIP-712 document the line's account signs (`eth_signTypedData_v4`) to dispute it."""
        _, line, _ = self._line(identity, account, kind, ref)
        return dispute_typed_data(self._operator.domain, line, _text_hash(reason), deadline)

    def open_dispute(
        self, identity: str, account: str, kind: int, ref: str, reason: str, deadline: int, signature: bytes
    ) -> DisputeView:
        """Relays a dispute signed by the line's account (EIP-712 `Dispute`, with `reasonHash` =
        keccak-256 of the UTF-8 reason) and records it. The same dispute again returns the
        recorded one (`created` False)."""
        if not reason.strip():
            raise errors.ValidationError("a dispute needs a reason", field="reason")
        run, line, leaf_index = self._line(identity, account, kind, ref)
        reason_hash = _text_hash(reason)
        dispute_id = line.dispute_id()
        with self._read_sessions() as session:
            existing = session.get(Dispute, dispute_id)
            if existing is not None:
                if existing.reason_hash != reason_hash:
                    raise errors.DisputeExists(
                        "this line is disputed already", dispute_id=dispute_id, status=existing.status.value
                    )
                return self._dispute_view(session, existing)
        if run.status is RunStatus.COMPUTED:
            raise errors.UnknownRun("the run is not committed on chain yet", run_id=run.run_id)
        if (
            recover_signer(dispute_digest(self._operator.domain, line, reason_hash, deadline), signature)
            != line.account
        ):
            raise errors.InvalidDisputeSignature(
                "the dispute is not signed by the line's account", run_id=run.run_id, account=line.account
            )
        proof = self._tree(run).get_proof(leaf_index)
        try:
            receipt = self._operator.open_dispute(line, proof, reason_hash, deadline, signature)
        except errors.DisputeExists:
            # Relayed before by an invocation that died before recording it: take the chain's log.
            log = self._find_log(DISPUTE_OPENED, dispute_id)
            if log is None:
                raise
            receipt = _receipt_of_log(log)
        opened = receipt.transaction_hash, receipt.block_number
        block = self._chain_facts.block(receipt.block_hash)
        with self._sessions.begin() as session:
            self._chain_facts.write(session, receipt.logs, block)
            row = Dispute(
                dispute_id=dispute_id,
                run_id=run.run_id,
                account=line.account,
                kind=line.kind,
                ref=line.ref,
                leaf_hash="0x" + line.leaf_hash().hex(),
                reason=reason,
                reason_hash=reason_hash,
                deadline=str(deadline),
                signature="0x" + signature.hex(),
                status=DisputeStatus.OPEN,
                opened_transaction_hash=opened[0],
                opened_block_number=opened[1],
            )
            session.add(row)
            session.flush()
            view = self._dispute_view(session, row)
        return replace(view, created=True)

    def resolve_dispute(self, dispute_id: str, accepted: bool, resolution: str) -> DisputeView:
        """The operator's decision, on chain (`resolutionHash` = keccak-256 of the resolution
        text) and in the index. The same decision again returns the recorded one."""
        dispute_id = hash32(dispute_id, field="dispute_id")
        if not resolution.strip():
            raise errors.ValidationError("a resolution needs its reasons", field="resolution")
        decided = DisputeStatus.ACCEPTED if accepted else DisputeStatus.REJECTED
        resolution_hash = _text_hash(resolution)
        with self._read_sessions() as session:
            row = session.get(Dispute, dispute_id)
            if row is None:
                raise errors.NotFoundError("no such dispute", dispute_id=dispute_id)
            if row.status is not DisputeStatus.OPEN:
                if (row.status, row.resolution_hash) == (decided, resolution_hash):
                    return self._dispute_view(session, row)
                raise errors.DisputeNotOpen(
                    "the dispute is resolved already", dispute_id=dispute_id, status=row.status.value
                )
        try:
            receipt = self._operator.resolve_dispute(dispute_id, accepted, resolution_hash)
        except errors.DisputeNotOpen:
            # Resolved by an invocation that died before recording it: only adopt the same decision.
            log = self._find_log(DISPUTE_RESOLVED, dispute_id)
            if log is None or self._operator.dispute(dispute_id).status.value != decided.value:
                raise
            receipt = _receipt_of_log(log)
        resolved = receipt.transaction_hash, receipt.block_number
        block = self._chain_facts.block(receipt.block_hash)
        with self._sessions.begin() as session:
            self._chain_facts.write(session, receipt.logs, block)
            row = session.get(Dispute, dispute_id)
            assert row is not None
            row.status = decided
            row.resolution = resolution
            row.resolution_hash = resolution_hash
            row.resolved_transaction_hash, row.resolved_block_number = resolved
            session.flush()
            return self._dispute_view(session, row)

    def get_dispute(self, dispute_id: str) -> DisputeView:
        dispute_id = hash32(dispute_id, field="dispute_id")
        with self._read_sessions() as session:
            row = session.get(Dispute, dispute_id)
            if row is None:
                raise errors.NotFoundError("no such dispute", dispute_id=dispute_id)
            return self._dispute_view(session, row)

    @staticmethod
    def _dispute_view(session: Session, row: Dispute) -> DisputeView:
        line = session.get(StatementLine, (row.run_id, row.account, row.kind, row.ref))
        assert line is not None  # a dispute is only ever recorded for a stored line
        return DisputeView(
            dispute_id=row.dispute_id,
            run_id=row.run_id,
            account=row.account,
            kind=LineKind(row.kind),
            ref=row.ref,
            energy_wh=line.energy_wh,
            amount_minor=line.amount_minor,
            leaf_hash=row.leaf_hash,
            reason=row.reason,
            reason_hash=row.reason_hash,
            deadline=int(row.deadline),
            status=row.status,
            resolution=row.resolution,
            resolution_hash=row.resolution_hash,
            opened_transaction_hash=row.opened_transaction_hash,
            opened_block_number=row.opened_block_number,
            resolved_transaction_hash=row.resolved_transaction_hash,
            resolved_block_number=row.resolved_block_number,
        )


# --- helpers -----------------------------------------------------------------------------------


def _one_snapshot(session: Session) -> None:
    """All reads of the session see one state of the index: the readings and the batches they
    come from must not straddle an import committed in between. SQLite's read transaction is a
    snapshot already (WAL); PostgreSQL's default, READ COMMITTED, is not."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def _active_trades(session: Session, period_start: int, period_end: int, final: int) -> list[RecordedTrade]:
    """Trades recorded in a final block (up to `final`) and not cancelled or amended in one,
    overlapping the period. Status as of the final block: from the events, not `Trade.status`,
    which an unconfirmed cancellation may have changed already."""
    ended = exists().where(
        TradeEvent.trade_id == Trade.trade_id,
        TradeEvent.event.in_([TradeEventKind.CANCELLED, TradeEventKind.AMENDED]),
        TradeEvent.block_number <= final,
    )
    rows = session.execute(
        select(
            Trade.trade_id,
            Trade.seller,
            Trade.buyer,
            Trade.delivery_start,
            Trade.delivery_end,
            Trade.energy_per_interval_wh,
            Trade.price_minor_per_mwh,
        ).where(
            Trade.block_number <= final,
            ~ended,
            Trade.delivery_start < period_end,
            Trade.delivery_end > period_start,
        )
    )
    return [RecordedTrade(*row) for row in rows]


_QUALITY_BY_INDEX = list(ReadingQuality)  # MeterData's uint8 quality: 0 measured, 1 estimated, 2 substituted


def _quality(value: Any) -> ReadingQuality:
    """A reading's quality from the metering index, whether stored as its code or its index."""
    if isinstance(value, int):
        return _QUALITY_BY_INDEX[int(value)]
    return ReadingQuality(getattr(value, "value", value))


def _readings(rows: Iterable[Any]) -> tuple[list[MeterReading], dict[tuple[str, int], tuple[str, int]]]:
    readings: list[MeterReading] = []
    origin: dict[tuple[str, int], tuple[str, int]] = {}
    checksummed: dict[str, str] = {}
    for row in rows:
        participant = checksummed.get(row.participant)
        if participant is None:
            participant = checksummed[row.participant] = to_checksum_address(row.participant)
        readings.append(
            MeterReading(participant, row.interval_start, row.injected_wh, row.withdrawn_wh, _quality(row.quality))
        )
        origin[(participant, row.interval_start)] = (hash32(row.batch_id, field="batch_id"), int(row.version))
    return readings, origin


def _check_int64(result: SettlementResult) -> None:
    """Refuses a run whose values the index's BigInteger columns cannot hold exactly."""
    values = [v for line in result.lines for v in (line.energy_wh, line.amount_minor)]
    values += [v for p in result.positions for v in (p.sold_wh, p.bought_wh, p.metered_net_wh, p.imbalance_wh)]
    if values and (min(values) < _INT64_MIN or max(values) > _INT64_MAX):
        raise SettlementValueOutOfRange(
            "a line or position value exceeds 64 bits; the market limits allow more than the index holds",
            run_id=result.run_id,
        )


def _insert_rows(session: Session, model: type[Any], rows: Sequence[dict[str, Any]]) -> None:
    # Into the Table, not the mapped class: the ORM's bulk layer adds time and nothing we use.
    if rows:
        session.execute(insert(model.__table__), rows)


def _commit_arguments(run: RunSummary) -> list[Any]:
    return [
        run.period_start,
        run.period_end,
        run.version,
        hex32(run.root),
        hex32(run.inputs_hash),
        run.line_count,
        run.total_receivable_minor,
        run.total_payable_minor,
    ]


def _receipt_of_log(log: dict[str, Any]) -> Receipt:
    """A receipt holding one log, for `ContractCalls.events` (gas unknown: 0)."""
    return Receipt(log["transactionHash"], int(log["blockNumber"], 16), log["blockHash"], 1, 0, [log])


def _run_row(session: Session, identity: str) -> SettlementRun:
    identity = hash32(identity, field="run_id")
    row = session.get(SettlementRun, identity)
    if row is None:
        raise errors.NotFoundError("no such settlement run", run_id=identity)
    return row


def _account_lines(session: Session, identity: str, account: str) -> list[StatementLine]:
    return list(
        session.scalars(
            select(StatementLine)
            .where(StatementLine.run_id == identity, StatementLine.account == account)
            .order_by(StatementLine.leaf_index)
        )
    )


def _text_hash(text: str) -> str:
    """`keccak256(bytes(text))` of the UTF-8 text: what the chain keeps of reasons and resolutions."""
    return "0x" + keccak(text=text).hex()
