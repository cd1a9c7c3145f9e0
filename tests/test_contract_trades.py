"""TradeLedger on a real node: recording, every rejection (single and batch), cancellation,
amendment, pausing, roles and the participant registry.

Each rejection is one row of `REJECTIONS` (how to break a trade, and the typed error it must
yield); `test_rejected` applies every row to both `recordTrade` and `recordTrades`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from ledger import errors
from ledger.chain.abi import abi_type
from ledger.chain.compiler import compile_contracts
from ledger.chain.node import LocalNode
from ledger.chain.trade_ledger import (
    TRADE_CANCEL_REJECTED_TOPIC,
    TRADE_CANCELLED_TOPIC,
    TRADE_RECORDED_TOPIC,
    TRADE_REJECTED_TOPIC,
)
from ledger.domain.trade import ParticipantKind, ParticipantStatus, SignedTrade, Trade, TradeLimits, TradeStatus
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID
from ledger.signing.trader import countersigned, sign_trade
from tests.support.behaviours import (
    ENTRY_POINTS,
    CancelRequest,
    EntryPoint,
    assert_error,
    block_timestamp,
    cancel_batch,
    cancel_request,
    count_logs,
    events,
    high_s,
    record_batch,
    register,
    role_id,
    status_index,
    stranger,
)
from tests.support.market import Market, deploy_market


@dataclass(frozen=True)
class Parties:
    seller: LocalAccount
    buyer: LocalAccount


@pytest.fixture
def parties(market: Market) -> Parties:
    seller, buyer = register(market, 2)
    return Parties(seller, buyer)


def limits(market: Market) -> TradeLimits:
    return market.ledger("outsider").trade_limits()


def align_down(seconds: int) -> int:
    return seconds // INTERVAL_SECONDS * INTERVAL_SECONDS


def record(market: Market, signed: SignedTrade) -> str:
    market.ledger("recorder").record_trade(signed)
    return market.trade_id(signed.trade)


# --- how to break a trade -------------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    signed: SignedTrade
    replaced: Trade | None = None
    """For an amendment: the trade it names in `replaces`, as recorded."""


Breaker = Callable[[Market, Parties], Broken]


def with_terms(change: Callable[[Market, Trade], dict[str, Any]]) -> Breaker:
    """A trade of the two parties, signed by both, with some terms changed from a valid one."""

    def breaks(m: Market, p: Parties) -> Broken:
        base = m.trade(p.seller, p.buyer)
        return Broken(countersigned(p.seller, p.buyer, m.domain, replace(base, **change(m, base))))

    return breaks


def seller_signature_by_stranger(m: Market, p: Parties) -> Broken:
    trade = m.trade(p.seller, p.buyer)
    return Broken(SignedTrade(trade, sign_trade(stranger(), m.domain, trade), sign_trade(p.buyer, m.domain, trade)))


def buyer_signature_by_stranger(m: Market, p: Parties) -> Broken:
    trade = m.trade(p.seller, p.buyer)
    return Broken(SignedTrade(trade, sign_trade(p.seller, m.domain, trade), sign_trade(stranger(), m.domain, trade)))


def signatures_swapped(m: Market, p: Parties) -> Broken:
    signed = m.signed(p.seller, p.buyer)
    return Broken(SignedTrade(signed.trade, signed.buyer_signature, signed.seller_signature))


def seller_signature_high_s(m: Market, p: Parties) -> Broken:
    signed = m.signed(p.seller, p.buyer)
    return Broken(replace(signed, seller_signature=high_s(signed.seller_signature)))


def buyer_signature_high_s(m: Market, p: Parties) -> Broken:
    signed = m.signed(p.seller, p.buyer)
    return Broken(replace(signed, buyer_signature=high_s(signed.buyer_signature)))


def signed_for_domain(change: Callable[[Market], dict[str, Any]]) -> Breaker:
    """Both parties sign the trade under another EIP-712 domain."""

    def breaks(m: Market, p: Parties) -> Broken:
        return Broken(countersigned(p.seller, p.buyer, replace(m.domain, **change(m)), m.trade(p.seller, p.buyer)))

    return breaks


def replayed(m: Market, p: Parties) -> Broken:
    signed = m.signed(p.seller, p.buyer)
    record(m, signed)
    return Broken(signed)


def replayed_after_cancellation(m: Market, p: Parties) -> Broken:
    signed = m.signed(p.seller, p.buyer)
    record(m, signed)
    cancel_request(m, signed.trade, p.seller, p.buyer).submit(m)
    return Broken(signed)


def unregistered_seller(m: Market, p: Parties) -> Broken:
    return Broken(m.signed(stranger(), p.buyer))


def unregistered_buyer(m: Market, p: Parties) -> Broken:
    return Broken(m.signed(p.seller, stranger()))


def suspended(side: str) -> Breaker:
    def breaks(m: Market, p: Parties) -> Broken:
        m.ledger("operator").suspend_participant(getattr(p, side).address)
        return Broken(m.signed(p.seller, p.buyer))

    return breaks


def self_trade(m: Market, p: Parties) -> Broken:
    return Broken(m.signed(p.seller, p.seller))


def amends_unknown_trade(m: Market, p: Parties) -> Broken:
    return Broken(m.signed(p.seller, p.buyer, replaces="0x" + secrets.token_hex(32)))


def amends(prepare: Callable[[Market, Parties, SignedTrade], None], old_parties: str = "same") -> Breaker:
    """Records a trade (between the parties, or as `old_parties` says), runs `prepare`, then
    signs an amendment of it by the two parties."""

    def breaks(m: Market, p: Parties) -> Broken:
        if old_parties == "other buyer":
            old = m.signed(p.seller, register(m, 1)[0])
        else:
            old = m.signed(p.buyer, p.seller) if old_parties == "swapped" else m.signed(p.seller, p.buyer)
        old_id = record(m, old)
        prepare(m, p, old)
        return Broken(m.signed(p.seller, p.buyer, replaces=old_id), replaced=old.trade)

    return breaks


def nothing(m: Market, p: Parties, old: SignedTrade) -> None:
    pass


def cancel_it(m: Market, p: Parties, old: SignedTrade) -> None:
    cancel_request(m, old.trade, p.seller, p.buyer).submit(m)


def amend_it(m: Market, p: Parties, old: SignedTrade) -> None:
    record(m, m.signed(p.seller, p.buyer, replaces=m.trade_id(old.trade)))


def close_its_gate(m: Market, p: Parties, old: SignedTrade) -> None:
    gate_closed_at = old.trade.delivery_start - limits(m).gate_closure_seconds
    m.advance(gate_closed_at - m.now() + 1)


# --- what the contract must answer ----------------------------------------------------------------

Context = Callable[[Market, Broken, int], dict[str, Any]]


def trade_id(m: Market, b: Broken) -> str:
    return m.trade_id(b.signed.trade)


def invalid_signature(side: str) -> Context:
    return lambda m, b, at: {"trade_id": trade_id(m, b), "expected_signer": getattr(b.signed.trade, side)}


def participant_is(side: str) -> Context:
    return lambda m, b, at: {"trade_id": trade_id(m, b), "account": getattr(b.signed.trade, side)}


def window(m: Market, b: Broken, at: int) -> dict[str, Any]:
    t = b.signed.trade
    return {"trade_id": trade_id(m, b), "delivery_start": t.delivery_start, "delivery_end": t.delivery_end}


def gate_closed(m: Market, b: Broken, at: int) -> dict[str, Any]:
    t = b.signed.trade
    gate_closed_at = max(t.delivery_start - limits(m).gate_closure_seconds, 0)
    return {"trade_id": trade_id(m, b), "delivery_start": t.delivery_start, "gate_closed_at": gate_closed_at}


def beyond_horizon(m: Market, b: Broken, at: int) -> dict[str, Any]:
    horizon_end = at + limits(m).horizon_seconds
    return {"trade_id": trade_id(m, b), "delivery_end": b.signed.trade.delivery_end, "horizon_end": horizon_end}


def energy_bounds(m: Market, b: Broken, at: int) -> dict[str, Any]:
    return {
        "trade_id": trade_id(m, b),
        "energy_per_interval_wh": b.signed.trade.energy_per_interval_wh,
        "max_energy_per_interval_wh": limits(m).max_energy_per_interval_wh,
    }


def price_bounds(m: Market, b: Broken, at: int) -> dict[str, Any]:
    return {
        "trade_id": trade_id(m, b),
        "price_minor_per_mwh": b.signed.trade.price_minor_per_mwh,
        "max_price_minor_per_mwh": limits(m).max_price_minor_per_mwh,
    }


def replaced_not_active(status: TradeStatus) -> Context:
    return lambda m, b, at: {"trade_id": b.signed.trade.replaces, "status": status_index(status)}


def replaced_parties_mismatch(m: Market, b: Broken, at: int) -> dict[str, Any]:
    t = b.signed.trade
    return {"trade_id": t.replaces, "seller": t.seller, "buyer": t.buyer}


def replaced_gate_closed(m: Market, b: Broken, at: int) -> dict[str, Any]:
    assert b.replaced is not None
    start = b.replaced.delivery_start
    return {
        "trade_id": b.signed.trade.replaces,
        "delivery_start": start,
        "gate_closed_at": start - limits(m).gate_closure_seconds,
    }


@dataclass(frozen=True)
class Rejection:
    name: str
    breaks: Breaker
    error: type[errors.LedgerError]
    code: str
    solidity_error: str
    context: Context


def _bad_signature(name: str, breaks: Breaker, side: str = "seller") -> Rejection:
    return Rejection(
        name,
        breaks,
        errors.InvalidSignature,
        "invalid_signature",
        "TradeLedgerInvalidSignature",
        invalid_signature(side),
    )


REJECTIONS = [
    _bad_signature("seller signature by someone else", seller_signature_by_stranger),
    _bad_signature("buyer signature by someone else", buyer_signature_by_stranger, "buyer"),
    _bad_signature("signatures swapped", signatures_swapped),
    # The compact (r, vs) form has no room for a high s: it decodes to another s and signer.
    _bad_signature("malleable high-s seller signature", seller_signature_high_s),
    _bad_signature("malleable high-s buyer signature", buyer_signature_high_s, "buyer"),
    _bad_signature("signed for another chain id", signed_for_domain(lambda m: {"chain_id": m.chain_id + 1})),
    _bad_signature(
        "signed for another verifying contract",
        signed_for_domain(lambda m: {"verifying_contract": stranger().address}),
    ),
    _bad_signature("signed for another domain version", signed_for_domain(lambda m: {"version": "2"})),
    Rejection(
        "expired deadline",
        with_terms(lambda m, t: {"deadline": m.now() - 1}),
        errors.SignatureExpired,
        "signature_expired",
        "TradeLedgerSignatureExpired",
        lambda m, b, at: {"trade_id": trade_id(m, b), "deadline": b.signed.trade.deadline},
    ),
    Rejection(
        "replayed",
        replayed,
        errors.DuplicateTrade,
        "duplicate_trade",
        "TradeLedgerDuplicateTrade",
        lambda m, b, at: {"trade_id": trade_id(m, b)},
    ),
    Rejection(
        "replayed after cancellation",
        replayed_after_cancellation,
        errors.DuplicateTrade,
        "duplicate_trade",
        "TradeLedgerDuplicateTrade",
        lambda m, b, at: {"trade_id": trade_id(m, b)},
    ),
    Rejection(
        "unregistered seller",
        unregistered_seller,
        errors.UnknownParticipant,
        "unknown_participant",
        "TradeLedgerParticipantUnknown",
        participant_is("seller"),
    ),
    Rejection(
        "unregistered buyer",
        unregistered_buyer,
        errors.UnknownParticipant,
        "unknown_participant",
        "TradeLedgerParticipantUnknown",
        participant_is("buyer"),
    ),
    Rejection(
        "suspended seller",
        suspended("seller"),
        errors.ParticipantSuspended,
        "participant_suspended",
        "TradeLedgerParticipantSuspended",
        participant_is("seller"),
    ),
    Rejection(
        "suspended buyer",
        suspended("buyer"),
        errors.ParticipantSuspended,
        "participant_suspended",
        "TradeLedgerParticipantSuspended",
        participant_is("buyer"),
    ),
    Rejection(
        "seller is buyer", self_trade, errors.SelfTrade, "self_trade", "TradeLedgerSelfTrade", participant_is("seller")
    ),
    Rejection(
        "misaligned start",
        with_terms(lambda m, t: {"delivery_start": t.delivery_start + 1}),
        errors.MisalignedInterval,
        "misaligned_interval",
        "TradeLedgerMisalignedInterval",
        window,
    ),
    Rejection(
        "misaligned end",
        with_terms(lambda m, t: {"delivery_end": t.delivery_end - 1}),
        errors.MisalignedInterval,
        "misaligned_interval",
        "TradeLedgerMisalignedInterval",
        window,
    ),
    Rejection(
        "empty window (end == start)",
        with_terms(lambda m, t: {"delivery_end": t.delivery_start}),
        errors.EmptyDeliveryWindow,
        "empty_delivery_window",
        "TradeLedgerEmptyDeliveryWindow",
        window,
    ),
    Rejection(
        "end before start",
        with_terms(lambda m, t: {"delivery_end": t.delivery_start - INTERVAL_SECONDS}),
        errors.EmptyDeliveryWindow,
        "empty_delivery_window",
        "TradeLedgerEmptyDeliveryWindow",
        window,
    ),
    Rejection(
        "gate closed (delivery starts too soon)",
        with_terms(lambda m, t: {"delivery_start": align_down(m.now() + limits(m).gate_closure_seconds - 1)}),
        errors.GateClosed,
        "gate_closed",
        "TradeLedgerGateClosed",
        gate_closed,
    ),
    Rejection(
        "gate closed (delivery at the epoch, gate closed at 0)",
        with_terms(lambda m, t: {"delivery_start": 0, "delivery_end": INTERVAL_SECONDS}),
        errors.GateClosed,
        "gate_closed",
        "TradeLedgerGateClosed",
        gate_closed,
    ),
    Rejection(
        "beyond horizon",
        with_terms(
            lambda m, t: {"delivery_end": align_down(m.now() + limits(m).horizon_seconds) + 4 * INTERVAL_SECONDS}
        ),
        errors.BeyondHorizon,
        "beyond_horizon",
        "TradeLedgerBeyondHorizon",
        beyond_horizon,
    ),
    Rejection(
        "zero energy",
        with_terms(lambda m, t: {"energy_per_interval_wh": 0}),
        errors.EnergyOutOfBounds,
        "energy_out_of_bounds",
        "TradeLedgerEnergyOutOfBounds",
        energy_bounds,
    ),
    Rejection(
        "energy above max",
        with_terms(lambda m, t: {"energy_per_interval_wh": limits(m).max_energy_per_interval_wh + 1}),
        errors.EnergyOutOfBounds,
        "energy_out_of_bounds",
        "TradeLedgerEnergyOutOfBounds",
        energy_bounds,
    ),
    Rejection(
        "zero price",
        with_terms(lambda m, t: {"price_minor_per_mwh": 0}),
        errors.PriceOutOfBounds,
        "price_out_of_bounds",
        "TradeLedgerPriceOutOfBounds",
        price_bounds,
    ),
    Rejection(
        "price above max",
        with_terms(lambda m, t: {"price_minor_per_mwh": limits(m).max_price_minor_per_mwh + 1}),
        errors.PriceOutOfBounds,
        "price_out_of_bounds",
        "TradeLedgerPriceOutOfBounds",
        price_bounds,
    ),
    Rejection(
        "amends an unknown trade",
        amends_unknown_trade,
        errors.TradeNotActive,
        "trade_not_active",
        "TradeLedgerTradeNotActive",
        replaced_not_active(TradeStatus.NONE),
    ),
    Rejection(
        "amends a cancelled trade",
        amends(cancel_it),
        errors.TradeNotActive,
        "trade_not_active",
        "TradeLedgerTradeNotActive",
        replaced_not_active(TradeStatus.CANCELLED),
    ),
    Rejection(
        "amends an amended trade",
        amends(amend_it),
        errors.TradeNotActive,
        "trade_not_active",
        "TradeLedgerTradeNotActive",
        replaced_not_active(TradeStatus.AMENDED),
    ),
    Rejection(
        "amends a trade with another buyer",
        amends(nothing, old_parties="other buyer"),
        errors.PartiesMismatch,
        "parties_mismatch",
        "TradeLedgerPartiesMismatch",
        replaced_parties_mismatch,
    ),
    Rejection(
        "amends a trade with seller and buyer swapped",
        amends(nothing, old_parties="swapped"),
        errors.PartiesMismatch,
        "parties_mismatch",
        "TradeLedgerPartiesMismatch",
        replaced_parties_mismatch,
    ),
    Rejection(
        "amends after the old trade's gate closure",
        amends(close_its_gate),
        errors.GateClosed,
        "gate_closed",
        "TradeLedgerGateClosed",
        replaced_gate_closed,
    ),
]


@pytest.fixture(scope="module")
def shared_market(node: LocalNode) -> Market:
    return deploy_market(node.rpc_url, node.chain_id)


@pytest.fixture
def table_market(shared_market: Market) -> Market:
    """One deployment for all rows of `REJECTIONS` on a node: a row only touches participants it
    registers itself and trades with fresh nonces, and leaves the pause flag and the limits
    alone, so rows cannot see each other; a deployment per row would double the run time. The
    nonces are re-read because the other tests' markets send from the same dev accounts."""
    for sender in shared_market.senders.values():
        sender.nonces.resync()
    return shared_market


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
@pytest.mark.parametrize("rejection", REJECTIONS, ids=lambda r: r.name)
def test_rejected(table_market: Market, rejection: Rejection, entry: EntryPoint) -> None:
    assert_rejected(table_market, rejection, entry)


