"""The registrar: takes queued participant registrations and registers them in batches from the
operator key, one `registerParticipants` transaction per batch, settling every registration as
registered or rejected (with the contract's reason).

Crash-safe like the relayer (`ledger.services.relayer`): a batch's transaction is signed, its hash
committed to the queue (status pending), and only then broadcast. After a restart, pending
registrations are resolved from their transaction's receipt, or queued again when the node never
saw it. The contract rejects an account registered already, so a batch sent twice registers
nobody twice; the registrar then finds the account registered and marks it so.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from ledger import errors
from ledger.chain.trade_ledger import Registration, RegistrationOutcome, TradeLedgerContract
from ledger.chain.transactions import SignedTransaction
from ledger.domain.trade import ParticipantStatus
from ledger.services.batch_rounds import MAX_ATTEMPTS, look_up, revert_reason, run_rounds, send
from ledger.store import registrations
from ledger.store.registration_models import ParticipantRegistration

log = logging.getLogger(__name__)

# 500 registrations take ~25M gas: a batch stays within a 30M-gas block.
DEFAULT_BATCH_SIZE = 250


@dataclass(frozen=True)
class RoundResult:
    sent: int = 0
    registered: int = 0
    rejected: int = 0
    requeued: int = 0
    waiting: int = 0  # pending registrations whose transaction the node holds but has not mined yet


@dataclass(frozen=True)
class _Batch:
    tx_hash: str
    rows: list[ParticipantRegistration]
    tx: SignedTransaction | None = None  # None for a batch recovered after a restart


class Registrar:
    def __init__(
        self,
        operator: TradeLedgerContract,
        sessions: sessionmaker[Session],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_window: float = 0.2,
        max_in_flight: int = 4,
        receipt_timeout: float = 120.0,
    ) -> None:
        self._operator = operator
        self._sessions = sessions
        self._batch_size = batch_size
        self._batch_window = batch_window
        self._max_in_flight = max_in_flight
        self._receipt_timeout = receipt_timeout
        self._stop = threading.Event()  # `run`'s: a stop interrupts a wait for receipts

    def run(self, stop: threading.Event) -> None:
        """Registers until `stop` is set; a failing round is logged and retried, never fatal."""
        self._stop = stop
        run_rounds(stop, self.recover, self.register_round, batch_window=self._batch_window, log=log, name="registrar")

    def recover(self) -> RoundResult:
        """Resolves registrations left pending by a previous process (or a failed round)."""
        with self._sessions() as session:
            pending = registrations.list_pending(session)
        found = look_up(self._operator.sender.rpc, pending)
        if found.lost:
            with self._sessions.begin() as session:
                registrations.requeue(session, [r.id for r in found.lost])
        result = RoundResult(requeued=len(found.lost), waiting=len(found.waiting))
        for tx_hash, rows, receipt in found.mined:
            outcome = self._operator.registration_outcome(receipt)
            result = _add(result, self._settle(_Batch(tx_hash, rows), outcome))
        if found.lost:  # a transaction the node no longer knows left its nonce free
            self._operator.sender.nonces.resync()
        if pending:
            log.info(
                "recovered %d pending registrations: %d registered, %d rejected, %d requeued, %d waiting",
                len(pending),
                result.registered,
                result.rejected,
                result.requeued,
                result.waiting,
            )
        return result

    def register_round(self) -> RoundResult:
        """Claims up to `max_in_flight` batches, sends them in one JSON-RPC batch, waits for their
        receipts and settles every registration."""
        batches = self._prepare()
        if not batches:
            return RoundResult()
        mined, requeued = send(
            self._operator.sender,
            batches,
            self._requeue,
            timeout=self._receipt_timeout,
            stop=self._stop,
            log=log,
            what="registration batch",
        )
        result = RoundResult(sent=sum(len(b.rows) for b in batches), requeued=requeued)
        for batch, receipt in mined:
            result = _add(result, self._settle(batch, self._operator.registration_outcome(receipt)))
        log.info(
            "registered %d participants (%d rejected) in %d transactions",
            result.registered,
            result.rejected,
            len(mined),
        )
        return result

    def _requeue(self, batch: _Batch) -> int:
        with self._sessions.begin() as session:
            registrations.requeue(session, [r.id for r in batch.rows])
        return len(batch.rows)

    def _prepare(self) -> list[_Batch]:
        """Claims registrations, signs one transaction per batch and marks them pending with its
        hash, all in one database transaction, before anything is broadcast."""
        # The nonces are taken in the same transaction: a failure here gives them back.
        with self._sessions.begin() as session, self._operator.sender.nonces.within(session):
            claimed = registrations.claim_accepted(session, self._batch_size * self._max_in_flight)
            batches = []
            for start in range(0, len(claimed), self._batch_size):
                rows = claimed[start : start + self._batch_size]
                tx = self._operator.sign_register_participants(
                    [Registration(r.address, r.kind.ordinal, bytes.fromhex(r.identifier_hash[2:])) for r in rows]
                )
                registrations.mark_pending(session, [r.id for r in rows], tx.hash)
                batches.append(_Batch(tx.hash, rows, tx))
            return batches

    def _settle(self, batch: _Batch, outcome: RegistrationOutcome) -> RoundResult:
        receipt = outcome.receipt
        if receipt.status != 1:
            return self._retry_or_reject(batch, outcome)
        registered, rejected = [], 0
        with self._sessions.begin() as session:
            for row in batch.rows:
                reason = outcome.rejected.get(row.address)
                if row.address in outcome.registered:
                    registered.append(row.id)
                elif isinstance(reason, errors.ParticipantAlreadyRegistered) and self._registered_as_asked(row):
                    # A batch sent again after a crash: the first transaction registered it.
                    registered.append(row.id)
                else:
                    reason = reason or errors.ContractReverted("the batch neither registered nor rejected it")
                    registrations.mark_rejected(
                        session, [row.id], reason.code, str(reason), receipt.transaction_hash, receipt.block_number
                    )
                    rejected += 1
            registrations.mark_registered(session, registered, receipt.transaction_hash, receipt.block_number)
        return RoundResult(registered=len(registered), rejected=rejected)

    def _registered_as_asked(self, row: ParticipantRegistration) -> bool:
        """Whether the chain holds `row`'s account with its kind and identifier (a resend's duplicate)."""
        on_chain = self._operator.participant(row.address)
        return (
            on_chain.status is not ParticipantStatus.NONE
            and on_chain.kind is row.kind
            and on_chain.identifier_hash == row.identifier_hash
        )

    def _retry_or_reject(self, batch: _Batch, outcome: RegistrationOutcome) -> RoundResult:
        """A batch transaction that reverted as a whole (role revoked, out of gas) is sent again
        later; after MAX_ATTEMPTS its registrations are rejected with the revert reason."""
        reason = revert_reason(self._operator, batch, outcome.receipt)
        exhausted = [r.id for r in batch.rows if r.attempts + 1 >= MAX_ATTEMPTS]
        with self._sessions.begin() as session:
            registrations.mark_rejected(session, exhausted, reason.code, str(reason), batch.tx_hash)
            registrations.requeue(session, [r.id for r in batch.rows if r.id not in exhausted])
        log.warning("registration batch %s reverted (%s): %s", batch.tx_hash, reason.code, reason)
        return RoundResult(rejected=len(exhausted), requeued=len(batch.rows) - len(exhausted))


def _add(a: RoundResult, b: RoundResult) -> RoundResult:
    return RoundResult(
        a.sent + b.sent,
        a.registered + b.registered,
        a.rejected + b.rejected,
        a.requeued + b.requeued,
        a.waiting + b.waiting,
    )
