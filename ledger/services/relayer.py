"""The relayer: takes accepted trades and cancellations from the outbox, sends them in batches
(`recordTrades`, `cancelTrades`) from the recorder account, and settles each as recorded or
rejected (with the reason). It is the recorder key's only sender, so one nonce cache serves it.

Crash safety comes from the order of writes. A batch's transaction is signed first, its hash
is committed to the outbox (status pending) and only then is it broadcast. After a restart,
pending submissions are resolved from their transaction's receipt, or sent again if the node
never saw it. The contract refuses a trade id it has recorded, so a trade sent twice is never
recorded twice; the relayer then finds the `TradeRecorded` log and marks the submission recorded.

A reorg that drops a recorded trade's transaction makes its submission accepted again
(`ledger.services.reconcile`), and this loop sends it again like any other.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from ledger import errors
from ledger.chain.trade_ledger import BatchOutcome, CancelOutcome, TradeLedgerContract
from ledger.chain.transactions import Receipt, SignedTransaction
from ledger.domain.trade import SignedCancellation, SignedTrade, TradeStatus
from ledger.services.batch_rounds import MAX_ATTEMPTS, look_up, revert_reason, run_rounds, send
from ledger.store import outbox, senders
from ledger.store.models import Cancellation, Submission, SubmissionStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundResult:
    sent: int = 0
    recorded: int = 0
    rejected: int = 0
    requeued: int = 0
    waiting: int = 0  # pending submissions whose transaction the node holds but has not mined yet


@dataclass(frozen=True)
class _Batch:
    tx_hash: str
    submission_ids: list[str]
    trade_ids: list[str]
    tx: SignedTransaction | None = None  # None for a batch recovered after a restart
    cancels: bool = False  # a `cancelTrades` batch: `submission_ids` are cancellation ids


class Relayer:
    def __init__(
        self,
        ledger: TradeLedgerContract,
        sessions: sessionmaker[Session],
        *,
        start_block: int,
        batch_size: int = 200,
        batch_window: float = 0.2,
        max_in_flight: int = 4,
        receipt_timeout: float = 120.0,
    ) -> None:
        self._ledger = ledger
        self._sessions = sessions
        self._start_block = start_block
        self._batch_size = batch_size
        self._batch_window = batch_window
        self._max_in_flight = max_in_flight
        self._receipt_timeout = receipt_timeout
        self._stop = threading.Event()  # `run`'s: a stop interrupts a wait for receipts

    def run(self, stop: threading.Event) -> None:
        """Relays until `stop` is set; a failing round is logged and retried, never fatal.

        Pending submissions, a previous process's or those of a round that failed after sending,
        are resolved first, and again before every round for as long as the node still holds one
        of their transactions unmined."""
        self._stop = stop
        run_rounds(stop, self.recover, self.relay_round, batch_window=self._batch_window, log=log, name="relayer")

    def recover(self) -> RoundResult:
        """Resolves submissions and cancellations left pending by a previous process or a failed
        round. Those whose transaction the node no longer knows (never sent, or lost with a
        restart of the node) are accepted again, and the recorder's nonce is re-read: the lost
        nonces are free again."""
        with self._sessions() as session:
            submissions = outbox.list_pending(session)
            cancellations = outbox.list_pending_cancellations(session)
        trades, trades_lost = self._recover(submissions, outbox.requeue, cancels=False)
        cancels, cancels_lost = self._recover(cancellations, outbox.requeue_cancellations, cancels=True)
        if trades_lost or cancels_lost:
            self._ledger.sender.nonces.resync()
        result = RoundResult(
            0,
            trades.recorded + cancels.recorded,
            trades.rejected + cancels.rejected,
            trades.requeued + cancels.requeued,
            trades.waiting + cancels.waiting,
        )
        if submissions or cancellations:
            # Logged at info once something was resolved: `run` asks every round while one waits.
            log.log(
                logging.INFO if result.recorded or result.rejected or result.requeued else logging.DEBUG,
                "recovered %d pending submissions and %d cancellations: %d recorded, %d rejected,"
                " %d requeued, %d still waiting",
                len(submissions),
                len(cancellations),
                result.recorded,
                result.rejected,
                result.requeued,
                result.waiting,
            )
        return result

    def _recover(
        self,
        pending: Sequence[Submission | Cancellation],
        requeue: Callable[[Session, list[str]], object],
        *,
        cancels: bool,
    ) -> tuple[RoundResult, bool]:
        """`recover` for one kind of row: the counts, and whether a transaction was lost."""
        found = look_up(self._ledger.sender.rpc, pending)
        if found.lost:
            with self._sessions.begin() as session:
                requeue(session, [row.id for row in found.lost])
        recorded = rejected = 0
        requeued, waiting = len(found.lost), len(found.waiting)
        for tx_hash, rows, receipt in found.mined:
            batch = _Batch(tx_hash, [r.id for r in rows], [r.trade_id for r in rows], cancels=cancels)
            r, j, q = self._settle_any(batch, receipt)
            recorded, rejected, requeued = recorded + r, rejected + j, requeued + q
        return RoundResult(0, recorded, rejected, requeued, waiting), bool(found.lost)

    def relay_round(self) -> RoundResult:
        """Claims up to `max_in_flight` batches, sends them in one JSON-RPC batch, waits for
        their receipts and settles every submission."""
        batches = self._prepare()
        if not batches:
            return RoundResult()
        mined, requeued = send(
            self._ledger.sender,
            batches,
            self._requeue,
            timeout=self._receipt_timeout,
            stop=self._stop,
            log=log,
            what="batch",
        )
        recorded = rejected = 0
        for batch, receipt in mined:
            r, j, q = self._settle_any(batch, receipt)
            recorded, rejected, requeued = recorded + r, rejected + j, requeued + q
        return RoundResult(sum(len(b.trade_ids) for b in batches), recorded, rejected, requeued)

    def _requeue(self, batch: _Batch) -> int:
        with self._sessions.begin() as session:
            (outbox.requeue_cancellations if batch.cancels else outbox.requeue)(session, batch.submission_ids)
        return len(batch.submission_ids)

    def _prepare(self) -> list[_Batch]:
        """Claims submissions, signs one transaction per batch and marks them pending with its
        hash, all in one database transaction, before anything is broadcast."""
        # The nonces are taken in the same transaction: a failure here gives them back.
        with self._sessions.begin() as session, self._ledger.sender.nonces.within(session):
            claimed = outbox.claim_accepted(session, self._batch_size * self._max_in_flight)
            batches: list[_Batch] = []
            for start in range(0, len(claimed), self._batch_size):
                chunk = claimed[start : start + self._batch_size]
                signed = [SignedTrade.from_json(s.payload) for s in chunk]
                tx = self._ledger.sign_record_trades(signed)
                outbox.mark_pending(session, [s.id for s in chunk], tx.hash)
                batches.append(_Batch(tx.hash, [s.id for s in chunk], [s.trade_id for s in chunk], tx))
            batches += self._prepare_cancellations(session)
            return batches

    def _prepare_cancellations(self, session: Session) -> list[_Batch]:
        """As `_prepare`, for the accepted cancellations: one `cancelTrades` transaction per batch,
        signed after the round's trade batches (the same key's next nonces)."""
        claimed = outbox.claim_accepted_cancellations(session, self._batch_size * self._max_in_flight)
        batches = []
        for start in range(0, len(claimed), self._batch_size):
            chunk = claimed[start : start + self._batch_size]
            tx = self._ledger.sign_cancel_trades([SignedCancellation.from_json(c.payload) for c in chunk])
            outbox.mark_cancellations_pending(session, [c.id for c in chunk], tx.hash)
            batches.append(_Batch(tx.hash, [c.id for c in chunk], [c.trade_id for c in chunk], tx, cancels=True))
        return batches

    def _settle_any(self, batch: _Batch, receipt: Receipt) -> tuple[int, int, int]:
        if batch.cancels:
            return self._settle_cancellations(batch, self._ledger.cancel_outcome(receipt))
        return self._settle(batch, self._ledger.batch_outcome(receipt))

    def _settle_cancellations(self, batch: _Batch, outcome: CancelOutcome) -> tuple[int, int, int]:
        """Every cancellation of the batch by its outcome: the contract emits one event for each,
        in order. One refused as `trade_not_active` whose trade the chain shows cancelled by no
        other cancellation of ours was this one, sent before (a resend after a crash)."""
        receipt = outcome.receipt
        if receipt.status != 1:
            return 0, *self._retry_or_reject(batch, receipt)
        # Each trade's outcomes in batch order: a trade cancelled twice in one batch has two.
        outcomes: dict[str, list[errors.LedgerError | None]] = defaultdict(list)
        for trade_id, reason in outcome.results:
            outcomes[trade_id].append(reason)
        recorded = rejected = 0
        done = SubmissionStatus.RECORDED
        with self._sessions.begin() as session:
            for cancellation_id, trade_id in zip(batch.submission_ids, batch.trade_ids, strict=True):
                if not outcomes[trade_id]:
                    log.error("batch %s has no outcome for the cancellation %s", batch.tx_hash, cancellation_id)
                    continue
                reason = outcomes[trade_id].pop(0)
                if reason is None:
                    outbox.settle_cancellation(
                        session, cancellation_id, done, receipt.transaction_hash, receipt.block_number
                    )
                    recorded += 1
                    continue
                earlier = self._cancelled_earlier(session, cancellation_id, trade_id, reason)
                if earlier is not None:
                    outbox.settle_cancellation(session, cancellation_id, done, *earlier)
                    recorded += 1
                    continue
                outbox.settle_cancellation(
                    session,
                    cancellation_id,
                    SubmissionStatus.REJECTED,
                    receipt.transaction_hash,
                    receipt.block_number,
                    (reason.code, str(reason)),
                )
                rejected += 1
        return recorded, rejected, 0

    def _cancelled_earlier(
        self, session: Session, cancellation_id: str, trade_id: str, reason: errors.LedgerError
    ) -> tuple[str, int] | None:
        if not isinstance(reason, errors.TradeNotActive) or outbox.other_cancellation_done(
            session, trade_id, cancellation_id
        ):
            return None
        if self._ledger.trade_status(trade_id) is not TradeStatus.CANCELLED:
            return None
        entry = self._ledger.cancelled_log(trade_id, self._start_block)
        return None if entry is None else (entry["transactionHash"], int(entry["blockNumber"], 16))

    def _settle(self, batch: _Batch, outcome: BatchOutcome) -> tuple[int, int, int]:
        receipt = outcome.receipt
        if receipt.status != 1:
            return 0, *self._retry_or_reject(batch, receipt)
        recorded = [t for t in batch.trade_ids if t in outcome.recorded]
        rejected = 0
        with self._sessions.begin() as session:
            senders.record_progress(session, senders.RELAYER)  # for /health: see relayer_waiting_since
            outbox.mark_recorded(session, recorded, receipt.transaction_hash, receipt.block_number)
            for trade_id, reason in outcome.rejected.items():
                if trade_id not in batch.trade_ids:
                    continue
                if isinstance(reason, errors.DuplicateTrade) and self._mark_if_recorded_earlier(session, trade_id):
                    recorded.append(trade_id)
                    continue
                outbox.mark_rejected(
                    session, trade_id, reason.code, str(reason), receipt.transaction_hash, receipt.block_number
                )
                rejected += 1
        log.info(
            "batch recorded in block %d: %d trades recorded, %d rejected (transaction %s)",
            receipt.block_number,
            len(recorded),
            rejected,
            receipt.transaction_hash,
            extra={"event": "batch_recorded", "block": receipt.block_number, "recorded": len(recorded)},
        )
        return len(recorded), rejected, 0

    def _mark_if_recorded_earlier(self, session: Session, trade_id: str) -> bool:
        """A duplicate of a trade this outbox sent before (a resend after a crash) is a success."""
        if self._ledger.trade_status(trade_id) is TradeStatus.NONE:
            return False
        recorded = self._ledger.recorded_log(trade_id, self._start_block)
        if recorded is None:
            return False
        outbox.mark_recorded(session, [trade_id], recorded["transactionHash"], int(recorded["blockNumber"], 16))
        return True

    def _retry_or_reject(self, batch: _Batch, receipt: Receipt) -> tuple[int, int]:
        """A batch transaction that reverted as a whole (paused, role revoked, out of gas) is
        sent again later; after MAX_ATTEMPTS its trades are rejected with the revert reason."""
        reason = revert_reason(self._ledger, batch, receipt)
        get = outbox.get_cancellation if batch.cancels else outbox.get_submission
        with self._sessions.begin() as session:
            rows = [r for r in (get(session, i) for i in batch.submission_ids) if r is not None]
            exhausted = {r.id for r in rows if r.attempts + 1 >= MAX_ATTEMPTS}
            for row in rows:
                if row.id not in exhausted:
                    continue
                if batch.cancels:
                    why = (reason.code, str(reason))
                    outbox.settle_cancellation(session, row.id, SubmissionStatus.REJECTED, batch.tx_hash, None, why)
                else:
                    outbox.mark_rejected(session, row.trade_id, reason.code, str(reason), batch.tx_hash)
            again = [r.id for r in rows if r.id not in exhausted]
            (outbox.requeue_cancellations if batch.cancels else outbox.requeue)(session, again)
        log.warning("batch %s reverted (%s): %s", batch.tx_hash, reason.code, reason)
        return len(exhausted), len(rows) - len(exhausted)
