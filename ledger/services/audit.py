"""Auditor traceability: the history of a trade and of a participant, and verification of the
index against the chain.

History is read from the index alone (it is the index's account of what happened). Verification
trusts nothing the index says about where to look: it finds the chain's records by their ids
(`eth_getLogs` on the indexed `tradeId` / `runId` topic, the contracts' views by id), reads the
canonical block headers, and reports every field index-vs-chain. A report's verdict:

- `missing`: the subject is on one side only (the index has a trade the chain never recorded,
  or the chain has a run the index lost);
- `mismatch`: both sides have it and at least one check differs;
- `match`: every check is equal.

Nothing of the subject found on either side is a NotFoundError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from eth_utils import keccak
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ledger import errors
from ledger.chain.settlement import RunStatus as ChainRunStatus
from ledger.chain.trade_ledger import TRADE_RECORDED_TOPIC
from ledger.chain.transactions import Receipt
from ledger.domain.merkle import StandardMerkleTree, process_proof
from ledger.domain.settlement import LEAF_ENCODING, LineKind
from ledger.domain.units import ZERO_ID
from ledger.services.context import LedgerContext
from ledger.services.settlement import RUN_COMMITTED
from ledger.signing.disputes import DisputeLine
from ledger.store import queries
from ledger.store.models import Trade, TradeEvent, TradeEventKind, checksum_address, hash32
from ledger.store.settlement_models import Position, RunStatus, RunTrade, SettlementRun, StatementLine

TRADE_CANCELLED_TOPIC = "0x" + keccak(text="TradeCancelled(bytes32,bytes32)").hex()
RUN_COMMITTED_TOPIC = "0x" + keccak(text=RUN_COMMITTED).hex()
# A participant's history spans at most this much delivery time per request.
MAX_HISTORY_SECONDS = 31 * 86_400
# The amendment chain of a trade is followed this far at most (a guard against a corrupt index).
MAX_LINEAGE = 100

# The index's run status against the contract's runStatus: a committed run is open or final.
_CHAIN_STATUSES = {
    RunStatus.COMPUTED: {ChainRunStatus.UNKNOWN},
    RunStatus.COMMITTED: {ChainRunStatus.OPEN, ChainRunStatus.FINAL},
    RunStatus.SUPERSEDED: {ChainRunStatus.SUPERSEDED},
}


# --- history views -----------------------------------------------------------------------------


class HistoryKind(StrEnum):
    RECORDED = "recorded"  # related_trade_id: the trade it amends, if any
    CANCELLED = "cancelled"
    AMENDED = "amended"  # related_trade_id: the amending trade
    REJECTED = "rejected"
    SETTLED = "settled"  # included in a settlement run (provenance: the run's commit)


@dataclass(frozen=True)
class LineEntry:
    account: str
    kind: LineKind
    ref: str
    energy_wh: int
    amount_minor: int


@dataclass(frozen=True)
class HistoryEvent:
    """One step of a trade's life. Provenance is that of the log; for `settled`, of the run's
    commitRun transaction (log index unknown to the index: None; all None while the run is
    only computed)."""

    kind: HistoryKind
    trade_id: str
    block_number: int | None
    block_hash: str | None
    transaction_hash: str | None
    log_index: int | None
    related_trade_id: str | None = None
    reason_name: str | None = None
    run_id: str | None = None
    run_version: int | None = None
    run_status: RunStatus | None = None
    lines: list[LineEntry] = field(default_factory=list)  # settled: the trade's lines, seller's and buyer's


@dataclass(frozen=True)
class TradeHistory:
    trade_id: str
    lineage: list[str]  # the amendment chain the trade belongs to, oldest first
    events: list[HistoryEvent]  # of every trade of the lineage, in chain order


@dataclass(frozen=True)
class TradeEntry:
    trade_id: str
    side: str  # "seller" or "buyer"
    counterparty: str
    delivery_start: int
    delivery_end: int
    energy_per_interval_wh: int
    price_minor_per_mwh: int
    status: str
    replaces: str | None
    replaced_by: str | None
    block_number: int
    transaction_hash: str


@dataclass(frozen=True)
class PositionEntry:
    interval_start: int
    contracted_wh: int
    metered_wh: int
    imbalance_wh: int
    excess_wh: int
    estimated: bool


@dataclass(frozen=True)
class RunEntry:
    """The participant's statement in one version of one period."""

    run_id: str
    period_start: int
    period_end: int
    version: int
    status: RunStatus
    superseded_by: str | None
    transaction_hash: str | None
    block_number: int | None
    lines: list[LineEntry]
    positions: list[PositionEntry]


