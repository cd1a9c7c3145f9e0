"""The kinds of records with a transaction: which of them a pass checks, where the chain has the
effect of one now (its event, by id), and how each repair is written. See
`ledger.services.reconcile` for the states and transitions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from eth_utils import keccak
from sqlalchemy import ColumnElement, false, select, update
from sqlalchemy.orm import Session

from ledger import errors
from ledger.chain.trade_ledger import PARTICIPANT_REGISTERED_TOPIC
from ledger.chain.transactions import Receipt
from ledger.domain.trade import ParticipantKind, ParticipantStatus, TradeStatus
from ledger.services.context import LedgerContext
from ledger.services.metering import PRICES, READINGS, MeteringService
from ledger.services.reconcile.rule import Location, Record, Repair
from ledger.services.settlement import DISPUTE_OPENED, DISPUTE_RESOLVED, SettlementService
from ledger.store import outbox, registrations
from ledger.store.metering_models import BatchStatus, PriceBatchRow, ReadingBatchRow
from ledger.store.models import Cancellation, Submission, SubmissionStatus
from ledger.store.registration_models import ParticipantRegistration, RegistrationStatus
from ledger.store.settlement_models import Dispute, DisputeStatus, RunStatus, SettlementRun


@dataclass(frozen=True)
class Found:
    """The chain's effect of a record: where, and the logs (with their block) that say it."""

    location: Location
    logs: list[dict[str, Any]]
    detail: Any = None  # what the kind needs to write it (a run's provenance, a rejection's reason)


class RecordKind(Protocol):
    """One kind of record: which are candidates, how its effect is found, how it is repaired."""

    name: str

    def candidates(self, session: Session, above: int | None) -> list[Record]:
        """Records with a block above `above` (None: no block is), and those left unconfirmed."""
        ...

    def read(self, session: Session, key: str) -> Record | None: ...

    def effect(self, record: Record, receipt: Receipt | None) -> Found | None:
        """Where the chain has the record's effect now; `receipt`: its transaction's, if mined."""
        ...

    def apply(self, session: Session, record: Record, repair: Repair, found: Found | None) -> None: ...


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


class Batches(RecordKind):
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


class Runs(RecordKind):
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


class DisputeOpenings(RecordKind):
    name = "disputes"

    def __init__(self, settlement: SettlementService, address: str) -> None:
        self._settlement = settlement
        self._address = address
        self._topic = _topic(DISPUTE_OPENED)

    def candidates(self, session: Session, above: int | None) -> list[Record]:
        rows = session.scalars(
            select(Dispute).where(_above(Dispute.opened_block_number, above) | Dispute.opening_unconfirmed)
        )
        return [self._record(row) for row in rows]

    def _record(self, row: Dispute) -> Record:
        # Unconfirmed: not known to be mined, as a submission's pending record.
        location = None if row.opening_unconfirmed else Location(row.opened_transaction_hash, row.opened_block_number)
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
        # RESET does not come here: the reconciler relays the dispute again (MOVE), or, while its
        # run is not on chain, leaves it unconfirmed until it is.
        values: dict[str, Any] = {"opening_unconfirmed": repair is not Repair.MOVE}
        if repair is Repair.MOVE:
            assert found is not None
            values["opened_transaction_hash"] = found.location.transaction_hash
            values["opened_block_number"] = found.location.block_number
        session.execute(update(Dispute).where(Dispute.dispute_id == record.key).values(**values))


class DisputeResolutions(RecordKind):
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


def _sent_record(name: str, key: str, row: Submission | Cancellation) -> Record | None:
    """An outbox row's record: pending (sent, not located yet), or settled in its block."""
    if row.transaction_hash is None:
        return None
    if row.status is SubmissionStatus.PENDING:
        return Record(name, key, row.transaction_hash, None)
    if row.block_number is None:
        return None
    location = Location(row.transaction_hash, row.block_number, outcome=row.status.value)
    return Record(name, key, row.transaction_hash, location)


