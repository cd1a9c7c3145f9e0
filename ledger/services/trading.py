"""Use cases of traders: submit signed trades and signed cancellations, both into the relayer's
outbox. The relayer is the recorder key's one sender; nothing here sends a transaction.

Each item is checked as the contract will check it, so that what the chain would refuse is refused
at once. The checks that depend on chain state the index may not have yet (a participant suspended
a block ago, a trade cancelled a block ago) read the chain itself: the statuses of every party and
replaced or cancelled trade of a request, in one JSON-RPC batch."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Any

from eth_abi.exceptions import EncodingError
from eth_utils import to_checksum_address
from sqlalchemy.orm import Session, sessionmaker

from ledger import errors
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.domain.trade import (
    ParticipantStatus,
    SignedCancellation,
    SignedTrade,
    Trade,
    TradeLimits,
    TradeStatus,
    check_terms,
)
from ledger.domain.units import ZERO_ID
from ledger.services.clock import ChainClock
from ledger.signing.eip712 import Domain, cancel_trade_digest, trade_digest, typed_data
from ledger.signing.trader import recover_signer
from ledger.store import outbox, queries

LIMITS_TTL_SECONDS = 30.0
# How stale the pre-check's view of the contract's pause may be; the contract stays the authority.
PAUSED_TTL_SECONDS = 1.0


@dataclass(frozen=True)
class Accepted:
    """The answer to a submission: the same for the same signed trade, however often it comes."""

    submission_id: str
    trade_id: str
    status: str
    created: bool


@dataclass(frozen=True)
class CancelRequest:
    """A cancellation as a client sends it: the trade, and both parties' signatures over
    `CancelTrade(tradeId, deadline)`. The parties are the trade's."""

    trade_id: str
    deadline: int
    seller_signature: bytes
    buyer_signature: bytes


@dataclass(frozen=True)
class AcceptedCancellation:
    """The answer to a cancellation: the same for the same signed cancellation, however often."""

    cancellation_id: str
    trade_id: str
    status: str
    created: bool