def assert_rejected(market: Market, rejection: Rejection, entry: EntryPoint) -> None:
    """The behaviour: a trade broken as the row says is refused through `entry` with the row's error."""
    broken = rejection.breaks(market, Parties(*register(market, 2)))
    refusal = entry.refuse(market, broken.signed)
    assert_error(
        refusal.error,
        rejection.error,
        rejection.code,
        rejection.context(market, broken, refusal.at),
        solidity_error=rejection.solidity_error,
    )


# --- the order of the checks ----------------------------------------------------------------------
# ITradeLedger documents the order: deadline, seller != buyer, alignment, non-empty window, gate
# closure, horizon, energy, price, not yet recorded, seller signature, buyer signature, seller
# active, buyer active, then the replaced trade (status, parties, gate closure). Each row breaks
# two neighbours in that order; the first must name the refusal. Neighbours suffice: if every
# check runs before the next one, they run in the documented order.


def _soon(m: Market) -> int:
    return align_down(m.now() + limits(m).gate_closure_seconds - 1)


def _far(m: Market) -> int:
    return align_down(m.now() + limits(m).horizon_seconds) + 4 * INTERVAL_SECONDS


def duplicate_with_bad_seller_signature(m: Market, p: Parties) -> Broken:
    signed = m.signed(p.seller, p.buyer)
    record(m, signed)
    return Broken(replace(signed, seller_signature=sign_trade(stranger(), m.domain, signed.trade)))