class _Queued(RecordKind):
    """A row a worker sent from its queue (a trade, a cancellation, a registration). Candidates are
    those settled (`settled` statuses) in a block above the fork, and those a repair made pending:
    pending rows are their worker's while it waits for their receipt, so only those a repair made
    pending are followed up here (after a restart the worker's `recover` does it). A repair moves
    the row to where the chain has its outcome, makes it pending again, or queues it again."""

    model: Any  # the queue's table: status, block_number and the `key` column
    key: str
    settled: tuple[Any, ...]
    status: Callable[[str], Any]  # a found outcome's status

    def __init__(self) -> None:
        self.unconfirmed: set[str] = set()

    def _record(self, row: Any) -> Record | None:
        raise NotImplementedError

    def candidates(self, session: Session, above: int | None) -> list[Record]:
        m = self.model
        statement = select(m).where(
            (m.status.in_(self.settled) & _above(m.block_number, above)) | getattr(m, self.key).in_(self.unconfirmed)
        )
        return [record for row in session.scalars(statement) if (record := self._record(row)) is not None]

    def apply(self, session: Session, record: Record, repair: Repair, found: Found | None) -> None:
        if repair is Repair.MOVE:
            assert found is not None
            where = found.location
            assert where.outcome is not None  # a queued row's effect is its outcome
            to = self.status(where.outcome)
            self._relocate(session, record.key, to, where.transaction_hash, where.block_number, found.detail)
            self.unconfirmed.discard(record.key)
        elif repair is Repair.UNCONFIRM:
            self._unconfirm(session, record.key, record.transaction_hash)
            self.unconfirmed.add(record.key)
        else:
            self._reopen(session, record.key)
            self.unconfirmed.discard(record.key)

    def _relocate(self, session: Session, key: str, to: Any, tx: str, block: int, detail: Any) -> None:
        raise NotImplementedError

    def _unconfirm(self, session: Session, key: str, tx: str) -> None:
        raise NotImplementedError

    def _reopen(self, session: Session, key: str) -> None:
        raise NotImplementedError


class Submissions(_Queued):
    name = "submissions"
    model, key, status = Submission, "trade_id", SubmissionStatus
    settled = (SubmissionStatus.RECORDED, SubmissionStatus.REJECTED)

    def __init__(self, context: LedgerContext) -> None:
        super().__init__()
        self._ledger = context.recorder
        self._start_block = context.deployment.start_block

    def _record(self, row: Submission | None) -> Record | None:
        return None if row is None else _sent_record(self.name, row.trade_id, row)

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

    def _relocate(self, session: Session, key: str, to: Any, tx: str, block: int, detail: Any) -> None:
        outbox.relocate(session, key, to, tx, block, detail)

    def _unconfirm(self, session: Session, key: str, tx: str) -> None:
        outbox.unconfirm(session, [key], tx)

    def _reopen(self, session: Session, key: str) -> None:
        outbox.reopen(session, [key])


class Cancellations(_Queued):
    """Relayed cancellations, keyed by their own id; the effect is the trade's `TradeCancelled`
    (a cancellation, not an amendment) or the batch's refusal of this one."""

    name = "cancellations"
    model, key, status = Cancellation, "id", SubmissionStatus
    settled = (SubmissionStatus.RECORDED, SubmissionStatus.REJECTED)

    def __init__(self, context: LedgerContext) -> None:
        super().__init__()
        self._ledger = context.recorder
        self._start_block = context.deployment.start_block
        self._trade_of: dict[str, str] = {}

    def _record(self, row: Cancellation | None) -> Record | None:
        if row is None or row.transaction_hash is None:
            return None
        self._trade_of[row.id] = row.trade_id
        return _sent_record(self.name, row.id, row)

    def read(self, session: Session, key: str) -> Record | None:
        return self._record(outbox.get_cancellation(session, key))

    def effect(self, record: Record, receipt: Receipt | None) -> Found | None:
        trade_id = self._trade_of[record.key]
        if receipt is not None and receipt.status == 1:
            where = (receipt.transaction_hash, receipt.block_number, receipt.block_hash)
            reasons = [reason for t, reason in self._ledger.cancel_outcome(receipt).results if t == trade_id]
            if None in reasons:
                return Found(Location(*where, outcome="recorded"), receipt.logs)
            refusal = next((r for r in reasons if r is not None and not isinstance(r, errors.TradeNotActive)), None)
            if refusal is not None:
                return Found(Location(*where, outcome="rejected"), receipt.logs, (refusal.code, str(refusal)))
        if self._ledger.trade_status(trade_id) is not TradeStatus.CANCELLED:
            return None
        entry = self._ledger.cancelled_log(trade_id, self._start_block)
        if entry is None:
            return None
        found = _found_in_log(entry)
        return Found(replace(found.location, outcome="recorded"), found.logs)

    def _relocate(self, session: Session, key: str, to: Any, tx: str, block: int, detail: Any) -> None:
        outbox.settle_cancellation(session, key, to, tx, block, detail)

    def _unconfirm(self, session: Session, key: str, tx: str) -> None:
        outbox.unconfirm_cancellation(session, key, tx)

    def _reopen(self, session: Session, key: str) -> None:
        outbox.reopen_cancellation(session, key)


