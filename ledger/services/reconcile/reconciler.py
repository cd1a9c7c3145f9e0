"""The passes over the records: after a rollback, at start-up, on demand, and the follow-up of
records left unconfirmed. See `ledger.services.reconcile`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from ledger import errors
from ledger.chain.transactions import Receipt
from ledger.indexer.ports import BlockHeader
from ledger.services.chain_facts import ChainFacts
from ledger.services.context import LedgerContext
from ledger.services.metering import MeteringService
from ledger.services.reconcile.records import (
    Batches,
    Cancellations,
    DisputeOpenings,
    DisputeResolutions,
    Found,
    RecordKind,
    Registrations,
    Runs,
    Submissions,
)
from ledger.services.reconcile.rule import Fate, Location, Record, Repair, decide
from ledger.services.settlement import SettlementService
from ledger.store.metering_models import PriceBatchRow, ReadingBatchRow
from ledger.store.models import IndexedBlock

log = logging.getLogger(__name__)

FOLLOW_UP_SECONDS = 2.0


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
        self._openings = DisputeOpenings(settlement, settlement_address)
        self._kinds: list[RecordKind] = [
            Batches(ReadingBatchRow, metering),
            Batches(PriceBatchRow, metering),
            Runs(settlement),
            self._openings,
            DisputeResolutions(settlement, settlement_address),
            Submissions(context),
            Cancellations(context),
            Registrations(context),
        ]
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
        (the indexer's window), in case a rollback happened without their repair. Never raises:
        the indexer starts after it whatever the database says."""
        try:
            with self._context.read_sessions() as session:
                lowest = session.scalar(select(func.min(IndexedBlock.number)))
        except OperationalError as exc:
            # Without the window, every record is checked: by the follow-up if the database is down.
            log.warning("reading the indexer's window failed; checking every record instead: %s", exc)
            lowest = None
        self._guarded(-1 if lowest is None else lowest - 1)

    def reconcile(self, above: int | None) -> Report:
        """One pass over the records with a block above `above` (None: only those left unconfirmed)."""
        with self._lock:
            report = Report()
            fates: dict[str, _Fated] = {}
            for kind in self._kinds:
                with self._context.read_sessions() as session:
                    records = kind.candidates(session, above)
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

    def _check(self, kind: RecordKind, record: Record, fates: dict[str, _Fated], report: Report) -> None:
        if record.transaction_hash not in fates:
            fates[record.transaction_hash] = self._fate(record.transaction_hash)
        fate, receipt = fates[record.transaction_hash]
        found = kind.effect(record, receipt)
        repair = decide(record.recorded, None if found is None else found.location, fate)
        if kind is self._openings and repair is Repair.RESET:
            # The account signed it: the operator relays it again, as the service did first.
            again = self._settlement.relay_dispute_again(record.key)
            if again is None:  # its run's commit is gone too: relayed once that is redone
                repair = Repair.UNCONFIRM
            else:
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
