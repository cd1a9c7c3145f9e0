"""The settlement engine against SETTLEMENT.md: the worked example, hand-checked edge cases (each
with its arithmetic in a comment), the scenario folders, and properties over random markets."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain import settlement
from ledger.domain.merkle import StandardMerkleTree
from ledger.domain.settlement import (
    LEAF_ENCODING,
    BalancingAccountIsParticipant,
    DuplicateReading,
    LineKind,
    MeterReading,
    MissingReferencePrice,
    ReadingQuality,
    RecordedTrade,
    SettlementInputs,
    SettlementInvariantViolated,
    SettlementParameters,
    SettlementResult,
    StatementLine,
    divide_half_even,
    imbalance_amount_minor,
    inputs_hash,
    interval_ref,
    penalty_amount_minor,
    round_half_even,
    run_id,
    settle,
    value_minor,
)
from ledger.domain.units import ZERO_ID
from ledger.errors import ValidationError

SCENARIOS = Path(__file__).parent / "scenarios"

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, a multiple of 900
T1, T2, T3 = T0 + 900, T0 + 1800, T0 + 2700
G = to_checksum_address("0x00000000000000000000000000000000000000a1")  # generator
R = to_checksum_address("0x00000000000000000000000000000000000000b2")  # retailer
A = to_checksum_address("0x00000000000000000000000000000000000000c3")
B = to_checksum_address("0x00000000000000000000000000000000000000d4")
C = to_checksum_address("0x00000000000000000000000000000000000000e5")
OPERATOR = to_checksum_address("0x0000000000000000000000000000000000000ba1")
TRADE_X = "0x" + "11" * 32
TRADE_Y = "0x" + "22" * 32
TRADE_Z = "0x" + "33" * 32

Line = tuple[str, LineKind, str, int, int]


def inputs(
    *,
    trades: Sequence[RecordedTrade] = (),
    readings: Sequence[MeterReading] = (),
    prices: dict[int, int],
    period: tuple[int, int] = (T0, T1),
    parameters: SettlementParameters | None = None,
    version: int = 1,
) -> SettlementInputs:
    return SettlementInputs(
        period_start=period[0],
        period_end=period[1],
        version=version,
        balancing_account=OPERATOR,
        trades=list(trades),
        readings=list(readings),
        reference_prices_minor_per_mwh=prices,
        parameters=parameters or SettlementParameters(),
    )


def lines_of(result: SettlementResult) -> set[Line]:
    return {tuple(line) for line in result.lines}  # type: ignore[misc]


def worked_example() -> SettlementInputs:
    return inputs(
        trades=[RecordedTrade(TRADE_X, G, R, T0, T1, 1_000_000, 35_000)],
        readings=[MeterReading(G, T0, 990_000, 0), MeterReading(R, T0, 0, 1_050_000)],
        prices={T0: 40_000},
    )


# --- SETTLEMENT.md "Worked example" --------------------------------------------------------


def test_the_worked_example_line_by_line() -> None:
    result = settle(worked_example())

    ref = interval_ref(T0)
    assert result.lines == tuple(
        sorted(
            [
                StatementLine(G, LineKind.TRADE, TRADE_X, 1_000_000, 35_000),
                StatementLine(R, LineKind.TRADE, TRADE_X, -1_000_000, -35_000),
                StatementLine(G, LineKind.IMBALANCE, ref, -10_000, -400),
                StatementLine(R, LineKind.IMBALANCE, ref, -50_000, -2_000),
                StatementLine(R, LineKind.PENALTY, ref, 20_000, -160),
                StatementLine(OPERATOR, LineKind.IMBALANCE, ref, 60_000, 2_400),
                StatementLine(OPERATOR, LineKind.PENALTY, ref, 0, 160),
                StatementLine(G, LineKind.TOTAL, ZERO_ID, 990_000, 34_600),
                StatementLine(R, LineKind.TOTAL, ZERO_ID, -1_050_000, -37_160),
                StatementLine(OPERATOR, LineKind.TOTAL, ZERO_ID, 60_000, 2_560),
            ]
        )
    )
    assert {account: (t.energy_wh, t.amount_minor) for account, t in result.totals.items()} == {
        G: (990_000, 34_600),
        R: (-1_050_000, -37_160),
        OPERATOR: (60_000, 2_560),
    }
    assert sum(t.amount_minor for t in result.totals.values()) == 0


def test_the_worked_example_positions() -> None:
    result = settle(worked_example())

    g, r = sorted(result.positions, key=lambda p: p.participant != G)
    # G: C = 1,000,000, M = 990,000, D = -10,000, T = 30,000, E = 0
    assert (g.contracted_net_wh, g.metered_net_wh, g.imbalance_wh, g.tolerance_wh, g.excess_wh) == (
        1_000_000,
        990_000,
        -10_000,
        30_000,
        0,
    )
    # R: C = -1,000,000, M = -1,050,000, D = -50,000, T = 30,000, E = 20,000
    assert (r.sold_wh, r.bought_wh, r.contracted_net_wh, r.metered_net_wh) == (0, 1_000_000, -1_000_000, -1_050_000)
    assert (r.imbalance_wh, r.tolerance_wh, r.excess_wh, r.estimated) == (-50_000, 30_000, 20_000, False)
    assert r.reading_quality is ReadingQuality.MEASURED


def test_the_worked_example_root_and_proofs() -> None:
    result = settle(worked_example())
    tree = result.merkle_tree()

    assert result.run_id == run_id(T0, T1, 1)
    for line in result.lines:
        leaf = line.leaf_value(result.run_id)
        assert StandardMerkleTree.verify(tree.root, LEAF_ENCODING, leaf, tree.get_proof(leaf))


# --- hand-checked edge cases ---------------------------------------------------------------


def test_consumption_without_any_trade() -> None:
    # C withdraws 12,345 Wh with no contract, Pref 40,000:
    #   C = 0, M = -12,345, D = -12,345, T = 0, E = 12,345
    #   imbalance A = round(-12,345 * 40,000 / 1e6) = round(-493.8) = -494
    #   penalty A = round(12,345 * 40,000 * 2,000 / 1e10) = round(98.76) = 99 -> line (12,345, -99)
    #   balancing: imbalance (12,345, 494), penalty (0, 99); totals C (-12,345, -593), operator (12,345, 593)
    result = settle(inputs(readings=[MeterReading(C, T0, 0, 12_345)], prices={T0: 40_000}))

    ref = interval_ref(T0)
    assert lines_of(result) == {
        (C, LineKind.IMBALANCE, ref, -12_345, -494),
        (C, LineKind.PENALTY, ref, 12_345, -99),
        (OPERATOR, LineKind.IMBALANCE, ref, 12_345, 494),
        (OPERATOR, LineKind.PENALTY, ref, 0, 99),
        (C, LineKind.TOTAL, ZERO_ID, -12_345, -593),
        (OPERATOR, LineKind.TOTAL, ZERO_ID, 12_345, 593),
    }


def test_trades_without_readings_are_estimated_with_zero_imbalance() -> None:
    # No reading for either party: M = C in every interval of the trade, D = 0, no imbalance or
    # penalty lines, no balancing lines (so the operator has no line at all, not even a total).
    # Trade 2 intervals * 250,000 Wh at 40,000: Q = 500,000, A = 500,000 * 40,000 / 1e6 = 20,000.
    result = settle(
        inputs(
            trades=[RecordedTrade(TRADE_X, G, R, T0, T2, 250_000, 40_000)],
            prices={T0: 50_000, T1: 50_000},
            period=(T0, T2),
        )
    )

    assert lines_of(result) == {
        (G, LineKind.TRADE, TRADE_X, 500_000, 20_000),
        (R, LineKind.TRADE, TRADE_X, -500_000, -20_000),
        (G, LineKind.TOTAL, ZERO_ID, 500_000, 20_000),
        (R, LineKind.TOTAL, ZERO_ID, -500_000, -20_000),
    }
    assert len(result.positions) == 4
    for position in result.positions:
        assert position.estimated and position.reading_quality is None
        assert position.metered_net_wh == position.contracted_net_wh and position.imbalance_wh == 0


def test_the_sign_of_every_line_kind() -> None:
    # G sells 1,000,000 Wh at 35,000 to R and is long: it injects 1,100,000 (Pref 40,000).
    #   G: D = +100,000 (delivered more: receives) A = +4,000; T = 30,000, E = 70,000,
    #      penalty 70,000 * 40,000 * 0.2 / 1e6 = 560 -> (70,000, -560): penalty energy > 0, amount < 0
    #   R is short: withdraws 1,050,000, D = -50,000 (bought more: pays) A = -2,000; E = 20,000, penalty 160
    #   operator: imbalance (-(100,000 - 50,000), -(4,000 - 2,000)) = (-50,000, -2,000); penalty (0, +720)
    result = settle(
        inputs(
            trades=[RecordedTrade(TRADE_X, G, R, T0, T1, 1_000_000, 35_000)],
            readings=[MeterReading(G, T0, 1_100_000, 0), MeterReading(R, T0, 0, 1_050_000)],
            prices={T0: 40_000},
        )
    )

    ref = interval_ref(T0)
    assert lines_of(result) == {
        (G, LineKind.TRADE, TRADE_X, 1_000_000, 35_000),  # seller: (+Q, +A)
        (R, LineKind.TRADE, TRADE_X, -1_000_000, -35_000),  # buyer: (-Q, -A)
        (G, LineKind.IMBALANCE, ref, 100_000, 4_000),  # long: (+D, +A)
        (R, LineKind.IMBALANCE, ref, -50_000, -2_000),  # short: (-D, -A)
        (G, LineKind.PENALTY, ref, 70_000, -560),  # (E, -A)
        (R, LineKind.PENALTY, ref, 20_000, -160),
        (OPERATOR, LineKind.IMBALANCE, ref, -50_000, -2_000),  # (-ΣD, -ΣA)
        (OPERATOR, LineKind.PENALTY, ref, 0, 720),  # (0, +ΣA)
        (G, LineKind.TOTAL, ZERO_ID, 1_100_000, 38_440),  # 35,000 + 4,000 - 560
        (R, LineKind.TOTAL, ZERO_ID, -1_050_000, -37_160),
        (OPERATOR, LineKind.TOTAL, ZERO_ID, -50_000, -1_280),  # -2,000 + 720
    }


def test_rounding_ties_go_to_the_even_neighbour_for_both_signs() -> None:
    # Pref 1,000, so value(D) = D / 1,000; no contracts, so T = 0, E = |D| and the penalty is
    # |D| * 1,000 * 0.2 / 1e6 = |D| / 5,000.
    #   A +2,500 -> 2.5 -> 2;  penalty 0.5 -> 0 (a tie, and the line exists with amount 0)
    #   B +3,500 -> 3.5 -> 4;  penalty 0.7 -> 1
    #   C -2,500 -> -2.5 -> -2
    #   R -3,500 -> -3.5 -> -4
    #   G +500   -> 0.5 -> 0 (the imbalance line exists with amount 0); penalty 0.1 -> 0
    result = settle(
        inputs(
            readings=[
                MeterReading(A, T0, 2_500, 0),
                MeterReading(B, T0, 3_500, 0),
                MeterReading(C, T0, 0, 2_500),
                MeterReading(R, T0, 0, 3_500),
                MeterReading(G, T0, 500, 0),
            ],
            prices={T0: 1_000},
        )
    )

    ref = interval_ref(T0)
    imbalance = {line.account: line.amount_minor for line in result.lines if line.kind is LineKind.IMBALANCE}
    penalty = {line.account: line.amount_minor for line in result.lines if line.kind is LineKind.PENALTY}
    assert imbalance == {A: 2, B: 4, C: -2, R: -4, G: 0, OPERATOR: 0}  # operator: -(2 + 4 - 2 - 4 + 0)
    assert penalty == {A: 0, B: -1, C: 0, R: -1, G: 0, OPERATOR: 2}
    assert (OPERATOR, LineKind.IMBALANCE, ref, -500, 0) in lines_of(result)  # -(2,500 + 3,500 - 2,500 - 3,500 + 500)


def test_round_half_even_worked_examples() -> None:
    cases = {
        Fraction(5, 2): 2,
        Fraction(7, 2): 4,
        Fraction(-5, 2): -2,
        Fraction(-7, 2): -4,
        Fraction(1, 2): 0,
        Fraction(-1, 2): 0,
        Fraction(2501, 1000): 3,
        Fraction(-2501, 1000): -3,
        Fraction(-2499, 1000): -2,
        Fraction(3): 3,
    }
    for value, expected in cases.items():
        assert round_half_even(value) == expected, value
        assert divide_half_even(value.numerator, value.denominator) == expected, value


def test_the_penalty_is_one_rational_rounded_once() -> None:
    # penaltyBps 5,000 (50 %), Pref 1,000, A withdraws 1,400 with no contract: E = 1,400.
    #   one rational: 1,400 * 1,000 * 5,000 / 1e10 = 0.7 -> 1, so the line is (1,400, -1)
    #   (rounding value(E) first would give round(1.4) * 0.5 = 0.5 -> 0)
    #   imbalance: round(-1.4) = -1
    result = settle(
        inputs(
            readings=[MeterReading(A, T0, 0, 1_400)],
            prices={T0: 1_000},
            parameters=SettlementParameters(penalty_bps=5_000),
        )
    )

    ref = interval_ref(T0)
    assert (A, LineKind.PENALTY, ref, 1_400, -1) in lines_of(result)
    assert (A, LineKind.IMBALANCE, ref, -1_400, -1) in lines_of(result)
    # Default 20 %: value 12.5 -> 2.5 -> 2 and 17.5 -> 3.5 -> 4 (ties); 2.6 -> 0.52 -> 1 (a floor would give 0).
    assert penalty_amount_minor(12_500, 1_000, 2_000) == 2
    assert penalty_amount_minor(17_500, 1_000, 2_000) == 4
    assert penalty_amount_minor(2_600, 1_000, 2_000) == 1


def test_tolerance_is_floored() -> None:
    # C = -1,000,001 Wh at 300 bp: T = floor(30,000.03) = 30,000; D = -30,001 -> E = 1
    result = settle(
        inputs(
            trades=[RecordedTrade(TRADE_X, G, R, T0, T1, 1_000_001, 40_000)],
            readings=[MeterReading(R, T0, 0, 1_030_002)],
            prices={T0: 40_000},
        )
    )

    (r,) = [p for p in result.positions if p.participant == R]
    assert (r.tolerance_wh, r.imbalance_wh, r.excess_wh) == (30_000, -30_001, 1)


def test_a_block_trade_partly_inside_the_period_counts_only_its_intervals_inside() -> None:
    # Period [t0, t0 + 4 * 900). Y: [t0 - 1,800, t0 + 1,800), 500,000 Wh/interval at 36,000:
    #   inside t0 and t1 -> Q = 1,000,000, A = 36,000.
    # Z: [t3, t3 + 2,700), 100,000 Wh at 33,333: inside t3 only -> Q = 100,000, A = round(3,333.3) = 3,333.
    result = settle(
        inputs(
            trades=[
                RecordedTrade(TRADE_Y, G, R, T0 - 1_800, T2, 500_000, 36_000),
                RecordedTrade(TRADE_Z, G, R, T3, T3 + 2_700, 100_000, 33_333),
            ],
            prices={T0: 40_000, T1: 40_000, T2: 40_000, T3: 40_000},
            period=(T0, T0 + 3_600),
        )
    )

    assert {line for line in lines_of(result) if line[1] is LineKind.TRADE} == {
        (G, LineKind.TRADE, TRADE_Y, 1_000_000, 36_000),
        (R, LineKind.TRADE, TRADE_Y, -1_000_000, -36_000),
        (G, LineKind.TRADE, TRADE_Z, 100_000, 3_333),
        (R, LineKind.TRADE, TRADE_Z, -100_000, -3_333),
    }
    sold = {p.interval_start: p.sold_wh for p in result.positions if p.participant == G}
    assert sold == {T0: 500_000, T1: 500_000, T3: 100_000}  # nothing at t2, nothing outside


def test_a_trade_outside_the_period_is_not_an_input() -> None:
    with pytest.raises(ValidationError, match="does not overlap"):
        settle(inputs(trades=[RecordedTrade(TRADE_X, G, R, T1, T2, 1_000, 40_000)], prices={T0: 40_000}))


def test_several_participants_in_one_interval_share_one_balancing_line_per_kind() -> None:
    # t0 (Pref 40,000): A injects 10,000 and B withdraws 10,000, no contracts:
    #   A (10,000, +400), penalty E = 10,000 -> 10,000 * 40,000 * 0.2 / 1e6 = 80 -> (10,000, -80)
    #   B (-10,000, -400), penalty (10,000, -80)
    #   operator imbalance (0, 0): it nets to zero and still exists; penalty (0, 160)
    # t1 (Pref 30,000): C withdraws 5,000: (-5,000, -150), penalty 5,000 * 30,000 * 0.2 / 1e6 = 30
    #   operator imbalance (5,000, 150), penalty (0, 30)
    result = settle(
        inputs(
            readings=[MeterReading(A, T0, 10_000, 0), MeterReading(B, T0, 0, 10_000), MeterReading(C, T1, 0, 5_000)],
            prices={T0: 40_000, T1: 30_000},
            period=(T0, T2),
        )
    )

    operator = {
        (line.kind, line.ref): (line.energy_wh, line.amount_minor) for line in result.lines if line.account == OPERATOR
    }
    assert operator == {
        (LineKind.IMBALANCE, interval_ref(T0)): (0, 0),
        (LineKind.PENALTY, interval_ref(T0)): (0, 160),
        (LineKind.IMBALANCE, interval_ref(T1)): (5_000, 150),
        (LineKind.PENALTY, interval_ref(T1)): (0, 30),
        (LineKind.TOTAL, ZERO_ID): (5_000, 340),
    }
    totals = {account: (t.energy_wh, t.amount_minor) for account, t in result.totals.items()}
    assert totals == {A: (10_000, 320), B: (-10_000, -480), C: (-5_000, -180), OPERATOR: (5_000, 340)}


def test_a_missing_reference_price_names_the_intervals() -> None:
    with pytest.raises(MissingReferencePrice) as raised:
        settle(replace(worked_example(), period_end=T0 + 2_700))
    # Only t0 has a price: t1 and t2 are named (a price is required even for an unused interval).
    assert raised.value.intervals == [T1, T2]
    assert raised.value.field == "prices"
    assert raised.value.context["intervals"] == [T1, T2]
    assert str(T1) in str(raised.value) and str(T2) in str(raised.value)


def test_two_readings_for_one_participant_and_interval_are_an_error() -> None:
    readings = [
        MeterReading(G, T0, 990_000, 0),
        MeterReading(G.lower(), T0, 991_000, 0),
    ]  # same account, other spelling
    with pytest.raises(DuplicateReading) as raised:
        settle(inputs(readings=readings, prices={T0: 40_000}))
    assert raised.value.context["participant"] == G
    assert raised.value.context["interval_start"] == T0


def test_the_balancing_account_is_never_a_participant() -> None:
    with pytest.raises(BalancingAccountIsParticipant):
        settle(inputs(trades=[RecordedTrade(TRADE_X, OPERATOR, R, T0, T1, 1_000, 40_000)], prices={T0: 40_000}))
    with pytest.raises(BalancingAccountIsParticipant):
        settle(inputs(readings=[MeterReading(OPERATOR.lower(), T0, 0, 1)], prices={T0: 40_000}))


@pytest.mark.parametrize(
    ("trade", "reading", "message"),
    [
        (RecordedTrade(TRADE_X, G, G, T0, T1, 1_000, 40_000), None, "same account"),
        (RecordedTrade(TRADE_X, G, R, T0 + 1, T1, 1_000, 40_000), None, "900 s grid"),
        (RecordedTrade(TRADE_X, G, R, T0, T1, 0, 40_000), None, "energy"),
        (RecordedTrade(TRADE_X, G, R, T0, T1, 1_000, -1), None, "price"),
        (RecordedTrade("0x11", G, R, T0, T1, 1_000, 40_000), None, "bytes32"),
        (None, MeterReading(G, T1, 1, 0), "inside the period"),
        (None, MeterReading(G, T0, -1, 0), "≥ 0"),
        (None, MeterReading(G, T0, 1, 0, "guessed"), "quality"),  # type: ignore[arg-type]
        (None, MeterReading("0xnot-an-address", T0, 1, 0), "address"),
    ],
)
def test_inputs_the_rules_refuse(trade: RecordedTrade | None, reading: MeterReading | None, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settle(inputs(trades=[trade] if trade else [], readings=[reading] if reading else [], prices={T0: 40_000}))


def test_duplicate_trade_ids_and_negative_prices_are_refused() -> None:
    trade = RecordedTrade(TRADE_X, G, R, T0, T1, 1_000, 40_000)
    with pytest.raises(ValidationError, match="twice"):
        settle(inputs(trades=[trade, trade], prices={T0: 40_000}))
    with pytest.raises(ValidationError, match="reference prices") as raised:
        settle(inputs(trades=[trade], prices={T0: -1}))
    assert raised.value.context["intervals"] == [T0]


def test_a_broken_invariant_stops_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    real_total_lines = settlement._total_lines

    def one_minor_unit_off(lines: list[StatementLine]) -> list[StatementLine]:
        first, *rest = real_total_lines(lines)
        return [first._replace(amount_minor=first.amount_minor + 1), *rest]

    monkeypatch.setattr(settlement, "_total_lines", one_minor_unit_off)
    with pytest.raises(SettlementInvariantViolated, match="sum to 0"):
        settle(worked_example())

    def twice(lines: list[StatementLine]) -> list[StatementLine]:
        totals = real_total_lines(lines)
        return [*totals, totals[0]._replace(energy_wh=0, amount_minor=0)]

    monkeypatch.setattr(settlement, "_total_lines", twice)
    with pytest.raises(SettlementInvariantViolated, match="share"):
        settle(worked_example())


# --- run identity --------------------------------------------------------------------------


def test_run_id_vectors() -> None:
    # Computed independently with @metamask/abi-utils + ethereum-cryptography (the libraries
    # behind @openzeppelin/merkle-tree) for (periodStart, periodEnd, version):
    assert run_id(T0, T0 + 86_400, 1) == "0xc29b088b4d74a76e38008784bdbadd20261fbb69dedb5bf451b4c36dcefb6408"
    assert run_id(T0, T1, 2) == "0x83c9788fe768c6f827e064d75d7b2ba12987b521a61d83e8627588a07d1cc31f"
    # ... and with eth_abi + keccak:
    encoded = abi_encode(["uint64", "uint64", "uint32"], [T0, T0 + 86_400, 7])
    assert run_id(T0, T0 + 86_400, 7) == "0x" + keccak(encoded).hex()
    with pytest.raises(ValidationError):
        run_id(T0, T0, 1)
    with pytest.raises(ValidationError):
        run_id(T0, T1, 0)


def hash_of(**overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "period_start": T0,
        "period_end": T1,
        "trade_ids": [TRADE_Y, TRADE_X],
        "reading_batch_roots": ["0x" + "aa" * 32, "0x" + "0b" * 32],
        "price_batch_root": "0x" + "cc" * 32,
        "parameters": SettlementParameters(),
        "balancing_account": OPERATOR,
    }
    return inputs_hash(**{**arguments, **overrides})


def test_inputs_hash_encoding() -> None:
    expected = keccak(
        abi_encode(
            ["uint32", "uint64", "uint64", "bytes32[]", "bytes32[]", "bytes32", "uint32", "uint32", "address"],
            [
                1,
                T0,
                T1,
                [bytes.fromhex("11" * 32), bytes.fromhex("22" * 32)],
                [bytes.fromhex("0b" * 32), bytes.fromhex("aa" * 32)],
                bytes.fromhex("cc" * 32),
                300,
                2_000,
                OPERATOR,
            ],
        )
    )
    assert hash_of() == "0x" + expected.hex()


def test_inputs_hash_is_order_independent_and_commits_to_every_input() -> None:
    reference = hash_of()
    assert hash_of(trade_ids=[TRADE_X.upper().replace("0X", "0x"), TRADE_Y]) == reference
    assert hash_of(reading_batch_roots=["0x" + "0b" * 32, "0x" + "aa" * 32]) == reference
    changed = [
        hash_of(period_end=T2),
        hash_of(trade_ids=[TRADE_X]),
        hash_of(reading_batch_roots=["0x" + "aa" * 32]),
        hash_of(price_batch_root="0x" + "cd" * 32),
        hash_of(parameters=SettlementParameters(tolerance_bps=301)),
        hash_of(parameters=SettlementParameters(penalty_bps=2_001)),
        hash_of(balancing_account=A),
    ]
    assert len({reference, *changed}) == len(changed) + 1
    with pytest.raises(ValidationError, match="duplicate"):
        hash_of(trade_ids=[TRADE_X, TRADE_X])


# --- scenario folders ----------------------------------------------------------------------


def load_scenario(folder: Path) -> tuple[SettlementInputs, dict[str, Any]]:
    raw = json.loads((folder / "input.json").read_text())
    scenario_inputs = SettlementInputs(
        period_start=raw["periodStart"],
        period_end=raw["periodEnd"],
        version=raw["version"],
        balancing_account=raw["balancingAccount"],
        trades=[
            RecordedTrade(
                t["tradeId"],
                t["seller"],
                t["buyer"],
                t["deliveryStart"],
                t["deliveryEnd"],
                t["energyPerIntervalWh"],
                t["priceMinorPerMwh"],
            )
            for t in raw["trades"]
        ],
        readings=[
            MeterReading(
                r["participant"], r["intervalStart"], r["injectedWh"], r["withdrawnWh"], ReadingQuality(r["quality"])
            )
            for r in raw["readings"]
        ],
        reference_prices_minor_per_mwh={p["intervalStart"]: p["priceMinorPerMwh"] for p in raw["referencePrices"]},
        parameters=SettlementParameters(raw["parameters"]["toleranceBps"], raw["parameters"]["penaltyBps"]),
    )
    return scenario_inputs, json.loads((folder / "expected.json").read_text())


@pytest.mark.parametrize("folder", sorted(SCENARIOS.glob("given_*")), ids=lambda folder: folder.name)
def test_scenario(folder: Path) -> None:
    scenario_inputs, expected = load_scenario(folder)

    result = settle(scenario_inputs)

    expected_lines = sorted(
        (line["account"], LineKind[line["kind"]], line["ref"], line["energyWh"], line["amountMinor"])
        for line in expected["lines"]
    )
    assert sorted(tuple(line) for line in result.lines) == expected_lines
    assert result.run_id == expected["runId"]
    # The root in expected.json was computed by @openzeppelin/merkle-tree from the expected lines.
    assert result.merkle_tree().root == expected["merkleRoot"]


def test_there_are_scenarios() -> None:
    assert len(list(SCENARIOS.glob("given_*/input.json"))) >= 3


# --- properties ----------------------------------------------------------------------------

PARTICIPANTS = [G, R, A, B, C]


@st.composite
def markets(draw: st.DrawFn) -> SettlementInputs:
    """Up to 5 participants over 1-4 intervals; trades may start before or end after the period."""
    size = draw(st.integers(1, 4), label="intervals")
    period_end = T0 + size * 900
    prices = {T0 + k * 900: draw(st.integers(0, 150_000)) for k in range(size)}
    trades = []
    for number in range(draw(st.integers(0, 8), label="trades")):
        seller, buyer = draw(st.permutations(PARTICIPANTS))[:2]
        first = draw(st.integers(-2, size - 1))
        length = draw(st.integers(max(1, 1 - first), 4 + max(0, -first)))
        trades.append(
            RecordedTrade(
                "0x" + f"{number + 1:064x}",
                seller,
                buyer,
                T0 + first * 900,
                T0 + (first + length) * 900,
                draw(st.integers(1, 2_000_000)),
                draw(st.integers(0, 150_000)),
            )
        )
    pairs = draw(st.sets(st.tuples(st.sampled_from(PARTICIPANTS), st.integers(0, size - 1)), max_size=5 * size))
    readings = [
        MeterReading(
            participant,
            T0 + k * 900,
            draw(st.integers(0, 3_000_000)),
            draw(st.integers(0, 3_000_000)),
            draw(st.sampled_from(ReadingQuality)),
        )
        for participant, k in sorted(pairs)
    ]
    parameters = SettlementParameters(draw(st.integers(0, 1_000)), draw(st.integers(0, 5_000)))
    return inputs(trades=trades, readings=readings, prices=prices, period=(T0, period_end), parameters=parameters)


def metered_net_over_period(market: SettlementInputs) -> dict[str, int]:
    """Σ M over the period per participant, straight from the rules (M = C where no reading)."""
    contracted: defaultdict[tuple[str, int], int] = defaultdict(int)
    for trade in market.trades:
        for start in range(
            max(trade.delivery_start, market.period_start), min(trade.delivery_end, market.period_end), 900
        ):
            contracted[trade.seller, start] += trade.energy_per_interval_wh
            contracted[trade.buyer, start] -= trade.energy_per_interval_wh
    metered: dict[tuple[str, int], int] = dict(contracted)
    for reading in market.readings:
        metered[reading.participant, reading.interval_start] = reading.injected_wh - reading.withdrawn_wh
    per_participant: defaultdict[str, int] = defaultdict(int)
    for (participant, _), energy in metered.items():
        per_participant[participant] += energy
    return per_participant


def reference_lines(market: SettlementInputs) -> set[Line]:
    """SETTLEMENT.md read literally, with Fractions and no shortcuts, to check the engine's
    integer arithmetic, difference arrays and bookkeeping against."""
    parameters = market.parameters
    intervals = range(market.period_start, market.period_end, 900)
    lines: set[Line] = set()
    sold: defaultdict[tuple[str, int], int] = defaultdict(int)
    bought: defaultdict[tuple[str, int], int] = defaultdict(int)
    for trade in market.trades:
        inside = [t for t in intervals if trade.delivery_start <= t < trade.delivery_end]
        quantity = trade.energy_per_interval_wh * len(inside)
        amount = round_half_even(Fraction(quantity * trade.price_minor_per_mwh, 1_000_000))
        lines |= {(trade.seller, LineKind.TRADE, trade.trade_id, quantity, amount)}
        lines |= {(trade.buyer, LineKind.TRADE, trade.trade_id, -quantity, -amount)}
        for t in inside:
            sold[trade.seller, t] += trade.energy_per_interval_wh
            bought[trade.buyer, t] += trade.energy_per_interval_wh
    readings = {(r.participant, r.interval_start): r for r in market.readings}
    for t in intervals:
        price = market.reference_prices_minor_per_mwh[t]
        imbalance_lines, penalty_lines = [], []
        for participant in PARTICIPANTS:
            key = (participant, t)
            if key not in readings and key not in sold and key not in bought:
                continue
            contracted = sold[key] - bought[key]
            reading = readings.get(key)
            metered = contracted if reading is None else reading.injected_wh - reading.withdrawn_wh
            imbalance = metered - contracted
            tolerance = abs(contracted) * parameters.tolerance_bps // 10_000
            excess = max(0, abs(imbalance) - tolerance)
            if imbalance != 0:
                amount = round_half_even(Fraction(imbalance * price, 1_000_000))
                imbalance_lines.append((participant, LineKind.IMBALANCE, interval_ref(t), imbalance, amount))
            if excess > 0:
                amount = round_half_even(Fraction(excess * price, 1_000_000) * Fraction(parameters.penalty_bps, 10_000))
                penalty_lines.append((participant, LineKind.PENALTY, interval_ref(t), excess, -amount))
        if imbalance_lines:
            energy, amount = sum(line[3] for line in imbalance_lines), sum(line[4] for line in imbalance_lines)
            imbalance_lines.append((OPERATOR, LineKind.IMBALANCE, interval_ref(t), -energy, -amount))
        if penalty_lines:
            penalty_lines.append(
                (OPERATOR, LineKind.PENALTY, interval_ref(t), 0, -sum(line[4] for line in penalty_lines))
            )
        lines |= set(imbalance_lines) | set(penalty_lines)
    for account in {line[0] for line in lines}:
        own = [line for line in lines if line[0] == account]
        energy = sum(line[3] for line in own if line[1] is not LineKind.PENALTY)
        lines.add((account, LineKind.TOTAL, ZERO_ID, energy, sum(line[4] for line in own)))
    return lines


@settings(max_examples=200, deadline=None)
@given(market=markets())
def test_the_engine_agrees_with_a_literal_reading_of_the_rules(market: SettlementInputs) -> None:
    assert lines_of(settle(market)) == reference_lines(market)


@settings(max_examples=150, deadline=None)
@given(market=markets())
def test_totals_sum_to_zero(market: SettlementInputs) -> None:
    totals = settle(market).totals.values()
    assert sum(t.amount_minor for t in totals) == 0
    assert sum(t.energy_wh for t in totals) == 0


@settings(max_examples=150, deadline=None)
@given(market=markets())
def test_each_participants_total_energy_is_its_metered_net_energy(market: SettlementInputs) -> None:
    totals = settle(market).totals
    for participant, energy_wh in metered_net_over_period(market).items():
        assert (totals[participant].energy_wh if participant in totals else 0) == energy_wh


@settings(max_examples=150, deadline=None)
@given(market=markets())
def test_each_total_is_the_sum_of_its_accounts_lines(market: SettlementInputs) -> None:
    result = settle(market)
    for account, total in result.totals.items():
        own = [line for line in result.lines if line.account == account and line.kind is not LineKind.TOTAL]
        assert total.amount_minor == sum(line.amount_minor for line in own)
        assert total.energy_wh == sum(line.energy_wh for line in own if line.kind is not LineKind.PENALTY)


@settings(max_examples=60, deadline=None)
@given(market=markets(), shuffler=st.randoms())
def test_the_result_does_not_depend_on_input_order(market: SettlementInputs, shuffler: random.Random) -> None:
    trades, readings = list(market.trades), list(market.readings)
    shuffler.shuffle(trades)
    shuffler.shuffle(readings)
    prices = list(market.reference_prices_minor_per_mwh.items())
    shuffler.shuffle(prices)
    # Addresses spelled in lower case this time: the same accounts.
    readings = [
        r.__class__(r.participant.lower(), r.interval_start, r.injected_wh, r.withdrawn_wh, r.quality) for r in readings
    ]
    reordered = SettlementInputs(
        market.period_start,
        market.period_end,
        market.version,
        market.balancing_account.lower(),
        trades,
        readings,
        dict(prices),
        market.parameters,
    )

    first, second = settle(market), settle(reordered)

    assert second.lines == first.lines  # the same lines, in the same order
    assert second.positions == first.positions
    if first.lines:
        assert second.merkle_tree().root == first.merkle_tree().root


@settings(max_examples=500, deadline=None)
@given(numerator=st.integers(-(10**30), 10**30), denominator=st.integers(1, 10**15))
def test_integer_rounding_is_half_even_of_the_rational(numerator: int, denominator: int) -> None:
    exact = Fraction(numerator, denominator)
    assert divide_half_even(numerator, denominator) == round_half_even(exact) == round(exact)


@settings(max_examples=500, deadline=None)
@given(
    energy_wh=st.integers(-(10**13), 10**13),
    price=st.integers(0, 10**8),
    penalty_bps=st.integers(0, 10**5),
)
def test_the_integer_formulas_equal_the_fraction_formulas(energy_wh: int, price: int, penalty_bps: int) -> None:
    assert imbalance_amount_minor(energy_wh, price) == round_half_even(value_minor(energy_wh, price))
    assert penalty_amount_minor(abs(energy_wh), price, penalty_bps) == round_half_even(
        value_minor(abs(energy_wh), price) * Fraction(penalty_bps, 10_000)
    )


@settings(max_examples=300, deadline=None)
@given(whole=st.integers(-(10**9), 10**9))
def test_ties_round_to_even(whole: int) -> None:
    tie = Fraction(2 * whole + 1, 2)  # whole + 0.5
    expected = whole if whole % 2 == 0 else whole + 1
    assert round_half_even(tie) == expected
    assert divide_half_even(2 * whole + 1, 2) == expected