def both_signatures_by_strangers(m: Market, p: Parties) -> Broken:
    trade = m.trade(p.seller, p.buyer)
    return Broken(SignedTrade(trade, sign_trade(stranger(), m.domain, trade), sign_trade(stranger(), m.domain, trade)))


def unregistered_seller_and_bad_buyer_signature(m: Market, p: Parties) -> Broken:
    seller = stranger()
    trade = m.trade(seller, p.buyer)
    return Broken(SignedTrade(trade, sign_trade(seller, m.domain, trade), sign_trade(stranger(), m.domain, trade)))


def both_unregistered(m: Market, p: Parties) -> Broken:
    return Broken(m.signed(stranger(), stranger()))


def unregistered_buyer_amending_an_unknown_trade(m: Market, p: Parties) -> Broken:
    return Broken(m.signed(p.seller, stranger(), replaces="0x" + secrets.token_hex(32)))


def cancel_swapped(m: Market, p: Parties, old: SignedTrade) -> None:
    cancel_request(m, old.trade, p.buyer, p.seller).submit(m)


def _first(name: str, breaks: Breaker, like: str, context: Context | None = None) -> Rejection:
    """A row whose expected refusal is the one `REJECTIONS` names `like`."""
    row = next(r for r in REJECTIONS if r.name == like)
    return replace(row, name=name, breaks=breaks, context=context or row.context)


