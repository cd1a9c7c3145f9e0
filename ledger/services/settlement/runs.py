"""Executing a run: the checks that the index holds the period, the engine's computation, the
computed run written in one transaction, then its commit; or finishing a run an earlier
invocation left computed. See the package docstring for the steps and how each resumes."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger.domain.settlement import SETTLEMENT_RULES_VERSION, LineKind, SettlementResult, run_id, settle
from ledger.services.context import LedgerContext
from ledger.services.settlement.commits import RunCommitter
from ledger.services.settlement.errors import NothingToSettle, RunInProgress, RunMismatch, SettlementValueOutOfRange
from ledger.services.settlement.inputs import GatheredInputs, InputGatherer
from ledger.services.settlement.progress import Progress, ProgressEvent, Step, no_progress
from ledger.services.settlement.trees import TreeCache
from ledger.services.settlement.views import RunAction, RunOutcome, RunSummary
from ledger.store.settlement_models import (
    Position,
    RunPriceBatch,
    RunReadingBatch,
    RunStatus,
    RunTrade,
    SettlementRun,
    StatementLine,
)

WRITE_CHUNK_ROWS = 20_000
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class RunExecutor:
    """Runs one period at a time: checks, computes and writes the run, then has it committed."""

    def __init__(
        self, context: LedgerContext, inputs: InputGatherer, committer: RunCommitter, trees: TreeCache
    ) -> None:
        self._sessions = context.sessions
        self._read_sessions = context.read_sessions
        self._settler = context.settler
        self._inputs = inputs
        self._committer = committer
        self._trees = trees
        # One run at a time per process (the API's worker threads); across processes the run's
        # primary key and the contract's version check keep runs apart.
        self._run_lock = threading.Lock()

    def execute(self, period_start: int, period_end: int, *, progress: Progress | None = None) -> RunOutcome:
        """Settles `[period_start, period_end)`, or finishes its interrupted run, or returns its
        current version when the inputs have not changed. See the package docstring."""
        report = progress or no_progress
        run_id(period_start, period_end, 1)  # validates the period (ValidationError)
        with self._run_lock:
            started = time.perf_counter()
            resumed = self._finish_pending(period_start, period_end, report)
            report(ProgressEvent(Step.GATHERING))
            timings: dict[str, float] = {}
            mark = time.perf_counter()
            self._inputs.check_index_covers(period_end)
            self._inputs.await_final_batches(period_start, period_end)
            gathered = self._inputs.gather(period_start, period_end)
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
            self._trees.remember(result.run_id, tree)
            timings["writing"] = time.perf_counter() - mark

            mark = time.perf_counter()
            run, gas_used = self._committer.commit(result.run_id, report)
            timings["commit"] = time.perf_counter() - mark
            timings["total"] = time.perf_counter() - started
            report(ProgressEvent(Step.DONE, f"version {run.version} committed"))
            return RunOutcome(run, RunAction.COMMITTED, gas_used, timings)

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
        return self._committer.commit(pending, report)

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
            price_batch_id=gathered.newest_price_batch_id,
            tolerance_bps=gathered.parameters.tolerance_bps,
            penalty_bps=gathered.parameters.penalty_bps,
            balancing_account=gathered.balancing_account,
            parameter_change_id=gathered.parameter_change_id,
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
                _insert_rows(
                    session,
                    RunPriceBatch,
                    [{"run_id": identity, "batch_id": b, "root": r} for b, r in gathered.price_batches.items()],
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
