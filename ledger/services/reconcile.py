"""Makes the services' own records of their transactions true again after a reorg.

The indexer rolls its chain-derived tables back to the fork point and re-indexes; the services'
own records keep what a receipt once said: a reading or price batch `committed` by a transaction
in a block, a settlement run's commit, a dispute's opening and resolution, a relayed trade
`recorded` or `rejected`. After a reorg each record whose block is above the fork point is
checked against the node, by what the chain does now, not by what its block said:

- where the chain has the record's effect (the event of its id: its batch, run or dispute id, or
  the trade id), the record moves there: the same transaction mined again in another block, or
  another transaction of ours that did the same (a resend; the contracts take each id once);
- else, while the record's transaction waits in the mempool (its nonce not yet taken), the
  record is unconfirmed again until it is mined;
- else the effect is gone (the transaction dropped, replaced, or mined again and reverted) and
  the record returns to the state its service retries from.

Per record (repairs: MOVE / UNCONFIRM / RESET):

  reading_batches, price_batches   committed -> committed at the new block
                                   committed -> prepared with its transaction hash (the next import
                                                of the batch waits for that transaction)
                                   committed -> prepared (the next import commits it again)
  settlement_runs                  committed|superseded -> the same at the new block, with the new
                                                block's time and dispute window
                                   committed|superseded -> computed (the next `settle` of the period
                                                finishes it: adopts the chain's commit, awaits the
                                                pending transaction or sends a new one); the version
                                                it had superseded is committed again
  disputes (opening)               opened at the new block; pending: left as is until mined;
                                   gone: relayed again with the account's stored signature
  disputes (resolution)            resolved at the new block; pending: resolved, block unknown;
                                   gone: open again (the operator's resolve decides it again)
  submissions                      recorded|rejected at the new block, with the new outcome (a
                                   re-execution in another order may turn one into the other)
                                   -> pending (its transaction hash kept)
                                   -> accepted (the relayer sends it again)

Nothing is committed or settled twice: every contract refuses an id it holds (DuplicateBatch,
SettlementDuplicateRun, DisputeExists, DuplicateTrade), and each service adopts the chain's
commit of an id before it sends one. Settlement reads only final chain rows (`final_block_number`
with `chain_batches`, trades and their events), so a run never took an input a reorg could undo.

Each repair is one database transaction that first checks that the record still says what the
decision was made on (another process may have moved it meanwhile); a skipped one is seen again
by the next pass. Records left unconfirmed are followed up every few seconds until their
transaction is mined or gone. `decide` is the pure rule; the rest reads the node and writes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from eth_utils import keccak
from sqlalchemy import ColumnElement, false, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ledger import errors
from ledger.chain.transactions import Receipt
from ledger.domain.trade import TradeStatus
from ledger.indexer.ports import BlockHeader
from ledger.services.chain_facts import ChainFacts
from ledger.services.context import LedgerContext
from ledger.services.metering import PRICES, READINGS, MeteringService
from ledger.services.settlement import DISPUTE_OPENED, DISPUTE_RESOLVED, SettlementService
from ledger.store import outbox
from ledger.store.metering_models import BatchStatus, PriceBatchRow, ReadingBatchRow
from ledger.store.models import IndexedBlock, Submission, SubmissionStatus
from ledger.store.settlement_models import Dispute, DisputeStatus, RunStatus, SettlementRun

log = logging.getLogger(__name__)

FOLLOW_UP_SECONDS = 2.0


# --- the rule (pure) -----------------------------------------------------------------------


class Fate(StrEnum):
    """What became of a record's own transaction, as the node says after the reorg."""

    MINED = "mined"  # its receipt, status 1
    REVERTED = "reverted"  # mined again, but the re-execution reverted
    PENDING = "pending"  # in the mempool, its nonce not taken by another transaction
    GONE = "gone"  # unknown to the node, or its nonce taken by another transaction


@dataclass(frozen=True)
class Location:
    """Where a transaction had an effect: the block (its hash where the record keeps one) and,
    for a relayed trade, which outcome (recorded or rejected)."""

    transaction_hash: str
    block_number: int
    block_hash: str | None = None
    outcome: str | None = None

    def same_as(self, other: Location) -> bool:
        hashes = None in (self.block_hash, other.block_hash) or self.block_hash == other.block_hash
        return hashes and (self.transaction_hash, self.block_number, self.outcome) == (
            other.transaction_hash,
            other.block_number,
            other.outcome,
        )