class Registrations(_Queued):
    """The registrar's participant registrations, keyed by their id; the effect is the account's
    `ParticipantRegistered` with the kind and identifier asked for, wherever it is (a resend's
    refusal as registered already is not one), or the batch's refusal of this registration."""

    name = "participant_registrations"
    model, key, status = ParticipantRegistration, "id", RegistrationStatus
    settled = (RegistrationStatus.REGISTERED, RegistrationStatus.REJECTED)

    def __init__(self, context: LedgerContext) -> None:
        super().__init__()
        self._operator = context.operator
        self._start_block = context.deployment.start_block
        self._asked: dict[str, tuple[str, ParticipantKind, str]] = {}  # id -> (address, kind, identifier hash)

    def _record(self, row: ParticipantRegistration | None) -> Record | None:
        if row is None or row.transaction_hash is None:
            return None
        self._asked[row.id] = (row.address, row.kind, row.identifier_hash)
        if row.status is RegistrationStatus.PENDING:
            return Record(self.name, row.id, row.transaction_hash, None)
        if row.status is RegistrationStatus.ACCEPTED or row.block_number is None:
            return None
        location = Location(row.transaction_hash, row.block_number, outcome=row.status.value)
        return Record(self.name, row.id, row.transaction_hash, location)

    def read(self, session: Session, key: str) -> Record | None:
        return self._record(registrations.get_registration(session, key))

    def effect(self, record: Record, receipt: Receipt | None) -> Found | None:
        address, kind, identifier_hash = self._asked[record.key]
        refused: Found | None = None  # this transaction's refusal of the account as registered already
        if receipt is not None and receipt.status == 1:
            outcome = self._operator.registration_outcome(receipt)
            where = (receipt.transaction_hash, receipt.block_number, receipt.block_hash)
            if address in outcome.registered:
                return Found(Location(*where, outcome="registered"), receipt.logs)
            reason = outcome.rejected.get(address)
            if reason is not None:
                refused = Found(Location(*where, outcome="rejected"), receipt.logs, (reason.code, str(reason)))
                if not isinstance(reason, errors.ParticipantAlreadyRegistered):
                    return refused
        on_chain = self._operator.participant(address)
        if on_chain.status is ParticipantStatus.NONE:
            return None
        if (on_chain.kind, on_chain.identifier_hash) != (kind, identifier_hash):
            return refused  # registered otherwise, not by this registration
        entry = self._registered_log(address)
        if entry is None:
            return None
        found = _found_in_log(entry)
        return Found(replace(found.location, outcome="registered"), found.logs)

    def _registered_log(self, address: str) -> dict[str, Any] | None:
        """The account's `ParticipantRegistered` log (an account is registered once)."""
        logs = self._operator.sender.rpc.call(
            "eth_getLogs",
            {
                "address": self._operator.address,
                "fromBlock": hex(self._start_block),
                "toBlock": "latest",
                "topics": [PARTICIPANT_REGISTERED_TOPIC, "0x" + "00" * 12 + address[2:].lower()],
            },
        )
        return logs[0] if logs else None

    def _relocate(self, session: Session, key: str, to: Any, tx: str, block: int, detail: Any) -> None:
        registrations.relocate(session, key, to, tx, block, detail)

    def _unconfirm(self, session: Session, key: str, tx: str) -> None:
        registrations.unconfirm(session, key, tx)

    def _reopen(self, session: Session, key: str) -> None:
        registrations.reopen(session, key)
