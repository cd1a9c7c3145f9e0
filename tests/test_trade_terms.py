"""`check_terms` (the contract's stateless checks, mirrored for an early refusal) and `compact`.

Pure: no node. The checks and their order come from `ITradeLedger`'s NatSpec: deadline, seller
!= buyer, interval alignment, non-empty window, gate closure, horizon, energy bounds, price bounds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any

import pytest
from eth_abi import encode
from eth_account import Account
from eth_keys import keys
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import errors
from ledger.chain.abi import abi_type
from ledger.chain.compiler import compile_contracts
from ledger.chain.contract_errors import ERROR_CLASSES, ErrorDecoder
from ledger.domain.trade import DEFAULT_TRADE_LIMITS, Trade, TradeLimits, check_terms, compact
from ledger.domain.units import INTERVAL_SECONDS
from ledger.signing.trader import recover_signer, sign_digest
from tests.support.behaviours import assert_error, context_of, high_s

LIMITS = DEFAULT_TRADE_LIMITS
NOW = 1_790_000_123  # any instant; everything below is placed relative to it
SELLER = to_checksum_address(keccak(text="seller")[:20])
BUYER = to_checksum_address(keccak(text="buyer")[:20])


def align_down(seconds: int) -> int:
    return seconds // INTERVAL_SECONDS * INTERVAL_SECONDS


def valid_trade(now: int = NOW, limits: TradeLimits = LIMITS) -> Trade:
    start = align_down(now + limits.gate_closure_seconds) + 2 * INTERVAL_SECONDS
    return Trade(
        seller=SELLER,
        buyer=BUYER,
        delivery_start=start,
        delivery_end=start + 4 * INTERVAL_SECONDS,
        energy_per_interval_wh=250_000,
        price_minor_per_mwh=35_000,
        nonce=7,
        deadline=now + 600,
    )


def test_a_valid_trade_passes() -> None:
    assert check_terms(valid_trade(), LIMITS, NOW) is None


# --- each check, and the context it reports --------------------------------------------------------

Change = Callable[[Trade], dict[str, Any]]


@dataclass(frozen=True)
class Check:
    """One of the contract's stateless checks: how to make a trade fail it, the oracle that says
    whether a trade fails it (written from the Solidity), and what the refusal must carry."""

    name: str
    breaks: Change
    fails: Callable[[Trade], bool]
    error: type[errors.LedgerError]
    code: str
    context: Callable[[Trade], dict[str, Any]]


def _window(t: Trade) -> dict[str, Any]:
    return {"delivery_start": t.delivery_start, "delivery_end": t.delivery_end}


G, H = LIMITS.gate_closure_seconds, LIMITS.horizon_seconds
E_MAX, P_MAX = LIMITS.max_energy_per_interval_wh, LIMITS.max_price_minor_per_mwh

# In the documented order. Each `breaks` changes only what its check looks at, so that any later
# check's breakage can be applied first and survives this one (see test_the_first_failing_check_wins).
CHECKS = [
    Check(
        "deadline",
        lambda t: {"deadline": NOW - 1},
        lambda t: t.deadline < NOW,
        errors.SignatureExpired,
        "signature_expired",
        lambda t: {"deadline": t.deadline},
    ),
    Check(
        "seller is buyer",
        lambda t: {"buyer": t.seller},
        lambda t: t.seller == t.buyer,
        errors.SelfTrade,
        "self_trade",
        lambda t: {"account": t.seller},
    ),
    Check(
        "alignment",
        lambda t: {"delivery_start": t.delivery_start + 1, "delivery_end": t.delivery_end + 1},
        lambda t: t.delivery_start % INTERVAL_SECONDS != 0 or t.delivery_end % INTERVAL_SECONDS != 0,
        errors.MisalignedInterval,
        "misaligned_interval",
        _window,
    ),
    Check(
        "window",
        lambda t: {"delivery_end": t.delivery_start - INTERVAL_SECONDS},
        lambda t: t.delivery_end <= t.delivery_start,
        errors.EmptyDeliveryWindow,
        "empty_delivery_window",
        _window,
    ),
    Check(
        "gate closure",
        lambda t: {"delivery_start": align_down(NOW + G) - INTERVAL_SECONDS},
        lambda t: t.delivery_start < NOW + G,
        errors.GateClosed,
        "gate_closed",
        lambda t: {"delivery_start": t.delivery_start, "gate_closed_at": max(t.delivery_start - G, 0)},
    ),
    Check(
        "horizon",
        lambda t: {
            "delivery_start": align_down(NOW + H) + 2 * INTERVAL_SECONDS,
            "delivery_end": align_down(NOW + H) + 6 * INTERVAL_SECONDS,
        },
        lambda t: t.delivery_end > NOW + H,
        errors.BeyondHorizon,
        "beyond_horizon",
        lambda t: {"delivery_end": t.delivery_end, "horizon_end": NOW + H},
    ),
    Check(
        "energy",
        lambda t: {"energy_per_interval_wh": 0},
        lambda t: not 0 < t.energy_per_interval_wh <= E_MAX,
        errors.EnergyOutOfBounds,
        "energy_out_of_bounds",
        lambda t: {"energy_per_interval_wh": t.energy_per_interval_wh, "max_energy_per_interval_wh": E_MAX},
    ),
    Check(
        "price",
        lambda t: {"price_minor_per_mwh": 0},
        lambda t: not 0 < t.price_minor_per_mwh <= P_MAX,
        errors.PriceOutOfBounds,
        "price_out_of_bounds",
        lambda t: {"price_minor_per_mwh": t.price_minor_per_mwh, "max_price_minor_per_mwh": P_MAX},
    ),
]
BY_NAME = {c.name: c for c in CHECKS}


def broken(*checks: Check) -> Trade:
    """A valid trade broken for `checks`, the later ones (in check order) first."""
    trade = valid_trade()
    for check in sorted(checks, key=CHECKS.index, reverse=True):
        trade = replace(trade, **check.breaks(trade))
    return trade


def refusal(trade: Trade, now: int = NOW, limits: TradeLimits = LIMITS) -> errors.LedgerError:
    with pytest.raises(errors.LedgerError) as refused:
        check_terms(trade, limits, now)
    return refused.value


REFUSALS: list[tuple[str, Change, str]] = [
    ("expired", lambda t: {"deadline": NOW - 1}, "deadline"),
    ("seller is buyer", lambda t: {"buyer": t.seller}, "seller is buyer"),
    ("misaligned start", lambda t: {"delivery_start": t.delivery_start + 1}, "alignment"),
    ("misaligned end", lambda t: {"delivery_end": t.delivery_end - 1}, "alignment"),
    ("end == start", lambda t: {"delivery_end": t.delivery_start}, "window"),
    ("end < start", lambda t: {"delivery_end": t.delivery_start - INTERVAL_SECONDS}, "window"),
    ("gate closed", lambda t: {"delivery_start": align_down(NOW + G) - INTERVAL_SECONDS}, "gate closure"),
    ("gate closed at the epoch", lambda t: {"delivery_start": 0, "delivery_end": INTERVAL_SECONDS}, "gate closure"),
    ("beyond horizon", lambda t: {"delivery_end": align_down(NOW + H) + INTERVAL_SECONDS}, "horizon"),
    ("zero energy", lambda t: {"energy_per_interval_wh": 0}, "energy"),
    ("energy above max", lambda t: {"energy_per_interval_wh": E_MAX + 1}, "energy"),
    ("zero price", lambda t: {"price_minor_per_mwh": 0}, "price"),
    ("price above max", lambda t: {"price_minor_per_mwh": P_MAX + 1}, "price"),
]


@pytest.mark.parametrize(("change", "check_name"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_each_rejection_names_its_reason(change: Change, check_name: str) -> None:
    base = valid_trade()
    trade = replace(base, **change(base))
    check = BY_NAME[check_name]
    assert [c.name for c in CHECKS if c.fails(trade)] == [check_name]
    assert_error(refusal(trade), check.error, check.code, check.context(trade))


@pytest.mark.parametrize(("change", "check_name"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_the_pre_check_refuses_as_the_contract_would(change: Change, check_name: str) -> None:
    """The refusal `check_terms` raises is the one the contract's custom error decodes to: same
    class, same context (less the trade id, which only the chain's domain gives), so a client
    sees one shape whichever refused the trade."""
    base = valid_trade()
    refused = refusal(replace(base, **change(base)))
    context = context_of(refused)
    (name,) = [n for n, (cls, _) in ERROR_CLASSES.items() if cls is type(refused) and n.startswith("TradeLedger")]
    abi = compile_contracts()["TradeLedger"].abi
    error = next(e for e in abi if e["type"] == "error" and e["name"] == name)
    trade_id = keccak(text="any trade")

    def value(param: dict[str, Any]) -> Any:
        if param["name"] == "tradeId":
            return trade_id
        (key,) = [k for k in context if k.replace("_", "") == param["name"].lower()]
        return context[key]

    types = [abi_type(i) for i in error["inputs"]]
    data = keccak(text=f"{name}({','.join(types)})")[:4] + encode(types, [value(i) for i in error["inputs"]])
    assert_error(
        ErrorDecoder(abi).decode(data),
        type(refused),
        refused.code,
        {"trade_id": "0x" + trade_id.hex(), **context},
        solidity_error=name,
    )


def test_gate_closure_never_reports_a_negative_instant() -> None:
    trade = replace(valid_trade(), delivery_start=0, delivery_end=INTERVAL_SECONDS)
    assert refusal(trade).context["gate_closed_at"] == 0


# --- bounds: the same direction of strictness as the contract --------------------------------------


def test_every_bound_itself_is_accepted() -> None:
    t = valid_trade()
    on_gate = t.delivery_start
    now = on_gate - G  # gate closure exactly now
    on_horizon = now + H
    assert on_horizon % INTERVAL_SECONDS == 0
    at_bounds = replace(
        t,
        deadline=now,
        delivery_end=on_horizon,
        energy_per_interval_wh=E_MAX,
        price_minor_per_mwh=P_MAX,
    )
    assert check_terms(at_bounds, LIMITS, now) is None
    assert check_terms(replace(at_bounds, energy_per_interval_wh=1, price_minor_per_mwh=1), LIMITS, now) is None


def test_one_second_past_the_deadline_is_refused() -> None:
    t = valid_trade()
    assert check_terms(t, LIMITS, t.deadline) is None
    assert_error(refusal(t, now=t.deadline + 1), errors.SignatureExpired, "signature_expired", {"deadline": t.deadline})


def test_one_second_past_gate_closure_is_refused() -> None:
    t = replace(valid_trade(), deadline=2**63)
    gate_closed_at = t.delivery_start - G
    assert check_terms(t, LIMITS, gate_closed_at) is None
    assert_error(
        refusal(t, now=gate_closed_at + 1),
        errors.GateClosed,
        "gate_closed",
        {"delivery_start": t.delivery_start, "gate_closed_at": gate_closed_at},
    )


def test_one_second_short_of_the_horizon_is_refused() -> None:
    t = valid_trade()
    now = t.delivery_end - H  # the horizon ends exactly at delivery end
    assert check_terms(t, LIMITS, now) is None
    assert_error(
        refusal(t, now=now - 1),
        errors.BeyondHorizon,
        "beyond_horizon",
        {"delivery_end": t.delivery_end, "horizon_end": now - 1 + H},
    )


def test_limits_are_read_from_the_argument() -> None:
    t = valid_trade()
    tighter = replace(LIMITS, max_energy_per_interval_wh=t.energy_per_interval_wh - 1)
    assert_error(
        refusal(t, limits=tighter),
        errors.EnergyOutOfBounds,
        "energy_out_of_bounds",
        {
            "energy_per_interval_wh": t.energy_per_interval_wh,
            "max_energy_per_interval_wh": t.energy_per_interval_wh - 1,
        },
    )


# --- order -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    list(combinations(CHECKS, 2)),
    ids=[f"{a.name} before {b.name}" for a, b in combinations(CHECKS, 2)],
)
def test_the_first_failing_check_wins(first: Check, second: Check) -> None:
    trade = broken(first, second)
    assert first.fails(trade) and second.fails(trade), "the two breakages must both hold"
    assert_error(refusal(trade), first.error, first.code, first.context(trade))


def _mostly(valid: st.SearchStrategy[Any], edge: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Three parts valid values to one part values on and around the check's bound, so that
    every check gets to be the first failing one."""
    return st.integers(0, 3).flatmap(lambda k: valid if k else edge)


_grid = st.integers(-8, 8).map(lambda k: k * INTERVAL_SECONDS)
_starts = _mostly(
    st.integers(2, 16).map(lambda k: align_down(NOW + G) + k * INTERVAL_SECONDS),
    st.one_of(
        _grid.map(lambda d: align_down(NOW + G) + d),
        _grid.map(lambda d: align_down(NOW + H) + d),
        st.integers(-2, 2).map(lambda d: align_down(NOW + G) + INTERVAL_SECONDS + d),
        st.integers(0, 2**40),
    ),
)
_lengths = _mostly(
    st.integers(1, 16).map(lambda k: k * INTERVAL_SECONDS),
    st.one_of(_grid, st.integers(-1000, 1000), st.just(H)),
)
_trades = st.builds(
    Trade,
    seller=st.just(SELLER),
    buyer=_mostly(st.just(BUYER), st.just(SELLER)),
    delivery_start=_starts,
    delivery_end=st.just(0),  # set from a length below
    energy_per_interval_wh=_mostly(st.integers(1, E_MAX), st.sampled_from([0, 1, E_MAX, E_MAX + 1, 2**64 - 1])),
    price_minor_per_mwh=_mostly(st.integers(1, P_MAX), st.sampled_from([0, 1, P_MAX, P_MAX + 1, 2**64 - 1])),
    nonce=st.integers(0, 2**256 - 1),
    deadline=_mostly(st.just(NOW + 600), st.integers(NOW - 2, NOW + 2)),
)


@settings(max_examples=300, deadline=None, database=None)
@given(trade=_trades, length=_lengths)
def test_check_terms_refuses_for_the_first_failing_check_in_order(trade: Trade, length: int) -> None:
    """Against the oracle: for any trade, the refusal is the first check (in the contract's order)
    that the trade fails, with that check's context; a trade failing none passes."""
    trade = replace(trade, delivery_end=max(trade.delivery_start + length, 0))
    failing = [c for c in CHECKS if c.fails(trade)]
    if not failing:
        assert check_terms(trade, LIMITS, NOW) is None
        return
    first = failing[0]
    assert_error(refusal(trade), first.error, first.code, first.context(trade))


# --- compact (EIP-2098) ----------------------------------------------------------------------------

_SIGNER = Account.from_key(keccak(text="compact signer"))


def signature_with_v(v: int) -> tuple[bytes, bytes]:
    """A digest and the signer's signature of it whose v is `v` (about half of all digests)."""
    for i in range(256):
        digest = keccak(text=f"digest {i}")
        signature = sign_digest(_SIGNER, digest)
        if signature[64] == v:
            return digest, signature
    raise AssertionError(f"no signature with v={v} in 256 tries")


def oz_expand(r: bytes, vs: bytes) -> bytes:
    """What OpenZeppelin's `ECDSA.tryRecover(hash, r, vs)` makes of a compact signature."""
    vs_int = int.from_bytes(vs, "big")
    s = vs_int & ((1 << 255) - 1)
    v = (vs_int >> 255) + 27
    return r + s.to_bytes(32, "big") + bytes([v])


@pytest.mark.parametrize("v", [27, 28])
def test_compact_packs_the_parity_into_the_top_bit_of_s(v: int) -> None:
    digest, signature = signature_with_v(v)
    r, vs = compact(signature)
    assert r == signature[:32]
    assert int.from_bytes(vs, "big") >> 255 == v - 27
    assert vs[1:] == signature[33:64] and vs[0] & 0x7F == signature[32]
    assert oz_expand(r, vs) == signature
    assert recover_signer(digest, oz_expand(r, vs)) == _SIGNER.address


@pytest.mark.parametrize("v", [27, 28])
def test_compact_takes_a_raw_parity_as_well(v: int) -> None:
    _, signature = signature_with_v(v)
    assert compact(signature[:64] + bytes([v - 27])) == compact(signature)


@pytest.mark.parametrize("length", [0, 64, 66])
def test_compact_refuses_a_signature_of_the_wrong_length(length: int) -> None:
    with pytest.raises(ValueError):
        compact(bytes(length))


@pytest.mark.parametrize("v", [27, 28])
def test_compact_cannot_carry_a_high_s(v: int) -> None:
    """The malleable twin is a valid signature, but in compact form it reads as another s, so it
    cannot recover to the signer."""
    digest, signature = signature_with_v(v)
    twin = high_s(signature)
    r, s, twin_v = int.from_bytes(twin[:32], "big"), int.from_bytes(twin[32:64], "big"), twin[64]
    same_key = keys.Signature(vrs=(twin_v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    assert same_key.to_checksum_address() == _SIGNER.address
    assert recover_signer(digest, oz_expand(*compact(twin))) != _SIGNER.address


@pytest.mark.parametrize("v", [26, 29, 30])
def test_compact_refuses_a_v_that_is_not_a_parity(v: int) -> None:
    _, signature = signature_with_v(27)
    with pytest.raises(ValueError):
        compact(signature[:64] + bytes([v]))