class Repair(StrEnum):
    KEEP = "keep"  # the record is true
    MOVE = "move"  # to where the chain has its effect now
    UNCONFIRM = "unconfirm"  # its transaction waits to be mined again
    RESET = "reset"  # its effect is gone: back to where its service retries it


def decide(recorded: Location | None, effect: Location | None, fate: Fate) -> Repair:
    """The repair of a record that says `recorded` (None: submitted, not known to be mined),
    whose effect the chain has at `effect` (None: nowhere), its own transaction being `fate`."""
    if effect is not None:
        return Repair.KEEP if recorded is not None and recorded.same_as(effect) else Repair.MOVE
    if fate is Fate.PENDING:
        return Repair.KEEP if recorded is None else Repair.UNCONFIRM
    return Repair.RESET  # dropped, replaced, reverted, or mined without the effect


# --- records -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """A service's record of a transaction: `kind` (its table, or disputes' phase), `key` (its id)."""

    kind: str
    key: str
    transaction_hash: str
    recorded: Location | None


@dataclass(frozen=True)
class Found:
    """The chain's effect of a record: where, and the logs (with their block) that say it."""

    location: Location
    logs: list[dict[str, Any]]
    detail: Any = None  # what the kind needs to write it (a run's provenance, a rejection's reason)


@dataclass(frozen=True)
class Repaired:
    record: Record
    repair: Repair
    location: Location | None = None

    def __str__(self) -> str:
        where = "" if self.location is None else f" to block {self.location.block_number}"
        record = self.record
        return f"{record.kind} {record.key}: {self.repair}{where} (transaction {record.transaction_hash})"


@dataclass
class Report:
    repaired: list[Repaired] = field(default_factory=list)
    unconfirmed: int = 0  # records still waiting for their transaction
    failed: int = 0  # records whose repair raised (logged); the next pass tries again


class _Kind:
    """One kind of record: which are candidates, how its effect is found, how it is repaired."""

    name: str

    def candidates(self, session: Session, above: int | None) -> list[Record]:
        """Records with a block above `above`, and records left unconfirmed (all when None)."""
        raise NotImplementedError

    def read(self, session: Session, key: str) -> Record | None:
        raise NotImplementedError

    def effect(self, record: Record, receipt: Receipt | None) -> Found | None:
        raise NotImplementedError

    def apply(self, session: Session, record: Record, repair: Repair, found: Found | None) -> None:
        raise NotImplementedError


def _above(column: Any, above: int | None) -> ColumnElement[bool]:
    return false() if above is None else column > above


def _log_of(receipt: Receipt | None, address: str, topic: str, key: str) -> Found | None:
    """The receipt's log of event `topic` with first indexed argument `key`, if it succeeded."""
    if receipt is None or receipt.status != 1:
        return None
    for entry in receipt.logs:
        topics = [t.lower() for t in entry["topics"]]
        if entry["address"].lower() == address.lower() and topics[:2] == [topic, key]:
            return Found(Location(receipt.transaction_hash, receipt.block_number, receipt.block_hash), receipt.logs)
    return None


def _found_in_log(entry: Mapping[str, Any]) -> Found:
    return Found(
        Location(str(entry["transactionHash"]), int(entry["blockNumber"], 16), str(entry["blockHash"])), [dict(entry)]
    )


def _topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