PRECEDENCE = [
    _first(
        "deadline before seller is buyer",
        with_terms(lambda m, t: {"deadline": m.now() - 1, "buyer": t.seller}),
        "expired deadline",
    ),
    _first(
        "seller is buyer before alignment",
        with_terms(lambda m, t: {"buyer": t.seller, "delivery_start": t.delivery_start + 1}),
        "seller is buyer",
    ),
    _first(
        "alignment before window",
        with_terms(lambda m, t: {"delivery_start": t.delivery_start + 1, "delivery_end": t.delivery_start + 1}),
        "misaligned start",
    ),
    _first(
        "window before gate closure",
        with_terms(lambda m, t: {"delivery_start": _soon(m), "delivery_end": _soon(m) - INTERVAL_SECONDS}),
        "end before start",
    ),
    _first(
        "gate closure before horizon",
        with_terms(lambda m, t: {"delivery_start": _soon(m), "delivery_end": _far(m)}),
        "gate closed (delivery starts too soon)",
    ),
    _first(
        "horizon before energy",
        with_terms(lambda m, t: {"delivery_end": _far(m), "energy_per_interval_wh": 0}),
        "beyond horizon",
    ),
    _first(
        "energy before price",
        with_terms(lambda m, t: {"energy_per_interval_wh": 0, "price_minor_per_mwh": 0}),
        "zero energy",
    ),
    _first("duplicate before seller signature", duplicate_with_bad_seller_signature, "replayed"),
    _first("seller signature before buyer signature", both_signatures_by_strangers, "seller signature by someone else"),
    _first(
        "buyer signature before seller registration",
        unregistered_seller_and_bad_buyer_signature,
        "buyer signature by someone else",
    ),
    _first("seller registration before buyer registration", both_unregistered, "unregistered seller"),
    _first(
        "buyer registration before the replaced trade",
        unregistered_buyer_amending_an_unknown_trade,
        "unregistered buyer",
    ),
    _first(
        "replaced trade's status before its parties",
        amends(cancel_swapped, old_parties="swapped"),
        "amends a cancelled trade",
    ),
    _first(
        "replaced trade's parties before its gate closure",
        amends(close_its_gate, old_parties="swapped"),
        "amends a trade with seller and buyer swapped",
    ),
]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
@pytest.mark.parametrize("row", PRECEDENCE, ids=lambda r: r.name)
def test_the_first_failing_check_names_the_refusal(table_market: Market, row: Rejection, entry: EntryPoint) -> None:
    assert_rejected(table_market, row, entry)


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_price_before_duplicate(market: Market, parties: Parties, entry: EntryPoint) -> None:
    """A recorded trade whose price the operator has since put above the maximum: both checks
    fail when it is sent again, and the price names the refusal."""
    start = align_down(market.now() + limits(market).gate_closure_seconds) + 8 * INTERVAL_SECONDS
    # Twice the usual price, so that lowering the maximum below it leaves the usual trades alone.
    price = 2 * market.trade(parties.seller, parties.buyer).price_minor_per_mwh
    signed = market.signed(
        parties.seller, parties.buyer, delivery_start=start, delivery_end=start + 3600, price_minor_per_mwh=price
    )
    record(market, signed)
    market.ledger("operator").set_trade_limits(replace(limits(market), max_price_minor_per_mwh=price - 1))

    refusal = entry.refuse(market, signed)
    context = {
        "trade_id": market.trade_id(signed.trade),
        "price_minor_per_mwh": price,
        "max_price_minor_per_mwh": price - 1,
    }
    assert_error(
        refusal.error,
        errors.PriceOutOfBounds,
        "price_out_of_bounds",
        context,
        solidity_error="TradeLedgerPriceOutOfBounds",
    )


def test_rejections_cover_every_trade_error_of_the_abi() -> None:
    """Every per-trade custom error of the contract has at least one row in the table (the
    registry's, the role's and the pause's errors are refusals of the whole call, tested below)."""
    whole_call = {"TradeLedgerInvalidLimits", "TradeLedgerEmptyBatch"}
    abi = compile_contracts()["TradeLedger"].abi
    trade_errors = {i["name"] for i in abi if i["type"] == "error" and i["name"].startswith("TradeLedger")}
    assert trade_errors - whole_call == {r.solidity_error for r in REJECTIONS}


# --- refusals of the whole call -------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
@pytest.mark.parametrize("role", ["outsider", "admin", "operator", "pauser"])
def test_only_the_recorder_records(market: Market, parties: Parties, entry: EntryPoint, role: str) -> None:
    signed = market.signed(parties.seller, parties.buyer)
    with pytest.raises(errors.LedgerError) as refused:
        entry.submit(market, role, signed)
    context = {"account": market.senders[role].address, "needed_role": role_id("recorder")}
    assert_error(
        refused.value, errors.Unauthorized, "unauthorized", context, solidity_error="AccessControlUnauthorizedAccount"
    )
    assert market.ledger("outsider").trade_status(market.trade_id(signed.trade)) is TradeStatus.NONE


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_pause_refuses_recording_until_unpaused(market: Market, parties: Parties, entry: EntryPoint) -> None:
    pauser = market.ledger("pauser")
    signed = market.signed(parties.seller, parties.buyer)

    paused = pauser.pause()
    assert events(market, paused, "Paused") == [{"account": pauser.sender.address}]
    assert pauser.paused()
    with pytest.raises(errors.LedgerError) as refused:
        entry.submit(market, "recorder", signed)
    assert_error(refused.value, errors.Paused, "paused", {}, solidity_error="EnforcedPause")

    unpaused = pauser.unpause()
    assert events(market, unpaused, "Unpaused") == [{"account": pauser.sender.address}]
    entry.submit(market, "recorder", signed)
    assert pauser.trade_status(market.trade_id(signed.trade)) is TradeStatus.RECORDED


def test_pausing_is_the_pausers_alone(market: Market) -> None:
    for role in ("admin", "operator", "recorder", "outsider"):
        for action in ("pause", "unpause"):
            with pytest.raises(errors.LedgerError) as refused:
                getattr(market.ledger(role), action)()
            context = {"account": market.senders[role].address, "needed_role": role_id("pauser")}
            assert_error(
                refused.value,
                errors.Unauthorized,
                "unauthorized",
                context,
                solidity_error="AccessControlUnauthorizedAccount",
            )


def test_unpause_when_not_paused_is_refused(market: Market) -> None:
    with pytest.raises(errors.LedgerError) as refused:
        market.ledger("pauser").unpause()
    assert_error(refused.value, errors.ConflictError, "conflict", {}, solidity_error="ExpectedPause")


def test_empty_batch_is_refused(market: Market) -> None:
    with pytest.raises(errors.LedgerError) as refused:
        record_batch(market, [])
    assert_error(refused.value, errors.EmptyBatch, "empty_batch", {}, solidity_error="TradeLedgerEmptyBatch")


# --- batches --------------------------------------------------------------------------------------


def test_replay_within_one_batch_records_the_first_copy(market: Market, parties: Parties) -> None:
    twice = market.signed(parties.seller, parties.buyer)
    other = market.signed(parties.seller, parties.buyer)
    batch = [twice, other, twice]
    outcome = record_batch(market, batch)

    twice_id, other_id = market.trade_id(twice.trade), market.trade_id(other.trade)
    assert set(outcome.recorded) == {twice_id, other_id}
    assert list(outcome.rejected) == [twice_id]
    assert_error(
        outcome.rejected[twice_id],
        errors.DuplicateTrade,
        "duplicate_trade",
        {"trade_id": twice_id},
        solidity_error="TradeLedgerDuplicateTrade",
    )
    recorded_logs = count_logs(market, outcome.receipt, "TradeRecorded")
    rejected_logs = count_logs(market, outcome.receipt, "TradeRejected")
    assert (recorded_logs, rejected_logs) == (2, 1)
    assert len(outcome.recorded) + len(outcome.rejected) == len(batch)
    # The first copy stands: its event carries the first log index of the batch.
    assert outcome.recorded[twice_id] < outcome.recorded[other_id]