@dataclass
class _ChainView:
    """The chain's statuses of the parties and trades one request names (see `chain_state`)."""

    participants: dict[str, ParticipantStatus]  # by lower-case address
    trades: dict[str, TradeStatus]  # by lower-case id


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
        checked: list[tuple[int, str, SignedTrade]] = []
        # The checks read the index and ask the chain: outside the write transaction, which on
        # SQLite would hold back the relayer and the indexer meanwhile.
        with self._read_sessions() as session:
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
                    self._check_signed(session, signed, trade_id, limits, now)
                except errors.LedgerError as exc:
                    exc.context.setdefault("trade_id", trade_id)
                    results.append(exc)
                    continue
                checked.append((len(results), trade_id, signed))
                results.append(None)
            passed = self._check_state(session, checked, limits, now, results)
        if passed:
            with self._sessions.begin() as session:
                for index, trade_id, signed in passed:
                    # Another request may have added the same trade meanwhile: its row is returned.
                    submission, created = outbox.add_submission(session, trade_id, signed.to_json())
                    results[index] = Accepted(submission.id, trade_id, submission.status.value, created)
        return [r for r in results if r is not None]

    def cancel(self, request: CancelRequest) -> AcceptedCancellation:
        (result,) = self.cancel_many([request])
        if isinstance(result, errors.LedgerError):
            raise result
        return result

    def cancel_many(self, batch: list[CancelRequest]) -> list[AcceptedCancellation | errors.LedgerError]:
        """Checks each cancellation as the contract will (deadline, the trade recorded and not
        cancelled, amended or on its way to either, its gate open, both signatures, both parties
        active) and puts the ones that pass in the outbox, in one database transaction; the
        relayer sends them in `cancelTrades` batches. A cancellation that fails gets its typed
        error in place and writes nothing.

        The same signed cancellation again gets its first answer back (`created` False)."""
        if not batch:
            raise errors.EmptyBatch("a batch needs at least one cancellation")
        now = self._clock.now()
        limits = self.limits()
        paused = self.is_paused()
        results: list[AcceptedCancellation | errors.LedgerError | None] = []
        checked: list[tuple[int, str, SignedCancellation]] = []
        first: dict[str, int] = {}  # digest -> index of its first item in this request
        repeats: list[tuple[int, int]] = []
        with self._read_sessions() as session:
            trades = queries.trades_by_id(session, [r.trade_id for r in batch])
            live = outbox.live_cancellations(session, trades)
            for request in batch:
                trade_id = request.trade_id.lower()
                digest = "0x" + cancel_trade_digest(self.domain, trade_id, request.deadline).hex()
                existing = outbox.get_cancellation_by_digest(session, digest)
                if existing is not None:
                    results.append(AcceptedCancellation(existing.id, trade_id, existing.status.value, created=False))
                    continue
                if digest in first:  # answered as its first occurrence is
                    repeats.append((len(results), first[digest]))
                    results.append(None)
                    continue
                first[digest] = len(results)
                try:
                    if paused:
                        raise errors.Paused("trade recording is paused; cancel again once it resumes")
                    trade = trades.get(trade_id)
                    if trade is None:
                        raise errors.NotFoundError("no such trade in the index")
                    signed = SignedCancellation(
                        trade_id,
                        trade.seller,
                        trade.buyer,
                        request.deadline,
                        request.seller_signature,
                        request.buyer_signature,
                    )
                    self._check_cancellation(signed, trade, trade_id in live, limits, now, digest)
                except errors.LedgerError as exc:
                    exc.context.setdefault("trade_id", trade_id)
                    results.append(exc)
                    continue
                live.add(trade_id)  # a second cancellation of it in this request is refused
                checked.append((len(results), digest, signed))
                results.append(None)
            passed = []
            if checked:
                view = self._chain_view(
                    [party for _, _, signed in checked for party in (signed.seller, signed.buyer)],
                    [signed.trade_id for _, _, signed in checked],
                )
                for index, digest, signed in checked:
                    try:
                        self._check_chain_trade(view, signed.trade_id)
                        self._check_parties(view, signed.seller, signed.buyer)
                    except errors.LedgerError as exc:
                        exc.context.setdefault("trade_id", signed.trade_id)
                        results[index] = exc
                        continue
                    passed.append((index, digest, signed))
        if passed:
            with self._sessions.begin() as session:
                for index, digest, signed in passed:
                    row, created = outbox.add_cancellation(session, digest, signed.trade_id, signed.to_json())
                    results[index] = AcceptedCancellation(row.id, signed.trade_id, row.status.value, created)
        for index, original in repeats:
            answer = results[original]
            results[index] = replace(answer, created=False) if isinstance(answer, AcceptedCancellation) else answer
        return [r for r in results if r is not None]

    def limits(self) -> TradeLimits:
        with self._limits_lock:
            moment = time.monotonic()
            if self._limits is None or moment - self._limits[0] > LIMITS_TTL_SECONDS:
                self._limits = (moment, self._ledger.trade_limits())
            return self._limits[1]

    def _check_signed(
        self, session: Session, signed: SignedTrade, trade_id: str, limits: TradeLimits, now: int
    ) -> None:
        """The checks of a trade up to its signatures: its terms, not recorded yet, signed by both."""
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

    def _check_state(
        self,
        session: Session,
        checked: list[tuple[int, str, SignedTrade]],
        limits: TradeLimits,
        now: int,
        results: list[Any],
    ) -> list[tuple[int, str, SignedTrade]]:
        """The checks that need chain state, for the trades that passed the others: both parties
        active, and an amendment's replaced trade recorded, of the same parties, its gate open and
        no cancellation of it on its way. Failures go into `results`; returns those that pass."""
        if not checked:
            return []
        replaced = {signed.trade.replaces.lower() for _, _, signed in checked if signed.trade.replaces != ZERO_ID}
        indexed = queries.trades_by_id(session, replaced)
        live = outbox.live_cancellations(session, replaced)
        view = self._chain_view(
            [party for _, _, signed in checked for party in (signed.trade.seller, signed.trade.buyer)], replaced
        )
        passed = []
        for index, trade_id, signed in checked:
            trade = signed.trade
            try:
                self._check_parties(view, trade.seller, trade.buyer)
                if trade.replaces != ZERO_ID:
                    old_id = trade.replaces.lower()
                    old = indexed.get(old_id)
                    self._check_chain_trade(view, old_id)
                    if old_id in live:
                        raise errors.TradeNotActive("the replaced trade has a cancellation on its way", trade_id=old_id)
                    if old is not None:
                        self._check_replaceable(old, trade.seller, trade.buyer, limits, now)
            except errors.LedgerError as exc:
                exc.context.setdefault("trade_id", trade_id)
                results[index] = exc
                continue
            passed.append((index, trade_id, signed))
        return passed

    def _check_cancellation(
        self,
        signed: SignedCancellation,
        trade: Any,
        on_its_way: bool,
        limits: TradeLimits,
        now: int,
        digest: str,
    ) -> None:
        """The checks of `cancelTrade` that the index can answer, in its order; the trade's and
        the parties' statuses on chain are checked after (`_check_chain_trade`, `_check_parties`)."""
        trade_id = signed.trade_id
        if signed.deadline < now:
            raise errors.SignatureExpired("the signatures' deadline has passed", deadline=signed.deadline)
        if on_its_way:
            raise errors.TradeNotActive("a cancellation of this trade is on its way already", trade_id=trade_id)
        self._check_replaceable(trade, signed.seller, signed.buyer, limits, now)
        for party, signature in ((signed.seller, signed.seller_signature), (signed.buyer, signed.buyer_signature)):
            if recover_signer(bytes.fromhex(digest[2:]), signature) != party:
                raise errors.InvalidSignature(
                    "the cancellation is not signed by this party", trade_id=trade_id, expected_signer=party
                )

    @staticmethod
    def _check_replaceable(trade: Any, seller: str, buyer: str, limits: TradeLimits, now: int) -> None:
        """An indexed trade may be cancelled or amended by its own two parties until its gate closes."""
        if trade.status.value != TradeStatus.RECORDED.value:
            raise errors.TradeNotActive(f"the trade is {trade.status.value}", trade_id=trade.trade_id)
        if (seller.lower(), buyer.lower()) != (trade.seller.lower(), trade.buyer.lower()):
            raise errors.PartiesMismatch(
                "the trade is not between these parties", trade_id=trade.trade_id, seller=seller, buyer=buyer
            )
        gate_closed_at = trade.delivery_start - limits.gate_closure_seconds
        if now > gate_closed_at:
            raise errors.GateClosed(
                "gate closure for the trade's delivery start has passed",
                trade_id=trade.trade_id,
                delivery_start=trade.delivery_start,
                gate_closed_at=max(gate_closed_at, 0),
            )

    def _chain_view(self, parties: list[str], trade_ids: Any) -> _ChainView:
        accounts = [to_checksum_address(p) for p in {p.lower(): p for p in parties}.values()]
        participants, trades = self._ledger.chain_state(accounts, [t.lower() for t in trade_ids])
        return _ChainView({a.lower(): status for a, status in participants.items()}, trades)

    @staticmethod
    def _check_chain_trade(view: _ChainView, trade_id: str) -> None:
        """The trade as the chain has it now: a cancellation or amendment the index has not seen
        yet makes it inactive. (One recorded a block ago and not indexed yet passes: its parties
        and gate are the contract's to check.)"""
        status = view.trades.get(trade_id.lower(), TradeStatus.NONE)
        if status is not TradeStatus.RECORDED:
            raise errors.TradeNotActive(f"the trade is {status.value} on chain", trade_id=trade_id, status=status.value)

    @staticmethod
    def _check_parties(view: _ChainView, seller: str, buyer: str) -> None:
        for party in (seller, buyer):
            status = view.participants.get(party.lower(), ParticipantStatus.NONE)
            if status is ParticipantStatus.NONE:
                raise errors.UnknownParticipant("a party is not a registered participant", account=party)
            if status is ParticipantStatus.SUSPENDED:
                raise errors.ParticipantSuspended("a party is suspended", account=party)