class _Batches(_Kind):
    def __init__(self, model: type[ReadingBatchRow] | type[PriceBatchRow], metering: MeteringService) -> None:
        self.model = model
        self.name = model.__tablename__
        self._metering = metering
        self._kind = READINGS if model is ReadingBatchRow else PRICES
        self._address = metering.context.deployment.contracts["MeterData"].address

    def _record(self, row: Any) -> Record | None:
        if row is None or row.transaction_hash is None:
            return None
        committed = row.status is BatchStatus.COMMITTED
        recorded = Location(row.transaction_hash, row.block_number) if committed else None
        return Record(self.name, row.batch_id, row.transaction_hash, recorded)

    def candidates(self, session: Session, above: int | None) -> list[Record]:
        m = self.model
        rows = session.scalars(
            select(m).where(
                ((m.status == BatchStatus.COMMITTED) & _above(m.block_number, above))
                | ((m.status == BatchStatus.PREPARED) & m.transaction_hash.is_not(None))
            )
        )
        return [record for row in rows if (record := self._record(row)) is not None]

    def read(self, session: Session, key: str) -> Record | None:
        return self._record(session.get(self.model, key))

    def effect(self, record: Record, receipt: Receipt | None) -> Found | None:
        found = _log_of(receipt, self._address, self._kind.topic, record.key)
        if found is not None:
            return found
        entry = self._metering.locate_commit(self._kind.name, record.key)
        return None if entry is None else _found_in_log(entry)

    def apply(self, session: Session, record: Record, repair: Repair, found: Found | None) -> None:
        values: dict[str, Any]
        if repair is Repair.MOVE:
            assert found is not None
            where = found.location
            values = {"status": BatchStatus.COMMITTED, "transaction_hash": where.transaction_hash}
            values["block_number"] = where.block_number
        elif repair is Repair.UNCONFIRM:
            values = {"status": BatchStatus.PREPARED, "block_number": None}
        else:
            values = {"status": BatchStatus.PREPARED, "transaction_hash": None, "block_number": None}
        session.execute(update(self.model).where(self.model.batch_id == record.key).values(**values))


class _Runs(_Kind):
    name = "settlement_runs"

    def __init__(self, settlement: SettlementService) -> None:
        self._settlement = settlement

    @staticmethod
    def _record(row: SettlementRun | None) -> Record | None:
        if row is None or row.status is RunStatus.COMPUTED or row.transaction_hash is None:
            return None  # a computed run is its service's to finish (SettlementService._commit)
        assert row.block_number is not None
        location = Location(row.transaction_hash, row.block_number, row.block_hash)
        return Record("settlement_runs", row.run_id, row.transaction_hash, location)

    def candidates(self, session: Session, above: int | None) -> list[Record]:
        rows = session.scalars(
            select(SettlementRun)
            .where(SettlementRun.status != RunStatus.COMPUTED, _above(SettlementRun.block_number, above))
            # The latest version first: undoing its commit makes the version before current again.
            .order_by(SettlementRun.period_start, SettlementRun.version.desc())
        )
        return [record for row in rows if (record := self._record(row)) is not None]

    def read(self, session: Session, key: str) -> Record | None:
        return self._record(session.get(SettlementRun, key))

    def effect(self, record: Record, receipt: Receipt | None) -> Found | None:
        provenance = self._settlement.locate_commit(record.key)
        if provenance is None:
            return None
        where = Location(provenance.transaction_hash, provenance.block_number, provenance.block_hash)
        return Found(where, provenance.logs, provenance)

    def apply(self, session: Session, record: Record, repair: Repair, found: Found | None) -> None:
        if repair is Repair.MOVE:
            assert found is not None
            p = found.detail
            values = {
                "transaction_hash": p.transaction_hash,
                "block_number": p.block_number,
                "block_hash": p.block_hash,
                "committed_at": p.committed_at,
                "dispute_window_ends": p.dispute_window_ends,
            }
            session.execute(update(SettlementRun).where(SettlementRun.run_id == record.key).values(**values))
            return
        kept = record.transaction_hash if repair is Repair.UNCONFIRM else None
        session.execute(
            update(SettlementRun)
            .where(SettlementRun.run_id == record.key)
            .values(
                status=RunStatus.COMPUTED,
                transaction_hash=kept,
                block_number=None,
                block_hash=None,
                committed_at=None,
                dispute_window_ends=None,
            )
        )
        session.execute(
            update(SettlementRun)
            .where(SettlementRun.superseded_by == record.key, SettlementRun.status == RunStatus.SUPERSEDED)
            .values(status=RunStatus.COMMITTED, superseded_by=None)
        )


