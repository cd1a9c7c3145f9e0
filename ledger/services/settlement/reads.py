"""What is read back from stored runs: the list of runs, a run with its chain status, an account's
statement against the previous version, a line with its Merkle proof."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ledger import errors
from ledger.domain.settlement import LEAF_ENCODING, LineKind, run_id
from ledger.domain.units import ZERO_ID
from ledger.services.context import LedgerContext
from ledger.services.settlement.trees import TreeCache
from ledger.services.settlement.views import (
    ChainState,
    LineDelta,
    LineProof,
    LineView,
    PositionView,
    RemovedLine,
    RunDetail,
    RunSummary,
    Statement,
)
from ledger.signing.disputes import DisputeLine
from ledger.store.models import checksum_address, hash32
from ledger.store.settlement_models import (
    Position,
    RunPriceBatch,
    RunReadingBatch,
    RunStatus,
    RunTrade,
    SettlementRun,
    StatementLine,
)


class RunReader:
    """Stored runs, statements and proofs; the chain is asked only for a run's finality."""

    def __init__(self, context: LedgerContext, trees: TreeCache) -> None:
        self._context = context
        self._read_sessions = context.read_sessions
        self._settler = context.settler
        self._trees = trees

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
            row = run_row(session, identity)
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
            price_batch_ids = list(
                session.scalars(
                    select(RunPriceBatch.batch_id)
                    .where(RunPriceBatch.run_id == row.run_id)
                    .order_by(RunPriceBatch.batch_id)
                )
            )
            run = RunSummary.of(row)
        return RunDetail(run, int(trade_count or 0), batch_ids, price_batch_ids, self.chain_state(run.run_id))

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
            row = run_row(session, identity)
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
        run, line, leaf_index = self.line(identity, account, kind, ref)
        tree = self._trees.tree(run)
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

    def line(self, identity: str, account: str, kind: int, ref: str) -> tuple[RunSummary, DisputeLine, int]:
        """The run, its stored line (account, kind, ref) as the chain hashes it, and its leaf index."""
        account = checksum_address(account, field="account")
        ref = hash32(ref, field="ref")
        if kind not in set(LineKind):
            raise errors.ValidationError("unknown line kind", field="kind", kind=kind, known=[int(k) for k in LineKind])
        with self._read_sessions() as session:
            run = RunSummary.of(run_row(session, identity))
            row = session.get(StatementLine, (run.run_id, account, kind, ref))
            if row is None:
                raise errors.NotFoundError(
                    "no such line in the run", run_id=run.run_id, account=account, kind=kind, ref=ref
                )
            line = DisputeLine(run.run_id, account, kind, ref, row.energy_wh, row.amount_minor)
            return run, line, row.leaf_index


def run_row(session: Session, identity: str) -> SettlementRun:
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