@dataclass(frozen=True)
class ParticipantHistory:
    address: str
    period_from: int
    period_to: int
    trades: list[TradeEntry]  # delivery overlapping the span, in chain order
    runs: list[RunEntry]  # periods overlapping the span, by period then version


# --- verification reports ----------------------------------------------------------------------


class Verdict(StrEnum):
    MATCH = "match"
    MISMATCH = "mismatch"
    MISSING = "missing"


@dataclass(frozen=True)
class Check:
    field: str
    index: Any
    chain: Any
    match: bool


@dataclass(frozen=True)
class VerificationReport:
    subject: dict[str, Any]
    verdict: Verdict
    checks: list[Check]
    chain_head: int  # the block the chain was read at (or after)

    @property
    def mismatches(self) -> list[str]:
        return [check.field for check in self.checks if not check.match]


class _Checks:
    def __init__(self) -> None:
        self.items: list[Check] = []

    def add(self, name: str, index: Any, chain: Any) -> None:
        self.items.append(Check(name, index, chain, index == chain))

    def report(self, subject: dict[str, Any], head: int, *, missing: bool = False) -> VerificationReport:
        if missing:
            verdict = Verdict.MISSING
        else:
            verdict = Verdict.MATCH if all(check.match for check in self.items) else Verdict.MISMATCH
        return VerificationReport(subject, verdict, self.items, head)


# --- the service -------------------------------------------------------------------------------