class _DisputeOpenings(_Kind):
    name = "disputes"

    def __init__(self, settlement: SettlementService, address: str) -> None:
        self._settlement = settlement
        self._address = address
        self._topic = _topic(DISPUTE_OPENED)

    def candidates(self, session: Session, above: int | None) -> list[Record]:
        rows = session.scalars(select(Dispute).where(_above(Dispute.opened_block_number, above)))
        return [self._record(row) for row in rows]

    def _record(self, row: Dispute) -> Record:
        location = Location(row.opened_transaction_hash, row.opened_block_number)
        return Record(self.name, row.dispute_id, row.opened_transaction_hash, location)

    def read(self, session: Session, key: str) -> Record | None:
        row = session.get(Dispute, key)
        return None if row is None else self._record(row)

    def effect(self, record: Record, receipt: Receipt | None) -> Found | None:
        found = _log_of(receipt, self._address, self._topic, record.key)
        if found is not None:
            return found
        receipt = self._settlement.dispute_log(record.key, resolved=False)
        return None if receipt is None else _found_in_log(receipt.logs[0])

    def apply(self, session: Session, record: Record, repair: Repair, found: Found | None) -> None:
        # UNCONFIRM changes nothing: the opening has no unconfirmed state; it is followed up.
        if repair is Repair.MOVE:
            assert found is not None
            session.execute(
                update(Dispute)
                .where(Dispute.dispute_id == record.key)
                .values(
                    opened_transaction_hash=found.location.transaction_hash,
                    opened_block_number=found.location.block_number,
                )
            )


class _DisputeResolutions(_Kind):
    name = "dispute resolutions"

    def __init__(self, settlement: SettlementService, address: str) -> None:
        self._settlement = settlement
        self._address = address
        self._topic = _topic(DISPUTE_RESOLVED)

    def _record(self, row: Dispute | None) -> Record | None:
        if row is None or row.resolved_transaction_hash is None:
            return None
        recorded = None
        if row.resolved_block_number is not None:
            recorded = Location(row.resolved_transaction_hash, row.resolved_block_number)
        return Record(self.name, row.dispute_id, row.resolved_transaction_hash, recorded)

    def candidates(self, session: Session, above: int | None) -> list[Record]:
        rows = session.scalars(
            select(Dispute).where(
                _above(Dispute.resolved_block_number, above)
                | (Dispute.resolved_transaction_hash.is_not(None) & Dispute.resolved_block_number.is_(None))
            )
        )
        return [record for row in rows if (record := self._record(row)) is not None]

    def read(self, session: Session, key: str) -> Record | None:
        return self._record(session.get(Dispute, key))

    def effect(self, record: Record, receipt: Receipt | None) -> Found | None:
        found = _log_of(receipt, self._address, self._topic, record.key)
        if found is not None:
            return found
        receipt = self._settlement.dispute_log(record.key, resolved=True)
        return None if receipt is None else _found_in_log(receipt.logs[0])

    def apply(self, session: Session, record: Record, repair: Repair, found: Found | None) -> None:
        values: dict[str, Any]
        if repair is Repair.MOVE:
            assert found is not None
            values = {
                "resolved_transaction_hash": found.location.transaction_hash,
                "resolved_block_number": found.location.block_number,
            }
        elif repair is Repair.UNCONFIRM:
            values = {"resolved_block_number": None}
        else:
            values = {
                "status": DisputeStatus.OPEN,
                "resolution": None,
                "resolution_hash": None,
                "resolved_transaction_hash": None,
                "resolved_block_number": None,
            }
        session.execute(update(Dispute).where(Dispute.dispute_id == record.key).values(**values))


