"""Use cases of traders: submit signed trades (into the relayer's outbox) and cancel them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from eth_utils import to_checksum_address
from sqlalchemy.orm import Session, sessionmaker

from ledger import errors
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.chain.transactions import Receipt
from ledger.domain.trade import ParticipantStatus, SignedTrade, TradeLimits, check_terms
from ledger.services.clock import ChainClock
from ledger.signing.eip712 import cancel_trade_digest, trade_digest
from ledger.signing.trader import recover_signer
from ledger.store import outbox, queries

LIMITS_TTL_SECONDS = 30.0


@dataclass(frozen=True)
class Accepted:
    """The answer to a submission: the same for the same signed trade, however often it comes."""

    submission_id: str
    trade_id: str
    status: str
    created: bool


class TradingService:
    def __init__(self, ledger: TradeLedgerContract, sessions: sessionmaker[Session], clock: ChainClock) -> None:
        self._ledger = ledger
        self._sessions = sessions
        self._clock = clock
        self._limits: tuple[float, TradeLimits] | None = None
        self._limits_lock = threading.Lock()

    def submit(self, signed: SignedTrade) -> Accepted:
        (result,) = self.submit_many([signed])
        if isinstance(result, errors.LedgerError):
            raise result
        return result

    def submit_many(self, batch: list[SignedTrade]) -> list[Accepted | errors.LedgerError]:
        """Checks each trade as the contract will, and puts the ones that pass in the outbox, in
        one database transaction. A trade that fails gets its typed error in place and writes
        nothing; the others are not held back by it."""
        domain = self._ledger.domain
        now = self._clock.now()
        limits = self.limits()
        results: list[Accepted | errors.LedgerError] = []
        with self._sessions.begin() as session:
            statuses: dict[str, ParticipantStatus] = {}
            for signed in batch:
                trade_id = "0x" + trade_digest(domain, signed.trade).hex()
                existing = outbox.get_submission_by_trade(session, trade_id)
                if existing is not None:
                    results.append(Accepted(existing.id, trade_id, existing.status.value, created=False))
                    continue
                try:
                    self._check(session, signed, trade_id, limits, now, statuses)
                except errors.LedgerError as exc:
                    exc.context.setdefault("trade_id", trade_id)
                    results.append(exc)
                    continue
                submission, created = outbox.add_submission(session, trade_id, signed.to_json())
                results.append(Accepted(submission.id, trade_id, submission.status.value, created))
        return results

    def cancel(self, trade_id: str, deadline: int, seller_signature: bytes, buyer_signature: bytes) -> Receipt:
        """Sends a cancellation both parties signed; raises the contract's reason if it refuses."""
        with self._sessions() as session:
            row = queries.get_trade(session, trade_id)
            if row is None:
                raise errors.NotFoundError("no such trade in the index", trade_id=trade_id)
            seller, buyer = row.seller, row.buyer
        digest = cancel_trade_digest(self._ledger.domain, trade_id, deadline)
        for party, signature in ((seller, seller_signature), (buyer, buyer_signature)):
            if recover_signer(digest, signature) != party:
                raise errors.InvalidSignature(
                    "the cancellation is not signed by this party", trade_id=trade_id, expected_signer=party
                )
        return self._ledger.cancel_trade(trade_id, seller, buyer, deadline, seller_signature, buyer_signature)

    def limits(self) -> TradeLimits:
        with self._limits_lock:
            moment = time.monotonic()
            if self._limits is None or moment - self._limits[0] > LIMITS_TTL_SECONDS:
                self._limits = (moment, self._ledger.trade_limits())
            return self._limits[1]

    def _check(
        self,
        session: Session,
        signed: SignedTrade,
        trade_id: str,
        limits: TradeLimits,
        now: int,
        statuses: dict[str, ParticipantStatus],
    ) -> None:
        trade = signed.trade
        check_terms(trade, limits, now)
        if queries.get_trade(session, trade_id) is not None:
            raise errors.DuplicateTrade("this trade is recorded already", trade_id=trade_id)
        digest = bytes.fromhex(trade_id[2:])
        for party, signature in ((trade.seller, signed.seller_signature), (trade.buyer, signed.buyer_signature)):
            if recover_signer(digest, signature) != to_checksum_address(party):
                raise errors.InvalidSignature(
                    "a signature does not belong to its party", trade_id=trade_id, expected_signer=party
                )
        for party in (trade.seller, trade.buyer):
            status = statuses.get(party) or self._participant_status(session, party)
            statuses[party] = status
            if status is ParticipantStatus.NONE:
                raise errors.UnknownParticipant("a party is not a registered participant", account=party)
            if status is ParticipantStatus.SUSPENDED:
                raise errors.ParticipantSuspended("a party is suspended", account=party)

    def _participant_status(self, session: Session, address: str) -> ParticipantStatus:
        """The index answers for known active participants; anything else is asked of the chain,
        which may be ahead of the index (a participant registered a block ago)."""
        row = queries.get_participant(session, address)
        if row is not None and row.status.value == ParticipantStatus.ACTIVE.value:
            return ParticipantStatus.ACTIVE
        return self._ledger.participant(address).status