class AuditService:
    def __init__(self, context: LedgerContext) -> None:
        self._context = context
        self._read_sessions = context.read_sessions
        self._ledger = context.recorder
        self._settlement = context.settler
        self._ledger_start = context.deployment.contracts["TradeLedger"].block_number
        self._settlement_start = context.deployment.contracts["Settlement"].block_number

    # --- history ---------------------------------------------------------------------------

    def trade_history(self, trade_id: str) -> TradeHistory:
        """Every event of the trade and of the trades it amends or is amended by, in chain order,
        and each settlement run that included one of them, with its lines for seller and buyer."""
        trade_id = hash32(trade_id, field="trade_id")
        with self._read_sessions() as session:
            lineage = _lineage(session, trade_id)
            events = [
                _trade_event(row)
                for row in session.scalars(
                    select(TradeEvent)
                    .where(TradeEvent.trade_id.in_(lineage))
                    .order_by(TradeEvent.block_number, TradeEvent.log_index)
                )
            ]
            settled = [_settled(session, run, trade) for run, trade in _inclusions(session, lineage)]
        # Chain order; a run not on chain yet comes last.
        merged = sorted(events + settled, key=lambda e: (e.block_number is None, e.block_number or 0, _order(e)))
        return TradeHistory(trade_id, lineage, merged)

    def participant_history(self, address: str, period_from: int, period_to: int) -> ParticipantHistory:
        """The participant's trades delivering in `[period_from, period_to)` and its statements
        (lines and positions) in every run and version of a period overlapping it."""
        address = checksum_address(address, field="address")
        if period_to <= period_from:
            raise errors.ValidationError("to must be after from", field="to", value=period_to)
        if period_to - period_from > MAX_HISTORY_SECONDS:
            raise errors.ValidationError(
                f"a history spans at most {MAX_HISTORY_SECONDS // 86_400} days", field="to", value=period_to
            )
        with self._read_sessions() as session:
            trades = [
                _trade_entry(row, address)
                for row in session.scalars(
                    select(Trade)
                    .where(
                        or_(Trade.seller == address, Trade.buyer == address),
                        Trade.delivery_start < period_to,
                        Trade.delivery_end > period_from,
                    )
                    .order_by(Trade.block_number, Trade.log_index)
                )
            ]
            runs = [
                _run_entry(session, run, address)
                for run in session.scalars(
                    select(SettlementRun)
                    .where(
                        SettlementRun.period_start < period_to,
                        SettlementRun.period_end > period_from,
                        SettlementRun.run_id.in_(
                            select(StatementLine.run_id).where(StatementLine.account == address).distinct()
                        ),
                    )
                    .order_by(SettlementRun.period_start, SettlementRun.period_end, SettlementRun.version)
                )
            ]
            known = queries.participant_status(session, address) is not None
        if not known and not trades and not runs:
            raise errors.NotFoundError("no such participant, and no trade or statement of it", address=address)
        return ParticipantHistory(address, period_from, period_to, trades, runs)

    # --- verification ----------------------------------------------------------------------

    def verify_trade(self, trade_id: str) -> VerificationReport:
        """The index's trade against the chain's TradeRecorded and TradeCancelled logs (found by
        the trade id), the contract's `tradeStatus` and the canonical header of the log's block."""
        trade_id = hash32(trade_id, field="trade_id")
        head = self._head()
        with self._read_sessions() as session:
            row = queries.get_trade(session, trade_id)
            cancel_row = None
            if row is not None:
                session.expunge(row)
                cancel_row = next(
                    (e for e in row.events if e.event in (TradeEventKind.CANCELLED, TradeEventKind.AMENDED)), None
                )
        logs = self._logs(self._ledger.address, self._ledger_start, [TRADE_RECORDED_TOPIC, trade_id])
        chain_status = self._ledger.trade_status(trade_id)
        subject = {"type": "trade", "tradeId": trade_id}
        checks = _Checks()
        if row is None and not logs:
            raise errors.NotFoundError("no such trade, in the index or on chain", trade_id=trade_id)
        if row is None or not logs:
            checks.add("exists", row is not None, bool(logs))
            checks.add("status", None if row is None else row.status.value, chain_status.value)
            return checks.report(subject, head, missing=True)
        log = logs[0]
        recorded = self._ledger.events(_receipt_of(log), "TradeRecorded")[0]
        header = self._header(int(log["blockNumber"], 16))
        checks.add("seller", row.seller, recorded["seller"])
        checks.add("buyer", row.buyer, recorded["buyer"])
        checks.add("delivery_start", row.delivery_start, recorded["deliveryStart"])
        checks.add("delivery_end", row.delivery_end, recorded["deliveryEnd"])
        checks.add("energy_per_interval_wh", row.energy_per_interval_wh, recorded["energyPerIntervalWh"])
        checks.add("price_minor_per_mwh", row.price_minor_per_mwh, recorded["priceMinorPerMWh"])
        checks.add("nonce", row.nonce, str(recorded["nonce"]))
        checks.add("deadline", row.deadline, str(recorded["deadline"]))
        checks.add("replaces", row.replaces or ZERO_ID, recorded["replaces"])
        checks.add("status", row.status.value, chain_status.value)
        cancels = self._logs(self._ledger.address, self._ledger_start, [TRADE_CANCELLED_TOPIC, trade_id])
        chain_replaced_by = cancels[-1]["topics"][2] if cancels else None
        checks.add("replaced_by", row.replaced_by, None if chain_replaced_by in (None, ZERO_ID) else chain_replaced_by)
        checks.add("recorded_at", row.recorded_at, int(header["timestamp"], 16))
        checks.add("block_number", row.block_number, int(log["blockNumber"], 16))
        checks.add("block_hash", row.block_hash, header["hash"].lower())
        checks.add("transaction_hash", row.transaction_hash, log["transactionHash"].lower())
        checks.add("transaction_index", row.transaction_index, int(log["transactionIndex"], 16))
        checks.add("log_index", row.log_index, int(log["logIndex"], 16))
        if cancel_row is not None or cancels:
            cancel_log = cancels[-1] if cancels else None
            cancel_header = None if cancel_log is None else self._header(int(cancel_log["blockNumber"], 16))
            for name, index_value, chain_value in (
                (
                    "block_number",
                    None if cancel_row is None else cancel_row.block_number,
                    None if cancel_log is None else int(cancel_log["blockNumber"], 16),
                ),
                (
                    "block_hash",
                    None if cancel_row is None else cancel_row.block_hash,
                    None if cancel_header is None else cancel_header["hash"].lower(),
                ),
                (
                    "transaction_hash",
                    None if cancel_row is None else cancel_row.transaction_hash,
                    None if cancel_log is None else cancel_log["transactionHash"].lower(),
                ),
                (
                    "log_index",
                    None if cancel_row is None else cancel_row.log_index,
                    None if cancel_log is None else int(cancel_log["logIndex"], 16),
                ),
            ):
                checks.add(f"cancellation.{name}", index_value, chain_value)
        return checks.report(subject, head)

    def verify_run(self, run_id: str, *, lines: bool = True) -> VerificationReport:
        """The index's run against `Settlement.run()`, `runStatus` and its RunCommitted log (found
        by the run id). With `lines`, the stored lines are also rebuilt into a tree whose root must
        be the chain's (one pass over the run's lines)."""
        run_id = hash32(run_id, field="run_id")
        head = self._head()
        with self._read_sessions() as session:
            row = session.get(SettlementRun, run_id)
            if row is not None:
                session.expunge(row)
            stored = None
            if row is not None and lines:
                stored = _stored_lines(session, run_id)
        chain_run = self._settlement.run(run_id)
        subject = {"type": "settlement_run", "runId": run_id}
        checks = _Checks()
        if row is None and not chain_run.exists:
            raise errors.NotFoundError("no such settlement run, in the index or on chain", run_id=run_id)
        chain_status = self._settlement.run_status(run_id)
        if row is None or not chain_run.exists:
            checks.add("exists", row is not None, chain_run.exists)
            if row is not None:
                checks.add("status", row.status.value, chain_status.value)
            return checks.report(subject, head, missing=True)
        checks.add("root", row.root, chain_run.root)
        checks.add("inputs_hash", row.inputs_hash, chain_run.inputs_hash)
        checks.add("version", row.version, chain_run.version)
        checks.add("period_start", row.period_start, chain_run.period_start)
        checks.add("period_end", row.period_end, chain_run.period_end)
        checks.add("line_count", row.line_count, chain_run.line_count)
        expected = _CHAIN_STATUSES[row.status]
        checks.items.append(Check("status", row.status.value, chain_status.value, chain_status in expected))
        chain_superseded = None if chain_run.superseded_by == ZERO_ID else chain_run.superseded_by
        checks.add("superseded_by", row.superseded_by, chain_superseded)
        checks.add("dispute_window_ends", row.dispute_window_ends, chain_run.dispute_window_ends)
        logs = self._logs(self._settlement.address, self._settlement_start, [RUN_COMMITTED_TOPIC, run_id])
        committed = self._settlement.events(_receipt_of(logs[0]), "RunCommitted")[0] if logs else None
        log = logs[0] if logs else None
        header = None if log is None else self._header(int(log["blockNumber"], 16))
        checks.add("total_receivable_minor", row.total_receivable_minor, _text(committed, "totalReceivableMinor"))
        checks.add("total_payable_minor", row.total_payable_minor, _text(committed, "totalPayableMinor"))
        checks.add("transaction_hash", row.transaction_hash, None if log is None else log["transactionHash"].lower())
        checks.add("block_number", row.block_number, None if log is None else int(log["blockNumber"], 16))
        checks.add("block_hash", row.block_hash, None if header is None else header["hash"].lower())
        checks.add("committed_at", row.committed_at, None if header is None else int(header["timestamp"], 16))
        if stored is not None:
            values = [[run_id, *line] for line in stored]
            checks.add("stored_line_count", len(values), chain_run.line_count)
            rebuilt = StandardMerkleTree.of(values, LEAF_ENCODING).root if values else None
            checks.add("stored_lines_root", rebuilt, chain_run.root)
        return checks.report(subject, head)

    def verify_line(self, run_id: str, account: str, kind: int, ref: str) -> VerificationReport:
        """Recomputes the leaf of the indexed line and its proof from the run's stored lines, and
        asks the contract (`verifyLine`, an eth_call) whether it proves against the ON-CHAIN root."""
        run_id = hash32(run_id, field="run_id")
        account = checksum_address(account, field="account")
        ref = hash32(ref, field="ref")
        if kind not in set(LineKind):
            raise errors.ValidationError("unknown line kind", field="kind", kind=kind, known=[int(k) for k in LineKind])
        head = self._head()
        with self._read_sessions() as session:
            run = session.get(SettlementRun, run_id)
            if run is None:
                raise errors.NotFoundError("no such settlement run in the index", run_id=run_id)
            row = session.get(StatementLine, (run_id, account, kind, ref))
            if row is None:
                raise errors.NotFoundError(
                    "no such line in the run", run_id=run_id, account=account, kind=kind, ref=ref
                )
            index_root = run.root
            leaf_index = row.leaf_index
            line = DisputeLine(run_id, account, kind, ref, row.energy_wh, row.amount_minor)
            stored = _stored_lines(session, run_id)
        subject = {"type": "statement_line", "runId": run_id, "account": account, "kind": kind, "ref": ref}
        chain_run = self._settlement.run(run_id)
        checks = _Checks()
        if not chain_run.exists:
            checks.add("run_exists", True, False)
            return checks.report(subject, head, missing=True)
        tree = StandardMerkleTree.of([[run_id, *values] for values in stored], LEAF_ENCODING)
        proof = tree.get_proof(leaf_index)
        leaf_hash = "0x" + line.leaf_hash().hex()
        checks.add("root", index_root, chain_run.root)
        checks.add("proof_root", process_proof(leaf_hash, proof), chain_run.root)
        # The index's side is the leaf it holds; the chain's, whether verifyLine accepts it.
        verified = self._settlement.verify_line(line, proof)
        checks.items.append(Check("verify_line", leaf_hash, verified, verified))
        return checks.report(subject, head)

    # --- chain reads -----------------------------------------------------------------------

    def _head(self) -> int:
        return int(self._context.rpc.call("eth_blockNumber"), 16)

    def _header(self, number: int) -> dict[str, Any]:
        header = self._context.rpc.call("eth_getBlockByNumber", hex(number), False)
        if header is None:
            raise errors.ChainError(f"the node does not have block {number}", block_number=number)
        return dict(header)

    def _logs(self, address: str, from_block: int, topics: list[str]) -> list[dict[str, Any]]:
        """The contract's logs with these topics, in chain order (one eth_getLogs from its deployment)."""
        logs = self._context.rpc.call(
            "eth_getLogs", {"address": address, "fromBlock": hex(from_block), "toBlock": "latest", "topics": topics}
        )
        return [dict(log) for log in logs if not log.get("removed")]