class _Submissions(_Kind):
    name = "submissions"

    def __init__(self, context: LedgerContext) -> None:
        self._ledger = context.recorder
        self._start_block = context.deployment.start_block
        # Pending submissions are the relayer's while it waits for their receipt: only those a
        # repair made pending are followed up here (after a restart, Relayer.recover does it).
        self.unconfirmed: set[str] = set()

    def _record(self, row: Submission | None) -> Record | None:
        if row is None or row.transaction_hash is None:
            return None
        if row.status is SubmissionStatus.PENDING:
            return Record(self.name, row.trade_id, row.transaction_hash, None)
        if row.block_number is None:
            return None
        location = Location(row.transaction_hash, row.block_number, outcome=row.status.value)
        return Record(self.name, row.trade_id, row.transaction_hash, location)

    def candidates(self, session: Session, above: int | None) -> list[Record]:
        statement = select(Submission).where(
            (
                Submission.status.in_([SubmissionStatus.RECORDED, SubmissionStatus.REJECTED])
                & _above(Submission.block_number, above)
            )
            | Submission.trade_id.in_(self.unconfirmed)
        )
        return [record for row in session.scalars(statement) if (record := self._record(row)) is not None]

    def read(self, session: Session, key: str) -> Record | None:
        return self._record(outbox.get_submission_by_trade(session, key))

    def effect(self, record: Record, receipt: Receipt | None) -> Found | None:
        if receipt is not None and receipt.status == 1:
            outcome = self._ledger.batch_outcome(receipt)
            where = (receipt.transaction_hash, receipt.block_number, receipt.block_hash)
            if record.key in outcome.recorded:
                return Found(Location(*where, outcome="recorded"), receipt.logs)
            reason = outcome.rejected.get(record.key)
            if reason is not None and not isinstance(reason, errors.DuplicateTrade):
                return Found(Location(*where, outcome="rejected"), receipt.logs, (reason.code, str(reason)))
        if self._ledger.trade_status(record.key) is TradeStatus.NONE:
            return None
        entry = self._ledger.recorded_log(record.key, self._start_block)
        if entry is None:
            return None
        found = _found_in_log(entry)
        return Found(replace(found.location, outcome="recorded"), found.logs)

    def apply(self, session: Session, record: Record, repair: Repair, found: Found | None) -> None:
        if repair is Repair.MOVE:
            assert found is not None
            where = found.location
            assert where.outcome is not None  # a trade's effect is its outcome
            to = SubmissionStatus(where.outcome)
            outbox.relocate(session, record.key, to, where.transaction_hash, where.block_number, found.detail)
            self.unconfirmed.discard(record.key)
        elif repair is Repair.UNCONFIRM:
            outbox.unconfirm(session, [record.key], record.transaction_hash)
            self.unconfirmed.add(record.key)
        else:
            outbox.reopen(session, [record.key])
            self.unconfirmed.discard(record.key)


# --- the reconciler ------------------------------------------------------------------------

_Fated = tuple[Fate, Receipt | None]  # a transaction's fate, with its receipt when mined