def test_batch_outcome_reports_every_rejected_copy(market: Market, parties: Parties) -> None:
    expired = market.signed(parties.seller, parties.buyer, deadline=market.now() - 1)
    good = market.signed(parties.seller, parties.buyer)
    batch = [expired, good, expired]
    outcome = record_batch(market, batch)

    assert count_logs(market, outcome.receipt, "TradeRejected") == 2
    assert len(outcome.recorded) + len(outcome.rejections) == len(batch)


def test_batch_outcome_reads_the_abis_topics(market: Market) -> None:
    """`batch_outcome` and `cancel_outcome` recognise the logs by topics spelled out by hand: they
    must be the ABI's."""

    def topic(name: str) -> str:
        event = next(i for i in market.abi if i["type"] == "event" and i["name"] == name)
        return "0x" + keccak(text=f"{name}({','.join(abi_type(i) for i in event['inputs'])})").hex()

    assert (topic("TradeRecorded"), topic("TradeRejected")) == (TRADE_RECORDED_TOPIC, TRADE_REJECTED_TOPIC)
    assert (topic("TradeCancelled"), topic("TradeCancelRejected")) == (
        TRADE_CANCELLED_TOPIC,
        TRADE_CANCEL_REJECTED_TOPIC,
    )


def test_batch_costs_less_gas_per_trade_than_single_calls(market: Market, parties: Parties) -> None:
    """Every single call pays the 21,000 gas of a transaction and the cold reads of the role,
    the pause flag and the limits; a batch pays them once."""
    size = 10
    single = market.ledger("recorder").record_trade(market.signed(parties.seller, parties.buyer))
    batch = record_batch(market, [market.signed(parties.seller, parties.buyer) for _ in range(size)])

    assert len(batch.recorded) == size
    transaction_base_gas = 21_000
    assert batch.receipt.gas_used < size * single.gas_used - (size - 1) * transaction_base_gas


def test_the_relayers_fixed_batch_gas_covers_the_costliest_trades(market: Market) -> None:
    """`sign_record_trades` signs a fixed gas limit per trade instead of estimating. The costliest
    trade is an amendment by two parties no earlier trade of the batch touched (cold slots, two
    writes, two events): a batch of those must still fit."""
    size = 8
    people = register(market, 2 * size)
    pairs = [(people[2 * i], people[2 * i + 1]) for i in range(size)]
    old = [market.signed(seller, buyer) for seller, buyer in pairs]
    assert len(record_batch(market, old).recorded) == size
    amendments = [
        market.signed(seller, buyer, replaces=market.trade_id(o.trade))
        for (seller, buyer), o in zip(pairs, old, strict=True)
    ]

    outcome = record_batch(market, amendments)

    assert (len(outcome.recorded), outcome.rejected) == (size, {})
    assert count_logs(market, outcome.receipt, "TradeCancelled") == size


# --- recording ------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_recorded_event_carries_every_signed_term(market: Market, parties: Parties, entry: EntryPoint) -> None:
    signed = market.signed(parties.seller, parties.buyer)
    receipt = entry.submit(market, "recorder", signed)
    tid = market.trade_id(signed.trade)

    (recorded,) = events(market, receipt, "TradeRecorded")
    t = signed.trade
    assert recorded == {
        "tradeId": tid,
        "seller": t.seller,
        "buyer": t.buyer,
        "deliveryStart": t.delivery_start,
        "deliveryEnd": t.delivery_end,
        "energyPerIntervalWh": t.energy_per_interval_wh,
        "priceMinorPerMWh": t.price_minor_per_mwh,
        "nonce": t.nonce,
        "deadline": t.deadline,
        "replaces": t.replaces,
    }
    assert market.ledger("outsider").trade_status(tid) is TradeStatus.RECORDED
    assert events(market, receipt, "TradeCancelled") == []


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_time_bounds_are_inclusive(market: Market, parties: Parties, offset: int) -> None:
    """Trades exactly on the deadline, on gate closure and on the horizon are recorded in a block
    at `at`; one second later the first two are refused, one second earlier the last one. The
    energy and price maxima are accepted too. The same bounds `check_terms` applies."""
    lim, (seller, buyer) = limits(market), (parties.seller, parties.buyer)
    on_gate = align_down(market.now() + lim.gate_closure_seconds) + 2 * INTERVAL_SECONDS
    at = on_gate - lim.gate_closure_seconds
    later = on_gate + INTERVAL_SECONDS
    on_horizon = at + lim.horizon_seconds
    assert on_horizon % INTERVAL_SECONDS == 0, "the limits put the horizon off the interval grid"
    on_deadline = market.signed(seller, buyer, delivery_start=later, delivery_end=later + 3600, deadline=at)
    on_gate_closure = market.signed(seller, buyer, delivery_start=on_gate, delivery_end=on_gate + 3600)
    on_horizon_end = market.signed(seller, buyer, delivery_start=later, delivery_end=on_horizon)
    at_maxima = market.signed(
        seller,
        buyer,
        delivery_start=later,
        delivery_end=later + 3600,
        energy_per_interval_wh=lim.max_energy_per_interval_wh,
        price_minor_per_mwh=lim.max_price_minor_per_mwh,
    )
    batch = [on_deadline, on_gate_closure, on_horizon_end, at_maxima]
    ids = [market.trade_id(s.trade) for s in batch]

    market.rpc.call("evm_setNextBlockTimestamp", hex(at + offset))
    outcome = record_batch(market, batch)

    assert block_timestamp(market, outcome.receipt.block_number) == at + offset
    expected: dict[str, tuple[type[errors.LedgerError], str, str, dict[str, Any]]] = {}
    if offset == 1:
        expected[ids[0]] = (
            errors.SignatureExpired,
            "signature_expired",
            "TradeLedgerSignatureExpired",
            {"trade_id": ids[0], "deadline": at},
        )
        expected[ids[1]] = (
            errors.GateClosed,
            "gate_closed",
            "TradeLedgerGateClosed",
            {"trade_id": ids[1], "delivery_start": on_gate, "gate_closed_at": at},
        )
    if offset == -1:
        expected[ids[2]] = (
            errors.BeyondHorizon,
            "beyond_horizon",
            "TradeLedgerBeyondHorizon",
            {"trade_id": ids[2], "delivery_end": on_horizon, "horizon_end": at - 1 + lim.horizon_seconds},
        )
    assert set(outcome.recorded) == set(ids) - set(expected)
    assert set(outcome.rejected) == set(expected)
    for i, (cls, code, solidity_error, context) in expected.items():
        assert_error(outcome.rejected[i], cls, code, context, solidity_error=solidity_error)


# --- cancellation ---------------------------------------------------------------------------------


@pytest.fixture
def recorded(market: Market, parties: Parties) -> SignedTrade:
    signed = market.signed(parties.seller, parties.buyer)
    record(market, signed)
    return signed


def test_cancel_signed_by_both_parties(market: Market, parties: Parties, recorded: SignedTrade) -> None:
    request = cancel_request(market, recorded.trade, parties.seller, parties.buyer)
    receipt = request.submit(market)

    assert events(market, receipt, "TradeCancelled") == [{"tradeId": request.trade_id, "replacedBy": ZERO_ID}]
    assert market.ledger("outsider").trade_status(request.trade_id) is TradeStatus.CANCELLED


CancelBreaker = Callable[[Market, Parties, SignedTrade], CancelRequest]
CancelContext = Callable[[Market, CancelRequest], dict[str, Any]]


