"""Use cases of traders: submit signed trades (into the relayer's outbox) and cancel them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from eth_abi.exceptions import EncodingError
from eth_utils import to_checksum_address
from sqlalchemy.orm import Session, sessionmaker

from ledger import errors
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.chain.transactions import Receipt
from ledger.domain.trade import ParticipantStatus, SignedTrade, Trade, TradeLimits, check_terms
from ledger.services.clock import ChainClock
from ledger.signing.eip712 import Domain, cancel_trade_digest, trade_digest, typed_data
from ledger.signing.trader import recover_signer
from ledger.store import outbox, queries

LIMITS_TTL_SECONDS = 30.0
ACTIVE_TTL_SECONDS = 2.0
# How stale the pre-check's view of the contract's pause may be; the contract stays the authority.
PAUSED_TTL_SECONDS = 1.0


@dataclass(frozen=True)
class Accepted:
    """The answer to a submission: the same for the same signed trade, however often it comes."""

    submission_id: str
    trade_id: str
    status: str
    created: bool


class TradingService:
    def __init__(
        self,
        ledger: TradeLedgerContract,
        sessions: sessionmaker[Session],
        read_sessions: sessionmaker[Session],
        clock: ChainClock,
    ) -> None:
        self._ledger = ledger
        self._sessions = sessions
        self._read_sessions = read_sessions
        self._clock = clock
        self._limits: tuple[float, TradeLimits] | None = None
        self._limits_lock = threading.Lock()
        self._paused: tuple[float, bool] | None = None
        self._active: dict[str, float] = {}  # address -> when the index last said it is active
        self._paused_lock = threading.Lock()

    @property
    def domain(self) -> Domain:
        """The EIP-712 domain that traders sign in: this chain and this contract."""
        return self._ledger.domain

    def trade_id(self, trade: Trade) -> str:
        """The trade's id, its EIP-712 digest; ValidationError when a term does not fit its type."""
        try:
            return "0x" + trade_digest(self.domain, trade).hex()
        except (EncodingError, ValueError, TypeError, OverflowError) as exc:
            raise errors.ValidationError(f"the trade terms cannot be ABI-encoded: {exc}", field="trade") from exc

    def trade_typed_data(self, trade: Trade) -> dict[str, Any]:
        """The `eth_signTypedData_v4` document of a trade; the nonce as a decimal string (uint256
        does not fit a JSON number)."""
        self.trade_id(trade)  # refuses terms that cannot be signed
        return typed_data(self.domain, "Trade", trade.as_message() | {"nonce": str(trade.nonce)})

    def cancel_typed_data(self, trade_id: str, deadline: int) -> dict[str, Any]:
        return typed_data(self.domain, "CancelTrade", {"tradeId": trade_id, "deadline": deadline})

    def is_paused(self) -> bool:
        """The contract's `paused()`, asked at most every PAUSED_TTL_SECONDS."""
        with self._paused_lock:
            moment = time.monotonic()
            if self._paused is None or moment - self._paused[0] > PAUSED_TTL_SECONDS:
                self._paused = (moment, self._ledger.paused())
            return self._paused[1]

    def submit(self, signed: SignedTrade) -> Accepted:
        (result,) = self.submit_many([signed])
        if isinstance(result, errors.LedgerError):
            raise result
        return result

    def submit_many(self, batch: list[SignedTrade]) -> list[Accepted | errors.LedgerError]:
        """Checks each trade as the contract will, and puts the ones that pass in the outbox, in
        one database transaction. A trade that fails gets its typed error in place and writes
        nothing; the others are not held back by it.

        A trade submitted before gets its first submission back (`created` False), whatever that
        submission's status, even while the contract is paused; a new trade while it is paused
        gets `Paused`."""
        if not batch:
            raise errors.EmptyBatch("a batch needs at least one trade")
        now = self._clock.now()
        limits = self.limits()
        paused = self.is_paused()
        results: list[Accepted | errors.LedgerError | None] = []
        passed: list[tuple[int, str, SignedTrade]] = []
        # The checks read the index and may ask the chain: outside the write transaction, which on
        # SQLite would hold back the relayer and the indexer meanwhile.
        with self._read_sessions() as session:
            statuses: dict[str, ParticipantStatus] = {}
            for signed in batch:
                try:
                    trade_id = self.trade_id(signed.trade)
                except errors.LedgerError as exc:
                    results.append(exc)
                    continue
                existing = outbox.get_submission_by_trade(session, trade_id)
                if existing is not None:
                    results.append(Accepted(existing.id, trade_id, existing.status.value, created=False))
                    continue
                try:
                    if paused:
                        raise errors.Paused("trade recording is paused; submit again once it resumes")
                    self._check(session, signed, trade_id, limits, now, statuses)
                except errors.LedgerError as exc:
                    exc.context.setdefault("trade_id", trade_id)
                    results.append(exc)
                    continue
                passed.append((len(results), trade_id, signed))
                results.append(None)
        if passed:
            with self._sessions.begin() as session:
                for index, trade_id, signed in passed:
                    # Another request may have added the same trade meanwhile: its row is returned.
                    submission, created = outbox.add_submission(session, trade_id, signed.to_json())
                    results[index] = Accepted(submission.id, trade_id, submission.status.value, created)
        return [r for r in results if r is not None]

    def cancel(self, trade_id: str, deadline: int, seller_signature: bytes, buyer_signature: bytes) -> Receipt:
        """Sends a cancellation both parties signed; raises the contract's reason if it refuses."""
        if self.is_paused():
            raise errors.Paused("trade recording is paused; cancel again once it resumes", trade_id=trade_id)
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
        if queries.trade_exists(session, trade_id):
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
        """The index answers for active participants (remembered for ACTIVE_TTL_SECONDS); anything
        else is asked of the chain, which may be ahead of the index (a participant registered a
        block ago). A suspension the index has not seen yet is caught by the contract, and the
        submission is then rejected with `participant_suspended`."""
        moment = time.monotonic()
        seen = self._active.get(address)
        if seen is not None and moment - seen < ACTIVE_TTL_SECONDS:
            return ParticipantStatus.ACTIVE
        indexed = queries.participant_status(session, address)
        if indexed is not None and indexed.value == ParticipantStatus.ACTIVE.value:
            self._active[address] = moment
            return ParticipantStatus.ACTIVE
        self._active.pop(address, None)
        return self._ledger.participant(address).status