# --- helpers -----------------------------------------------------------------------------------


def _lineage(session: Session, trade_id: str) -> list[str]:
    """The amendment chain through `trade_id`, oldest first; NotFoundError if the index lacks it."""
    row = session.get(Trade, trade_id)
    if row is None:
        raise errors.NotFoundError("no such trade in the index", trade_id=trade_id)
    chain = [row.trade_id]
    before, after = row.replaces, row.replaced_by
    while before is not None and before != ZERO_ID and len(chain) < MAX_LINEAGE:
        previous = session.get(Trade, before)
        if previous is None or previous.trade_id in chain:
            break
        chain.insert(0, previous.trade_id)
        before = previous.replaces
    while after is not None and len(chain) < MAX_LINEAGE:
        following = session.get(Trade, after)
        if following is None or following.trade_id in chain:
            break
        chain.append(following.trade_id)
        after = following.replaced_by
    return chain


def _trade_event(row: TradeEvent) -> HistoryEvent:
    return HistoryEvent(
        kind=HistoryKind(row.event.value),
        trade_id=row.trade_id,
        block_number=row.block_number,
        block_hash=row.block_hash,
        transaction_hash=row.transaction_hash,
        log_index=row.log_index,
        related_trade_id=row.related_trade_id,
        reason_name=row.reason_name,
    )