class Reconciler:
    """Checks and repairs the records after a rollback (`after_rollback`, the indexer's callback),
    over the recent blocks at start-up (`at_start`), or over every record (`reconcile(-1)`)."""

    def __init__(
        self,
        context: LedgerContext,
        metering: MeteringService,
        settlement: SettlementService,
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self._context = context
        self._settlement = settlement
        self._chain_facts = ChainFacts(context.rpc, context.deployment)
        settlement_address = context.deployment.contracts["Settlement"].address
        self._openings = _DisputeOpenings(settlement, settlement_address)
        self._kinds: list[_Kind] = [
            _Batches(ReadingBatchRow, metering),
            _Batches(PriceBatchRow, metering),
            _Runs(settlement),
            self._openings,
            _DisputeResolutions(settlement, settlement_address),
            _Submissions(context),
        ]
        self._pending_openings: set[str] = set()
        self._stop = stop
        self._lock = threading.Lock()
        self._follow_up: threading.Thread | None = None
        self._retry_lock = threading.Lock()
        self._retry_above: int | None = None  # the lowest fork of a pass that failed

    # --- entry points ----------------------------------------------------------------------

    def after_rollback(self, fork: int) -> None:
        """The indexer undid blocks above `fork`: repair the records of those blocks. Never raises
        (the indexer must go on); what fails is logged and tried again by the follow-up."""
        # A dropped transaction of ours leaves its nonce free again: every key asks the node anew.
        for sender in {id(c.sender): c.sender for c in self._contracts()}.values():
            sender.nonces.resync()
        self._guarded(fork)

    def at_start(self) -> None:
        """A service (re)starting: the records of the blocks a reorg could still have replaced
        (the indexer's window), in case a rollback happened without their repair."""
        with self._context.read_sessions() as session:
            lowest = session.scalar(select(func.min(IndexedBlock.number)))
        self._guarded(-1 if lowest is None else lowest - 1)

    def reconcile(self, above: int | None) -> Report:
        """One pass over the records with a block above `above` (None: only those left unconfirmed)."""
        with self._lock:
            report = Report()
            fates: dict[str, _Fated] = {}
            for kind in self._kinds:
                with self._context.read_sessions() as session:
                    records = kind.candidates(session, above)
                    if kind is self._openings:
                        records += [r for key in self._pending_openings if (r := kind.read(session, key))]
                for record in _unique(records):
                    try:
                        self._check(kind, record, fates, report)
                    except (errors.LedgerError, OperationalError) as exc:
                        if isinstance(exc, errors.LedgerError) and not exc.retryable:
                            # e.g. the chain has the run with another root: a person must look
                            # (scripts/verify_index.py lists it); retrying would not change it.
                            log.error("cannot repair %s %s after a reorg: %s", kind.name, record.key, exc)
                            continue
                        report.failed += 1
                        log.warning("could not repair %s %s after a reorg, retrying: %s", kind.name, record.key, exc)
            for repaired in report.repaired:
                log.warning("after a reorg: %s", repaired)
            return report

    # --- one record ------------------------------------------------------------------------

    def _check(self, kind: _Kind, record: Record, fates: dict[str, _Fated], report: Report) -> None:
        if record.transaction_hash not in fates:
            fates[record.transaction_hash] = self._fate(record.transaction_hash)
        fate, receipt = fates[record.transaction_hash]
        found = kind.effect(record, receipt)
        repair = decide(record.recorded, None if found is None else found.location, fate)
        if kind is self._openings:
            self._pending_openings.discard(record.key)
            if repair is Repair.UNCONFIRM:
                self._pending_openings.add(record.key)
            elif repair is Repair.RESET:
                # The account signed it: the operator relays it again, as the service did first.
                again = self._settlement.relay_dispute_again(record.key)
                where = Location(again.transaction_hash, again.block_number, again.block_hash)
                found, repair = Found(where, again.logs), Repair.MOVE
        if repair is Repair.UNCONFIRM or (repair is Repair.KEEP and record.recorded is None):
            report.unconfirmed += 1
        if repair is Repair.KEEP:
            return
        block = None if found is None else self._block(found)
        with self._context.sessions.begin() as session:
            if kind.read(session, record.key) != record:
                return  # changed since it was read (its service, another pass): the next pass sees it
            kind.apply(session, record, repair, found)
            if found is not None and block is not None:
                self._chain_facts.write(session, found.logs, block)
        report.repaired.append(Repaired(record, repair, None if found is None else found.location))

    def _fate(self, tx_hash: str) -> _Fated:
        rpc = self._context.rpc
        raw = rpc.call("eth_getTransactionReceipt", tx_hash)
        if raw is not None:
            receipt = Receipt.from_rpc(raw)
            return (Fate.MINED if receipt.status == 1 else Fate.REVERTED), receipt
        tx = rpc.call("eth_getTransactionByHash", tx_hash)
        if tx is None:
            return Fate.GONE, None
        taken = int(rpc.call("eth_getTransactionCount", tx["from"], "latest"), 16)
        return (Fate.GONE if int(tx["nonce"], 16) < taken else Fate.PENDING), None

    def _block(self, found: Found) -> BlockHeader | None:
        block_hash = found.location.block_hash
        return None if block_hash is None else self._chain_facts.block(block_hash)

    def _contracts(self) -> list[Any]:
        c = self._context
        return [c.recorder, c.operator, c.pauser, c.meter_oracle, c.price_publisher, c.settler, c.settlement_operator]

    # --- running in the service ------------------------------------------------------------

    def _guarded(self, above: int | None) -> bool:
        """One pass that never raises; False when it must be tried again (node or database down,
        records unconfirmed), and then the follow-up does."""
        try:
            report = self.reconcile(above)
        except (errors.LedgerError, OperationalError) as exc:
            log.warning("reconciling the records after a reorg failed, retrying: %s", exc)
            report = None
        if (report is None or report.failed) and above is not None:
            with self._retry_lock:
                self._retry_above = above if self._retry_above is None else min(above, self._retry_above)
        done = report is not None and not report.unconfirmed and not report.failed
        if not done:
            self._start_follow_up()
        return done

    def _start_follow_up(self) -> None:
        """Re-checks every FOLLOW_UP_SECONDS the unconfirmed records, and the blocks of a pass
        that failed, until nothing is left."""
        stop = self._stop
        if stop is None or (self._follow_up is not None and self._follow_up.is_alive()):
            return

        def follow_up() -> None:
            while not stop.wait(FOLLOW_UP_SECONDS):
                with self._retry_lock:
                    above, self._retry_above = self._retry_above, None
                if self._guarded(above):
                    return

        self._follow_up = threading.Thread(target=follow_up, name="gridledger-reconcile", daemon=True)
        self._follow_up.start()


def _unique(records: Iterable[Record]) -> list[Record]:
    seen: dict[tuple[str, str], Record] = {}
    for record in records:
        seen.setdefault((record.kind, record.key), record)
    return list(seen.values())