@dataclass(frozen=True)
class CancelRefusal:
    name: str
    breaks: CancelBreaker
    error: type[errors.LedgerError]
    code: str
    solidity_error: str
    context: CancelContext


def _cancel(m: Market, p: Parties, r: SignedTrade, **changes: Any) -> CancelRequest:
    return replace(cancel_request(m, r.trade, p.seller, p.buyer), **changes)


def _cancelled_twice(m: Market, p: Parties, r: SignedTrade) -> CancelRequest:
    _cancel(m, p, r).submit(m)
    return _cancel(m, p, r)


def _cancel_amended(m: Market, p: Parties, r: SignedTrade) -> CancelRequest:
    record(m, m.signed(p.seller, p.buyer, replaces=m.trade_id(r.trade)))
    return _cancel(m, p, r)


def _cancel_after_gate_closure(m: Market, p: Parties, r: SignedTrade) -> CancelRequest:
    close_its_gate(m, p, r)
    return _cancel(m, p, r)


def _cancel_naming_another_buyer(m: Market, p: Parties, r: SignedTrade) -> CancelRequest:
    other = register(m, 1)[0]
    return _cancel(m, p, r, trade=replace(r.trade, buyer=other.address), buyer_signer=other)


def _cancel_swapped(m: Market, p: Parties, r: SignedTrade) -> CancelRequest:
    swapped = replace(r.trade, seller=r.trade.buyer, buyer=r.trade.seller)
    return _cancel(m, p, r, trade=swapped, seller_signer=p.buyer, buyer_signer=p.seller)


def _cancel_unknown(m: Market, p: Parties, r: SignedTrade) -> CancelRequest:
    never_recorded = m.trade(p.seller, p.buyer)
    return cancel_request(m, never_recorded, p.seller, p.buyer)


def _cancel_with_trade_signature(m: Market, p: Parties, r: SignedTrade) -> CancelRequest:
    """The seller's signature of the trade itself is no consent to cancel it."""
    return _cancel(m, p, r, seller_signature=r.seller_signature)


def _cancel_while_paused(m: Market, p: Parties, r: SignedTrade) -> CancelRequest:
    m.ledger("pauser").pause()
    return _cancel(m, p, r)


def _cancel_by_suspended_party(m: Market, p: Parties, r: SignedTrade) -> CancelRequest:
    m.ledger("operator").suspend_participant(p.seller.address)
    return _cancel(m, p, r)


def _cancel_not_active(status: TradeStatus) -> CancelContext:
    return lambda m, c: {"trade_id": c.trade_id, "status": status_index(status)}


def _cancel_bad_signature(side: str) -> CancelContext:
    return lambda m, c: {"trade_id": c.trade_id, "expected_signer": getattr(c.trade, side)}


CANCEL_REFUSALS = [
    CancelRefusal(
        "seller signature by someone else",
        lambda m, p, r: _cancel(m, p, r, seller_signer=stranger()),
        errors.InvalidSignature,
        "invalid_signature",
        "TradeLedgerInvalidSignature",
        _cancel_bad_signature("seller"),
    ),
    CancelRefusal(
        "buyer signature by someone else",
        lambda m, p, r: _cancel(m, p, r, buyer_signer=stranger()),
        errors.InvalidSignature,
        "invalid_signature",
        "TradeLedgerInvalidSignature",
        _cancel_bad_signature("buyer"),
    ),
    CancelRefusal(
        "seller signed the trade, not its cancellation",
        _cancel_with_trade_signature,
        errors.InvalidSignature,
        "invalid_signature",
        "TradeLedgerInvalidSignature",
        _cancel_bad_signature("seller"),
    ),
    CancelRefusal(
        "expired",
        lambda m, p, r: _cancel(m, p, r, deadline=m.now() - 1),
        errors.SignatureExpired,
        "signature_expired",
        "TradeLedgerSignatureExpired",
        lambda m, c: {"trade_id": c.trade_id, "deadline": c.deadline},
    ),
    CancelRefusal(
        "after gate closure",
        _cancel_after_gate_closure,
        errors.GateClosed,
        "gate_closed",
        "TradeLedgerGateClosed",
        lambda m, c: {
            "trade_id": c.trade_id,
            "delivery_start": c.trade.delivery_start,
            "gate_closed_at": c.trade.delivery_start - limits(m).gate_closure_seconds,
        },
    ),
    CancelRefusal(
        "already cancelled",
        _cancelled_twice,
        errors.TradeNotActive,
        "trade_not_active",
        "TradeLedgerTradeNotActive",
        _cancel_not_active(TradeStatus.CANCELLED),
    ),
    CancelRefusal(
        "already amended",
        _cancel_amended,
        errors.TradeNotActive,
        "trade_not_active",
        "TradeLedgerTradeNotActive",
        _cancel_not_active(TradeStatus.AMENDED),
    ),
    CancelRefusal(
        "unknown trade",
        _cancel_unknown,
        errors.TradeNotActive,
        "trade_not_active",
        "TradeLedgerTradeNotActive",
        _cancel_not_active(TradeStatus.NONE),
    ),
    CancelRefusal(
        "names another buyer",
        _cancel_naming_another_buyer,
        errors.PartiesMismatch,
        "parties_mismatch",
        "TradeLedgerPartiesMismatch",
        lambda m, c: {"trade_id": c.trade_id, "seller": c.trade.seller, "buyer": c.trade.buyer},
    ),
    CancelRefusal(
        "names seller and buyer swapped",
        _cancel_swapped,
        errors.PartiesMismatch,
        "parties_mismatch",
        "TradeLedgerPartiesMismatch",
        lambda m, c: {"trade_id": c.trade_id, "seller": c.trade.seller, "buyer": c.trade.buyer},
    ),
    CancelRefusal("while paused", _cancel_while_paused, errors.Paused, "paused", "EnforcedPause", lambda m, c: {}),
    CancelRefusal(
        "by an account without the recorder role",
        lambda m, p, r: _cancel(m, p, r, role="outsider"),
        errors.Unauthorized,
        "unauthorized",
        "AccessControlUnauthorizedAccount",
        lambda m, c: {"account": m.senders["outsider"].address, "needed_role": role_id("recorder")},
    ),
]

SUSPENDED_PARTY_CANCELS = CancelRefusal(
    "by a suspended party",
    _cancel_by_suspended_party,
    errors.ParticipantSuspended,
    "participant_suspended",
    "TradeLedgerParticipantSuspended",
    lambda m, c: {"trade_id": c.trade_id, "account": c.trade.seller},
)


@pytest.mark.parametrize(
    "refusal",
    [
        *CANCEL_REFUSALS,
        SUSPENDED_PARTY_CANCELS,
    ],
    ids=lambda r: r.name,
)
def test_cancel_refused(market: Market, parties: Parties, recorded: SignedTrade, refusal: CancelRefusal) -> None:
    request = refusal.breaks(market, parties, recorded)
    with pytest.raises(errors.LedgerError) as refused:
        request.submit(market)
    assert_error(
        refused.value,
        refusal.error,
        refusal.code,
        refusal.context(market, request),
        solidity_error=refusal.solidity_error,
    )


WHOLE_BATCH_REFUSALS = {"paused", "unauthorized"}