def _inclusions(session: Session, trade_ids: Sequence[str]) -> list[tuple[SettlementRun, str]]:
    rows = session.execute(
        select(SettlementRun, RunTrade.trade_id)
        .join(RunTrade, RunTrade.run_id == SettlementRun.run_id)
        .where(RunTrade.trade_id.in_(trade_ids))
    )
    return [(run, trade) for run, trade in rows]


def _settled(session: Session, run: SettlementRun, trade_id: str) -> HistoryEvent:
    trade = session.get(Trade, trade_id)
    accounts = [] if trade is None else [trade.seller, trade.buyer]
    lines = session.scalars(
        select(StatementLine).where(
            StatementLine.run_id == run.run_id,
            StatementLine.kind == int(LineKind.TRADE),
            StatementLine.ref == trade_id,
            StatementLine.account.in_(accounts),
        )
    )
    by_account = {line.account: line for line in lines}
    return HistoryEvent(
        kind=HistoryKind.SETTLED,
        trade_id=trade_id,
        block_number=run.block_number,
        block_hash=run.block_hash,
        transaction_hash=run.transaction_hash if run.block_number is not None else None,
        log_index=None,
        run_id=run.run_id,
        run_version=run.version,
        run_status=run.status,
        lines=[_line_entry(by_account[a]) for a in accounts if a in by_account],
    )


def _order(event: HistoryEvent) -> tuple[int, int]:
    # Within a block: logs by index; a run's commit after the trades of its block.
    return (1, event.run_version or 0) if event.log_index is None else (0, event.log_index)


def _line_entry(line: StatementLine) -> LineEntry:
    return LineEntry(line.account, LineKind(line.kind), line.ref, line.energy_wh, line.amount_minor)


def _trade_entry(row: Trade, address: str) -> TradeEntry:
    selling = row.seller == address
    return TradeEntry(
        trade_id=row.trade_id,
        side="seller" if selling else "buyer",
        counterparty=row.buyer if selling else row.seller,
        delivery_start=row.delivery_start,
        delivery_end=row.delivery_end,
        energy_per_interval_wh=row.energy_per_interval_wh,
        price_minor_per_mwh=row.price_minor_per_mwh,
        status=row.status.value,
        replaces=row.replaces,
        replaced_by=row.replaced_by,
        block_number=row.block_number,
        transaction_hash=row.transaction_hash,
    )


def _run_entry(session: Session, run: SettlementRun, address: str) -> RunEntry:
    lines = session.scalars(
        select(StatementLine)
        .where(StatementLine.run_id == run.run_id, StatementLine.account == address)
        .order_by(StatementLine.leaf_index)
    )
    positions = session.scalars(
        select(Position)
        .where(Position.run_id == run.run_id, Position.participant == address)
        .order_by(Position.interval_start)
    )
    return RunEntry(
        run_id=run.run_id,
        period_start=run.period_start,
        period_end=run.period_end,
        version=run.version,
        status=run.status,
        superseded_by=run.superseded_by,
        transaction_hash=run.transaction_hash,
        block_number=run.block_number,
        lines=[_line_entry(line) for line in lines],
        positions=[
            PositionEntry(p.interval_start, p.contracted_wh, p.metered_wh, p.imbalance_wh, p.excess_wh, p.estimated)
            for p in positions
        ],
    )


def _stored_lines(session: Session, run_id: str) -> list[tuple[str, int, str, int, int]]:
    """The run's stored lines as leaf values without the run id, in leaf order."""
    return [
        (account, kind, ref, energy, amount)
        for account, kind, ref, energy, amount in session.execute(
            select(
                StatementLine.account,
                StatementLine.kind,
                StatementLine.ref,
                StatementLine.energy_wh,
                StatementLine.amount_minor,
            )
            .where(StatementLine.run_id == run_id)
            .order_by(StatementLine.leaf_index)
        )
    ]


def _receipt_of(log: dict[str, Any]) -> Receipt:
    """A receipt holding one log, for `ContractCalls.events` (gas unknown: 0)."""
    return Receipt(log["transactionHash"], int(log["blockNumber"], 16), log["blockHash"], 1, 0, [log])


def _text(event: dict[str, Any] | None, name: str) -> str | None:
    return None if event is None else str(event[name])