@pytest.mark.parametrize("refusal", [*CANCEL_REFUSALS, SUSPENDED_PARTY_CANCELS], ids=lambda r: r.name)
def test_cancel_batch_refuses_each_cancellation_alone(
    market: Market, parties: Parties, recorded: SignedTrade, refusal: CancelRefusal
) -> None:
    """`cancelTrades` applies the checks of `cancelTrade` to each item: a refused one is reported
    by a `TradeCancelRejected` event with the error `cancelTrade` reverts with, in its place, and
    the valid one beside it is cancelled; only a refusal of the call itself reverts it all."""
    request = refusal.breaks(market, parties, recorded)
    if refusal.code in WHOLE_BATCH_REFUSALS:
        with pytest.raises(errors.LedgerError) as refused:
            cancel_batch(market, [request.signed(market)], role=request.role)
        assert_error(
            refused.value,
            refusal.error,
            refusal.code,
            refusal.context(market, request),
            solidity_error=refusal.solidity_error,
        )
        return
    other_seller, other_buyer = register(market, 2)
    other = market.signed(other_seller, other_buyer)
    record(market, other)
    valid = cancel_request(market, other.trade, other_seller, other_buyer)

    outcome = cancel_batch(market, [request.signed(market), valid.signed(market), request.signed(market)])

    assert [trade_id for trade_id, _ in outcome.results] == [request.trade_id, valid.trade_id, request.trade_id]
    assert outcome.results[1][1] is None
    for _, reason in (outcome.results[0], outcome.results[2]):
        assert reason is not None
        assert_error(
            reason, refusal.error, refusal.code, refusal.context(market, request), solidity_error=refusal.solidity_error
        )
    assert count_logs(market, outcome.receipt, "TradeCancelRejected") == 2
    assert market.ledger("outsider").trade_status(valid.trade_id) is TradeStatus.CANCELLED


def test_the_relayers_fixed_cancel_gas_covers_a_batch_of_cold_cancellations(market: Market) -> None:
    """`sign_cancel_trades` signs a fixed gas limit per cancellation: a batch of cancellations by
    parties no earlier item touched (cold slots) must fit, and cost less than single calls."""
    size = 8
    people = register(market, 2 * size)
    pairs = [(people[2 * i], people[2 * i + 1]) for i in range(size)]
    trades = [market.signed(seller, buyer) for seller, buyer in pairs]
    assert len(record_batch(market, trades).recorded) == size
    requests = [cancel_request(market, t.trade, s, b) for t, (s, b) in zip(trades, pairs, strict=True)]

    outcome = cancel_batch(market, [r.signed(market) for r in requests[1:]])
    single = requests[0].submit(market)

    assert [reason for _, reason in outcome.results] == [None] * (size - 1)
    assert outcome.receipt.gas_used < (size - 1) * single.gas_used - (size - 2) * 21_000
    assert count_logs(market, outcome.receipt, "TradeCancelled") == size - 1


def test_an_empty_cancel_batch_is_refused(market: Market) -> None:
    with pytest.raises(errors.LedgerError) as refused:
        cancel_batch(market, [])
    assert refused.value.code == "empty_batch"


# --- amendment ------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_amendment_replaces_the_old_trade(
    market: Market, parties: Parties, recorded: SignedTrade, entry: EntryPoint
) -> None:
    old_id = market.trade_id(recorded.trade)
    amendment = market.signed(parties.seller, parties.buyer, energy_per_interval_wh=125_000, replaces=old_id)
    receipt = entry.submit(market, "recorder", amendment)
    new_id = market.trade_id(amendment.trade)

    ledger = market.ledger("outsider")
    assert ledger.trade_status(old_id) is TradeStatus.AMENDED
    assert ledger.trade_status(new_id) is TradeStatus.RECORDED
    assert events(market, receipt, "TradeCancelled") == [{"tradeId": old_id, "replacedBy": new_id}]
    (new,) = events(market, receipt, "TradeRecorded")
    assert (new["tradeId"], new["replaces"], new["energyPerIntervalWh"]) == (new_id, old_id, 125_000)


def test_amendment_in_the_batch_that_records_the_old_trade(market: Market, parties: Parties) -> None:
    old = market.signed(parties.seller, parties.buyer)
    old_id = market.trade_id(old.trade)
    amendment = market.signed(parties.seller, parties.buyer, replaces=old_id)
    outcome = record_batch(market, [old, amendment])

    new_id = market.trade_id(amendment.trade)
    assert set(outcome.recorded) == {old_id, new_id}
    assert events(market, outcome.receipt, "TradeCancelled") == [{"tradeId": old_id, "replacedBy": new_id}]
    assert market.ledger("outsider").trade_status(old_id) is TradeStatus.AMENDED


# --- participant registry -------------------------------------------------------------------------


def _register(m: Market, account: str) -> Any:
    return m.ledger("operator").register_participant(account, ParticipantKind.PROSUMER, b"\x01" * 32)


REGISTRY_ACTIONS: dict[str, Callable[[Market, str, str], Any]] = {
    "register": lambda m, role, a: m.ledger(role).register_participant(a, ParticipantKind.GENERATOR, b"\x00" * 32),
    "suspend": lambda m, role, a: m.ledger(role).suspend_participant(a),
    "reinstate": lambda m, role, a: m.ledger(role).reinstate_participant(a),
}


@pytest.mark.parametrize("action", REGISTRY_ACTIONS)
def test_only_the_operator_manages_participants(market: Market, action: str) -> None:
    account = register(market, 1)[0].address if action != "register" else stranger().address
    if action == "reinstate":
        market.ledger("operator").suspend_participant(account)
    status_before = market.ledger("outsider").participant(account).status
    for role in ("admin", "recorder", "pauser", "outsider"):
        with pytest.raises(errors.LedgerError) as refused:
            REGISTRY_ACTIONS[action](market, role, account)
        context = {"account": market.senders[role].address, "needed_role": role_id("operator")}
        assert_error(
            refused.value,
            errors.Unauthorized,
            "unauthorized",
            context,
            solidity_error="AccessControlUnauthorizedAccount",
        )
    assert market.ledger("outsider").participant(account).status is status_before


def test_register_stores_the_participant_and_emits(market: Market) -> None:
    account, identifier_hash = stranger().address, secrets.token_bytes(32)
    receipt = market.ledger("operator").register_participant(account, ParticipantKind.RETAILER, identifier_hash)

    assert events(market, receipt, "ParticipantRegistered") == [
        {"account": account, "kind": ParticipantKind.RETAILER.ordinal, "identifierHash": "0x" + identifier_hash.hex()}
    ]
    stored = market.ledger("outsider").participant(account)
    assert (stored.kind, stored.status) == (ParticipantKind.RETAILER, ParticipantStatus.ACTIVE)
    assert stored.registered_at == block_timestamp(market, receipt.block_number)
    assert stored.identifier_hash == "0x" + identifier_hash.hex()


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=str)
def test_suspension_then_reinstatement_lets_a_participant_trade_again(
    market: Market, parties: Parties, entry: EntryPoint
) -> None:
    operator, seller = market.ledger("operator"), parties.seller.address
    signed = market.signed(parties.seller, parties.buyer)

    suspended_receipt = operator.suspend_participant(seller)
    assert events(market, suspended_receipt, "ParticipantSuspended") == [{"account": seller}]
    assert operator.participant(seller).status is ParticipantStatus.SUSPENDED
    with pytest.raises(errors.ParticipantSuspended):
        entry.submit(market, "recorder", signed)

    reinstated_receipt = operator.reinstate_participant(seller)
    assert events(market, reinstated_receipt, "ParticipantReinstated") == [{"account": seller}]
    assert operator.participant(seller).status is ParticipantStatus.ACTIVE
    entry.submit(market, "recorder", signed)
    assert operator.trade_status(market.trade_id(signed.trade)) is TradeStatus.RECORDED


@dataclass(frozen=True)
class RegistryRefusal:
    name: str
    attempt: Callable[[Market], tuple[Callable[[], Any], str]]
    """Prepares the registry; returns the refused call and the account it concerns."""
    error: type[errors.LedgerError]
    code: str
    solidity_error: str
    context: Callable[[str], dict[str, Any]]


def _twice(m: Market) -> tuple[Callable[[], Any], str]:
    account = register(m, 1)[0].address
    return (lambda: _register(m, account)), account


def _suspended_registered_again(m: Market) -> tuple[Callable[[], Any], str]:
    account = register(m, 1)[0].address
    m.ledger("operator").suspend_participant(account)
    return (lambda: _register(m, account)), account


def _zero_address(m: Market) -> tuple[Callable[[], Any], str]:
    return (lambda: _register(m, "0x" + "00" * 20)), ""


def _on_unknown(action: str) -> Callable[[Market], tuple[Callable[[], Any], str]]:
    def attempt(m: Market) -> tuple[Callable[[], Any], str]:
        account = stranger().address
        return (lambda: REGISTRY_ACTIONS[action](m, "operator", account)), account

    return attempt


def _suspend_suspended(m: Market) -> tuple[Callable[[], Any], str]:
    account = register(m, 1)[0].address
    m.ledger("operator").suspend_participant(account)
    return (lambda: m.ledger("operator").suspend_participant(account)), account


def _reinstate_active(m: Market) -> tuple[Callable[[], Any], str]:
    account = register(m, 1)[0].address
    return (lambda: m.ledger("operator").reinstate_participant(account)), account


def _participant_status(status: ParticipantStatus) -> Callable[[str], dict[str, Any]]:
    return lambda account: {"account": account, "status": list(ParticipantStatus).index(status)}


REGISTRY_REFUSALS = [
    RegistryRefusal(
        "registered twice",
        _twice,
        errors.ParticipantAlreadyRegistered,
        "participant_already_registered",
        "ParticipantRegistryAlreadyRegistered",
        lambda account: {"account": account},
    ),
    RegistryRefusal(
        "suspended participant registered again",
        _suspended_registered_again,
        errors.ParticipantAlreadyRegistered,
        "participant_already_registered",
        "ParticipantRegistryAlreadyRegistered",
        lambda account: {"account": account},
    ),
    RegistryRefusal(
        "zero address",
        _zero_address,
        errors.ValidationError,
        "validation_error",
        "ParticipantRegistryZeroAddress",
        lambda account: {},
    ),
    RegistryRefusal(
        "suspend an unknown participant",
        _on_unknown("suspend"),
        errors.UnknownParticipant,
        "unknown_participant",
        "ParticipantRegistryUnknownParticipant",
        lambda account: {"account": account},
    ),
    RegistryRefusal(
        "reinstate an unknown participant",
        _on_unknown("reinstate"),
        errors.UnknownParticipant,
        "unknown_participant",
        "ParticipantRegistryUnknownParticipant",
        lambda account: {"account": account},
    ),
    RegistryRefusal(
        "suspend a suspended participant",
        _suspend_suspended,
        errors.InvalidParticipantStatus,
        "invalid_participant_status",
        "ParticipantRegistryInvalidStatus",
        _participant_status(ParticipantStatus.SUSPENDED),
    ),
    RegistryRefusal(
        "reinstate an active participant",
        _reinstate_active,
        errors.InvalidParticipantStatus,
        "invalid_participant_status",
        "ParticipantRegistryInvalidStatus",
        _participant_status(ParticipantStatus.ACTIVE),
    ),
]


@pytest.mark.parametrize("refusal", REGISTRY_REFUSALS, ids=lambda r: r.name)
def test_registry_refuses(market: Market, refusal: RegistryRefusal) -> None:
    call, account = refusal.attempt(market)
    with pytest.raises(errors.LedgerError) as refused:
        call()
    assert_error(
        refused.value, refusal.error, refusal.code, refusal.context(account), solidity_error=refusal.solidity_error
    )


# --- trade limits ---------------------------------------------------------------------------------


def test_operator_sets_trade_limits_and_they_apply(market: Market, parties: Parties) -> None:
    old = limits(market)
    new = TradeLimits(
        gate_closure_seconds=old.gate_closure_seconds // 2,
        horizon_seconds=old.horizon_seconds // 2,
        max_energy_per_interval_wh=1_000,
        max_price_minor_per_mwh=old.max_price_minor_per_mwh // 2,
    )
    receipt = market.ledger("operator").set_trade_limits(new)

    assert events(market, receipt, "TradeLimitsUpdated") == [{"limits": new.as_tuple()}]
    assert limits(market) == new
    signed = market.signed(parties.seller, parties.buyer, energy_per_interval_wh=new.max_energy_per_interval_wh + 1)
    with pytest.raises(errors.LedgerError) as refused:
        market.ledger("recorder").record_trade(signed)
    context = {
        "trade_id": market.trade_id(signed.trade),
        "energy_per_interval_wh": new.max_energy_per_interval_wh + 1,
        "max_energy_per_interval_wh": new.max_energy_per_interval_wh,
    }
    assert_error(
        refused.value,
        errors.EnergyOutOfBounds,
        "energy_out_of_bounds",
        context,
        solidity_error="TradeLedgerEnergyOutOfBounds",
    )


def test_only_the_operator_sets_trade_limits(market: Market) -> None:
    for role in ("admin", "recorder", "pauser", "outsider"):
        with pytest.raises(errors.LedgerError) as refused:
            market.ledger(role).set_trade_limits(replace(limits(market), max_energy_per_interval_wh=1))
        context = {"account": market.senders[role].address, "needed_role": role_id("operator")}
        assert_error(
            refused.value,
            errors.Unauthorized,
            "unauthorized",
            context,
            solidity_error="AccessControlUnauthorizedAccount",
        )


@pytest.mark.parametrize("zeroed", ["horizon_seconds", "max_energy_per_interval_wh", "max_price_minor_per_mwh"])
def test_invalid_trade_limits_are_refused(market: Market, zeroed: str) -> None:
    before = limits(market)
    with pytest.raises(errors.LedgerError) as refused:
        market.ledger("operator").set_trade_limits(replace(before, **{zeroed: 0}))
    assert_error(refused.value, errors.InvalidLimits, "invalid_limits", {}, solidity_error="TradeLedgerInvalidLimits")
    assert limits(market) == before


def test_zero_gate_closure_is_a_valid_limit(market: Market) -> None:
    new = replace(limits(market), gate_closure_seconds=0)
    market.ledger("operator").set_trade_limits(new)
    assert limits(market) == new
