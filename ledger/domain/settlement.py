"""The settlement engine: trades, meter readings and reference prices in; positions and statement
lines out. It implements SETTLEMENT.md (rules version 1), section by section; where this module
and that file disagree, the file is right and this module has a bug.

Pure: no I/O, no clock, no chain. The caller (the settlement service) selects the inputs:

- trades recorded on chain, **not cancelled** (the caller filters cancelled and superseded trades
  out; a trade passed in is settled), overlapping the period. A trade partly inside the period
  counts only with its intervals inside it (SETTLEMENT.md, "Intervals and periods");
- for each participant and interval of the period at most one reading, the latest accepted one;
- a reference price for every interval of the period (prices for other intervals are ignored).

Arithmetic (SETTLEMENT.md, "Units")
-----------------------------------
Quantities are integers in the unit their name carries (`_wh`, `_minor`, `_minor_per_mwh`,
`_bps`). `value(q, p) = q * p / 1,000,000` is an exact rational, rounded half to even where the
rules say `round(...)`. The engine computes each rounded amount as one integer division
`divide_half_even(numerator, denominator)`, which is exactly `round_half_even(Fraction(n, d))`
(the tests prove it against the `Fraction` reference with Hypothesis) and ~30x faster.

Rounding, half to even, worked example (Pref = 1,000 minor/MWh, so value(D) = D / 1,000):

| D (Wh) | value(D, Pref) | rounded | why |
| ---: | ---: | ---: | --- |
| 2,500 | 2.5 | 2 | a tie goes to the even neighbour, 2 |
| 3,500 | 3.5 | 4 | a tie goes to the even neighbour, 4 |
| -2,500 | -2.5 | -2 | symmetric: round(-x) = -round(x) |
| -3,500 | -3.5 | -4 | |
| 2,501 | 2.501 | 3 | not a tie: to the nearest integer |

Penalty: `round(value(E, Pref) * penaltyBps / 10,000)` as one rational. With E = 1,400 Wh,
Pref = 1,000, penaltyBps = 5,000: 1.4 * 0.5 = 0.7 → 1 (rounding value first would give
round(1.4) * 0.5 = 0.5 → 0, which is wrong). Tolerance: `floor(|C| * toleranceBps / 10,000)`,
e.g. C = -1,000,001 Wh at 300 bp: floor(30,000.03) = 30,000 Wh.

Run identity and inputs hash (SETTLEMENT.md, "Runs, versions and finality")
--------------------------------------------------------------------------
`run_id = keccak256(abi.encode(uint64 periodStart, uint64 periodEnd, uint32 version))`.

`inputs_hash` = keccak256 of the ABI encoding (`abi.encode`, not packed) of

    (uint32 rulesVersion,           -- SETTLEMENT_RULES_VERSION, 1
     uint64 periodStart, uint64 periodEnd,
     bytes32[] tradeIds,            -- ascending, no duplicates
     bytes32[] readingBatchRoots,   -- ascending, no duplicates
     bytes32 priceBatchRoot,
     uint32 toleranceBps, uint32 penaltyBps,
     address balancingAccount)

`priceBatchRoot` is SETTLEMENT.md's "price batch root" where one price batch priced the whole
period (`price_inputs_root`); a run priced by several batches (the current price of each interval,
whichever batch holds it) commits to all of them in that one slot:
`keccak256(abi.encode(bytes32[] priceBatchRoots))`, ascending, no duplicates.

Sorting makes it independent of the order the caller found things in. The rules version, period
and balancing account are there too because each of them changes the lines for the same trades
and readings: two runs with equal inputs hashes must produce equal lines.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from fractions import Fraction
from itertools import accumulate, pairwise
from typing import Any, NamedTuple

from eth_abi import encode as abi_encode
from eth_utils import is_address, keccak, to_checksum_address

from ledger.domain.merkle import StandardMerkleTree
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID
from ledger.errors import LedgerError, ValidationError

SETTLEMENT_RULES_VERSION = 1

DEFAULT_TOLERANCE_BPS = 300
DEFAULT_PENALTY_BPS = 2000

WH_PER_MWH = 1_000_000
BPS_PER_UNIT = 10_000

# SETTLEMENT.md, "Merkle commitment": one leaf per line, [runId, account, kind, ref, energyWh, amountMinor].
LEAF_ENCODING = ("bytes32", "address", "uint8", "bytes32", "int256", "int256")

_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1


# --- code lists ----------------------------------------------------------------------------


class LineKind(IntEnum):
    """Statement line kinds, SETTLEMENT.md "Statement lines"; the value is the leaf's `kind`."""

    TRADE = 1
    IMBALANCE = 2
    PENALTY = 3
    TOTAL = 9


class ReadingQuality(StrEnum):
    """How a meter reading was obtained. Settlement treats all three alike (SETTLEMENT.md has no
    rule on quality); positions carry it so that statements can show it."""

    MEASURED = "measured"
    ESTIMATED = "estimated"
    SUBSTITUTED = "substituted"


_QUALITY_CODES = frozenset(ReadingQuality)  # StrEnum members equal their codes: takes either


# --- errors --------------------------------------------------------------------------------


class MissingReferencePrice(ValidationError):
    """SETTLEMENT.md: a missing price is an error that names the intervals; there is no default."""

    code = "missing_reference_price"

    def __init__(self, intervals: Sequence[int]) -> None:
        shown = ", ".join(str(start) for start in intervals[:10]) + (" …" if len(intervals) > 10 else "")
        super().__init__(
            f"no reference price for {len(intervals)} interval(s) of the period: {shown}",
            field="prices",
            intervals=list(intervals),
        )
        self.intervals = list(intervals)


class DuplicateReading(ValidationError):
    """Two readings for one participant and interval in the inputs of one run."""

    code = "duplicate_reading"


class BalancingAccountIsParticipant(ValidationError):
    """The balancing account appears as a seller, buyer or metered participant."""

    code = "balancing_account_is_participant"


class SettlementInvariantViolated(LedgerError):
    """The lines of a run break an invariant of SETTLEMENT.md. Cannot happen with valid inputs:
    it means a bug, and it stops the run before a wrong root is published."""

    code = "settlement_invariant_violated"


# --- inputs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedTrade:
    """A trade as settlement sees it: recorded on chain and not cancelled."""

    trade_id: str
    seller: str
    buyer: str
    delivery_start: int
    delivery_end: int
    energy_per_interval_wh: int
    price_minor_per_mwh: int


@dataclass(frozen=True, slots=True)
class MeterReading:
    """The latest accepted reading of one participant's meter for one interval."""

    participant: str
    interval_start: int
    injected_wh: int
    withdrawn_wh: int
    quality: ReadingQuality = ReadingQuality.MEASURED


@dataclass(frozen=True, slots=True)
class SettlementParameters:
    tolerance_bps: int = DEFAULT_TOLERANCE_BPS
    penalty_bps: int = DEFAULT_PENALTY_BPS


@dataclass(frozen=True, slots=True)
class ParameterChange:
    """Parameters the operator scheduled, in effect for periods starting at or after `effective_from`."""

    change_id: int
    effective_from: int
    parameters: SettlementParameters


def parameters_in_effect(
    initial: SettlementParameters, changes: Iterable[ParameterChange], period_start: int
) -> tuple[SettlementParameters, ParameterChange | None]:
    """The parameters of a run of a period starting at `period_start` (SETTLEMENT.md "Inputs of a
    run"): the change with the latest `effective_from` at or before it (of two for the same start,
    the later scheduled), else the initial ones (the settings), with the change that set them."""
    in_effect = [change for change in changes if change.effective_from <= period_start]
    if not in_effect:
        return initial, None
    latest = max(in_effect, key=lambda change: (change.effective_from, change.change_id))
    return latest.parameters, latest


@dataclass(frozen=True)
class SettlementInputs:
    """Everything one run reads. `reference_prices_minor_per_mwh` maps interval start -> Pref."""

    period_start: int
    period_end: int
    version: int
    balancing_account: str
    trades: Sequence[RecordedTrade]
    readings: Sequence[MeterReading]
    reference_prices_minor_per_mwh: Mapping[int, int]
    parameters: SettlementParameters = field(default_factory=SettlementParameters)


# --- outputs -------------------------------------------------------------------------------


class Position(NamedTuple):
    """SETTLEMENT.md "Positions": S, B, C, M, D, T, E of one participant in one interval.

    `estimated` is set where the participant had trades but no reading, so the run used
    metered = contracted. (A NamedTuple, not a dataclass: a day has ~100k of them.)"""

    participant: str
    interval_start: int
    sold_wh: int  # S
    bought_wh: int  # B
    contracted_net_wh: int  # C = S - B
    metered_net_wh: int  # M = injected - withdrawn
    imbalance_wh: int  # D = M - C
    tolerance_wh: int  # T
    excess_wh: int  # E
    estimated: bool
    reading_quality: ReadingQuality | None  # None where there was no reading


class StatementLine(NamedTuple):
    """One line of a statement and one leaf of the run's Merkle tree."""

    account: str  # EIP-55 checksummed
    kind: LineKind
    ref: str  # bytes32 as 0x hex: trade id, interval start, or zero
    energy_wh: int
    amount_minor: int  # positive: the account receives; negative: it pays

    def leaf_value(self, run_id: str) -> list[Any]:
        """The leaf, in `LEAF_ENCODING` order."""
        return [run_id, self.account, int(self.kind), self.ref, self.energy_wh, self.amount_minor]


@dataclass(frozen=True)
class SettlementResult:
    run_id: str
    period_start: int
    period_end: int
    version: int
    positions: tuple[Position, ...]
    lines: tuple[StatementLine, ...]  # sorted by (account, kind, ref)

    @property
    def totals(self) -> dict[str, StatementLine]:
        """Each account's TOTAL line: its single net payment obligation for the period."""
        return {line.account: line for line in self.lines if line.kind is LineKind.TOTAL}

    def leaf_values(self) -> list[list[Any]]:
        """One leaf value per line, in line order (`StatementLine.leaf_value`, unrolled for speed)."""
        identity = self.run_id
        return [
            [identity, account, int(kind), ref, energy, amount] for account, kind, ref, energy, amount in self.lines
        ]

    def merkle_tree(self) -> StandardMerkleTree:
        return StandardMerkleTree.of(self.leaf_values(), LEAF_ENCODING)


# --- formulas (SETTLEMENT.md "Units", "Positions", "Statement lines") ----------------------


def round_half_even(value: Fraction) -> int:
    """The integer nearest to `value`; a tie (x.5) goes to the even neighbour.

    2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -3.5 -> -4, 2.501 -> 3, -0.5 -> 0. This is the reference
    definition; the engine uses `divide_half_even`, which is proven equal to it."""
    floor = math.floor(value)
    rest = value - floor  # in [0, 1)
    if rest != Fraction(1, 2):
        return floor + 1 if rest > Fraction(1, 2) else floor
    return floor + (floor % 2)  # odd floor: the even neighbour is above


def divide_half_even(numerator: int, denominator: int) -> int:
    """`round_half_even(Fraction(numerator, denominator))` in integers, for `denominator > 0`.

    Floor division gives `numerator = q * denominator + r` with `0 ≤ r < denominator` for either
    sign of `numerator`, so the fractional part is `r / denominator` and comparing `2r` with
    `denominator` is comparing it with one half. Example: -5 / 2 -> q = -3, r = 1, a tie, q odd
    -> -2."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2):
        return quotient + 1
    return quotient


def value_minor(energy_wh: int, price_minor_per_mwh: int) -> Fraction:
    """SETTLEMENT.md `value(q, p) = q * p / 1,000,000`, exact, unrounded."""
    return Fraction(energy_wh * price_minor_per_mwh, WH_PER_MWH)


def trade_amount_minor(energy_wh: int, price_minor_per_mwh: int) -> int:
    """Trade line amount `round(value(Q, price))`; also the imbalance line amount with D, Pref."""
    return divide_half_even(energy_wh * price_minor_per_mwh, WH_PER_MWH)


imbalance_amount_minor = trade_amount_minor


def penalty_amount_minor(excess_wh: int, price_minor_per_mwh: int, penalty_bps: int) -> int:
    """`round(value(E, Pref) * penaltyBps / 10,000)`, one rational rounded once."""
    return divide_half_even(excess_wh * price_minor_per_mwh * penalty_bps, WH_PER_MWH * BPS_PER_UNIT)


def tolerance_wh(contracted_net_wh: int, tolerance_bps: int) -> int:
    """`T = floor(|C| * toleranceBps / 10,000)`."""
    return abs(contracted_net_wh) * tolerance_bps // BPS_PER_UNIT


def excess_wh(imbalance_wh: int, tolerance: int) -> int:
    """`E = max(0, |D| - T)`."""
    return max(0, abs(imbalance_wh) - tolerance)


def interval_ref(interval_start: int) -> str:
    """The `ref` of imbalance and penalty lines: the interval start as a 32-byte integer."""
    return f"0x{interval_start:064x}"


# --- run identity --------------------------------------------------------------------------


def run_id(period_start: int, period_end: int, version: int) -> str:
    """`keccak256(abi.encode(uint64 periodStart, uint64 periodEnd, uint32 version))` of a valid run."""
    _check_period(period_start, period_end)
    _check_uint("version", version, _UINT32_MAX, minimum=1)
    return run_id_of(period_start, period_end, version)


def run_id_of(period_start: int, period_end: int, version: int) -> str:
    """The same hash without the checks: the contract computes it for any values, valid or not."""
    return "0x" + keccak(abi_encode(["uint64", "uint64", "uint32"], [period_start, period_end, version])).hex()


def inputs_hash(
    *,
    period_start: int,
    period_end: int,
    trade_ids: Iterable[str],
    reading_batch_roots: Iterable[str],
    price_batch_root: str,
    parameters: SettlementParameters,
    balancing_account: str,
) -> str:
    """The commitment to a run's inputs; the encoding is in the module docstring."""
    _check_period(period_start, period_end)
    _check_parameters(parameters)
    trade_id_list = _sorted_unique_bytes32("trade_ids", trade_ids)
    root_list = _sorted_unique_bytes32("reading_batch_roots", reading_batch_roots)
    encoded = abi_encode(
        ["uint32", "uint64", "uint64", "bytes32[]", "bytes32[]", "bytes32", "uint32", "uint32", "address"],
        [
            SETTLEMENT_RULES_VERSION,
            period_start,
            period_end,
            trade_id_list,
            root_list,
            bytes.fromhex(_bytes32("price_batch_root", price_batch_root)[2:]),
            parameters.tolerance_bps,
            parameters.penalty_bps,
            _Accounts().checksummed(balancing_account, "balancing_account"),
        ],
    )
    return "0x" + keccak(encoded).hex()


def price_inputs_root(price_batch_roots: Iterable[str]) -> str:
    """The `priceBatchRoot` of the inputs hash for the price batches a run used (module docstring)."""
    roots = _sorted_unique_bytes32("price_batch_roots", price_batch_roots)
    if not roots:
        raise ValidationError("a run is priced by at least one batch", field="price_batch_roots")
    if len(roots) == 1:
        return "0x" + roots[0].hex()
    return "0x" + keccak(abi_encode(["bytes32[]"], [roots])).hex()


# --- the run -------------------------------------------------------------------------------


def settle(inputs: SettlementInputs) -> SettlementResult:
    """One settlement run of SETTLEMENT.md: positions, then lines, then totals, then the
    invariant checks. Raises `ValidationError` subclasses for inputs that the rules refuse."""
    period_start, period_end = inputs.period_start, inputs.period_end
    identity = run_id(period_start, period_end, inputs.version)
    parameters = _check_parameters(inputs.parameters)
    accounts = _Accounts()
    balancing = accounts.checksummed(inputs.balancing_account, "balancing_account")
    grid = _PeriodGrid(
        period_start, period_end, _period_prices(inputs.reference_prices_minor_per_mwh, period_start, period_end)
    )

    lines: list[StatementLine] = []
    contracted = _trade_lines(inputs.trades, grid, balancing, accounts, lines)
    readings = _index_readings(inputs.readings, grid, balancing, accounts)
    positions = _positions_and_imbalance_lines(contracted, readings, grid, parameters, balancing, lines)
    lines.extend(_total_lines(lines))

    # A deterministic order, whatever the order of the inputs: (account, kind, ref) compared as
    # the tuple's fields (a plain tuple sort; a key function would cost more than the engine).
    lines.sort()
    _check_invariants(lines)
    return SettlementResult(identity, period_start, period_end, inputs.version, tuple(positions), tuple(lines))


class _PeriodGrid:
    """The period's intervals, numbered 0..n-1, with the Pref and the line ref of each."""

    __slots__ = ("end", "prices_minor_per_mwh", "refs", "size", "start")

    def __init__(self, start: int, end: int, prices: Mapping[int, int]) -> None:
        starts = range(start, end, INTERVAL_SECONDS)
        self.start, self.end, self.size = start, end, len(starts)
        self.prices_minor_per_mwh = [prices[interval] for interval in starts]
        self.refs = [interval_ref(interval) for interval in starts]

    def interval_start(self, index: int) -> int:
        return self.start + index * INTERVAL_SECONDS


@dataclass(slots=True)
class _Contracted:
    """S and B per participant, one list entry per interval of the period."""

    sold_wh: dict[str, list[int]]
    bought_wh: dict[str, list[int]]


def _trade_lines(
    trades: Iterable[RecordedTrade],
    grid: _PeriodGrid,
    balancing: str,
    accounts: _Accounts,
    lines: list[StatementLine],
) -> _Contracted:
    """Statement lines, kind 1, and S and B per participant and interval from the trades.

    S and B are summed through difference arrays: +e at the first interval inside the period,
    -e after the last, then a running sum, so a trade costs O(1) whatever its length."""
    sold_delta: dict[str, list[int]] = {}
    bought_delta: dict[str, list[int]] = {}
    size = grid.size
    seen_ids: set[str] = set()
    for trade in trades:
        trade_id = _bytes32("trades", trade.trade_id)
        if trade_id in seen_ids:
            raise ValidationError("a trade appears twice in the inputs", field="trades", trade_id=trade_id)
        seen_ids.add(trade_id)
        seller = accounts.checksummed(trade.seller, "trades")
        buyer = accounts.checksummed(trade.buyer, "trades")
        _check_trade(trade, trade_id, seller, buyer, balancing)
        first = max(trade.delivery_start, grid.start)
        end = min(trade.delivery_end, grid.end)
        if first >= end:
            raise ValidationError(
                "a trade does not overlap the period (only overlapping trades are inputs of a run)",
                field="trades",
                trade_id=trade_id,
            )
        first_index = (first - grid.start) // INTERVAL_SECONDS
        end_index = (end - grid.start) // INTERVAL_SECONDS
        energy = trade.energy_per_interval_wh
        for deltas, account in ((sold_delta, seller), (bought_delta, buyer)):
            delta = deltas.get(account)
            if delta is None:
                delta = deltas[account] = [0] * (size + 1)
            delta[first_index] += energy
            delta[end_index] -= energy
        quantity = energy * (end_index - first_index)
        amount = trade_amount_minor(quantity, trade.price_minor_per_mwh)
        lines.append(StatementLine(seller, LineKind.TRADE, trade_id, quantity, amount))
        lines.append(StatementLine(buyer, LineKind.TRADE, trade_id, -quantity, -amount))
    return _Contracted(
        {account: list(accumulate(delta[:size])) for account, delta in sold_delta.items()},
        {account: list(accumulate(delta[:size])) for account, delta in bought_delta.items()},
    )


def _index_readings(
    readings: Iterable[MeterReading],
    grid: _PeriodGrid,
    balancing: str,
    accounts: _Accounts,
) -> dict[str, list[MeterReading | None]]:
    """The readings per participant, one list entry per interval of the period."""
    indexed: dict[str, list[MeterReading | None]] = {}
    for reading in readings:
        participant = accounts.checksummed(reading.participant, "readings")
        if participant == balancing:
            raise BalancingAccountIsParticipant(
                "the balancing account has a meter reading", field="readings", account=participant
            )
        start = reading.interval_start
        if type(start) is not int or start % INTERVAL_SECONDS or not grid.start <= start < grid.end:
            raise ValidationError(
                "a reading's interval must start on the 900 s grid inside the period",
                field="readings",
                participant=participant,
                interval_start=start,
            )
        injected, withdrawn = reading.injected_wh, reading.withdrawn_wh
        if type(injected) is not int or type(withdrawn) is not int or injected < 0 or withdrawn < 0:
            raise ValidationError(
                "injected_wh and withdrawn_wh must be integers ≥ 0", field="readings", participant=participant
            )
        if reading.quality not in _QUALITY_CODES:
            raise ValidationError(
                "unknown reading quality", field="readings", participant=participant, quality=reading.quality
            )
        by_interval = indexed.get(participant)
        if by_interval is None:
            by_interval = indexed[participant] = [None] * grid.size
        index = (start - grid.start) // INTERVAL_SECONDS
        if by_interval[index] is not None:
            raise DuplicateReading(
                "two readings for the same participant and interval",
                field="readings",
                participant=participant,
                interval_start=start,
            )
        by_interval[index] = reading
    return indexed


def _positions_and_imbalance_lines(
    contracted: _Contracted,
    readings: Mapping[str, list[MeterReading | None]],
    grid: _PeriodGrid,
    parameters: SettlementParameters,
    balancing: str,
    lines: list[StatementLine],
) -> list[Position]:
    """Positions for every (participant, interval) with a trade or a reading; imbalance and
    penalty lines (kinds 2 and 3) with the balancing account's other side per interval."""
    tolerance_bps, penalty_bps = parameters.tolerance_bps, parameters.penalty_bps
    no_trades = [0] * grid.size
    no_readings: list[MeterReading | None] = [None] * grid.size
    balancing_imbalance_wh: dict[int, int] = {}  # interval index -> ΣD
    balancing_imbalance_minor: dict[int, int] = {}  # interval index -> ΣA
    balancing_penalty_minor: dict[int, int] = {}  # interval index -> ΣA
    positions: list[Position] = []
    participants = sorted(contracted.sold_wh.keys() | contracted.bought_wh.keys() | readings.keys())
    for participant in participants:
        sold_wh = contracted.sold_wh.get(participant, no_trades)
        bought_wh = contracted.bought_wh.get(participant, no_trades)
        by_interval = readings.get(participant, no_readings)
        for index in range(grid.size):
            sold, bought, reading = sold_wh[index], bought_wh[index], by_interval[index]
            # Energies are > 0, so S = B = 0 means no trade in this interval.
            if reading is None and sold == 0 and bought == 0:
                continue
            contracted_net = sold - bought
            # No reading: metered = contracted, zero imbalance, the interval marked estimated.
            metered = contracted_net if reading is None else reading.injected_wh - reading.withdrawn_wh
            imbalance = metered - contracted_net
            tolerance = tolerance_wh(contracted_net, tolerance_bps)
            excess = excess_wh(imbalance, tolerance)
            quality = None if reading is None else _quality(reading.quality)
            positions.append(
                Position(
                    participant,
                    grid.interval_start(index),
                    sold,
                    bought,
                    contracted_net,
                    metered,
                    imbalance,
                    tolerance,
                    excess,
                    reading is None,
                    quality,
                )
            )
            if imbalance == 0:
                continue  # and E = max(0, 0 - T) = 0: no line of either kind
            price, ref = grid.prices_minor_per_mwh[index], grid.refs[index]
            amount = imbalance_amount_minor(imbalance, price)
            lines.append(StatementLine(participant, LineKind.IMBALANCE, ref, imbalance, amount))
            balancing_imbalance_wh[index] = balancing_imbalance_wh.get(index, 0) + imbalance
            balancing_imbalance_minor[index] = balancing_imbalance_minor.get(index, 0) + amount
            if excess > 0:
                penalty = penalty_amount_minor(excess, price, penalty_bps)
                lines.append(StatementLine(participant, LineKind.PENALTY, ref, excess, -penalty))
                balancing_penalty_minor[index] = balancing_penalty_minor.get(index, 0) + penalty
    # The balancing account's side, one line per kind and interval with participant lines of
    # that kind, kept even where it nets to (0, 0).
    for index, imbalance_sum in balancing_imbalance_wh.items():
        lines.append(
            StatementLine(
                balancing, LineKind.IMBALANCE, grid.refs[index], -imbalance_sum, -balancing_imbalance_minor[index]
            )
        )
    for index, penalty_sum in balancing_penalty_minor.items():
        lines.append(StatementLine(balancing, LineKind.PENALTY, grid.refs[index], 0, penalty_sum))
    return positions


def _quality(code: ReadingQuality | str) -> ReadingQuality:
    return code if type(code) is ReadingQuality else ReadingQuality(code)


def _total_lines(lines: Iterable[StatementLine]) -> list[StatementLine]:
    """Kind 9, one per account with any line: energy of its trade and imbalance lines (penalty
    energy is not delivered energy), amount of all its lines."""
    energy_wh: defaultdict[str, int] = defaultdict(int)
    amount_minor: defaultdict[str, int] = defaultdict(int)
    for line in lines:
        if line.kind is not LineKind.PENALTY:
            energy_wh[line.account] += line.energy_wh
        amount_minor[line.account] += line.amount_minor
    return [
        StatementLine(account, LineKind.TOTAL, ZERO_ID, energy_wh[account], amount)
        for account, amount in amount_minor.items()
    ]


def _check_invariants(lines: Sequence[StatementLine]) -> None:
    """SETTLEMENT.md "Invariants", checked on every run: they cannot fail, but if a bug ever
    made them fail the run must stop here rather than publish a wrong root."""
    # int(kind): hashing an Enum member runs Python code, hashing an int does not.
    keys = {(line.account, int(line.kind), line.ref) for line in lines}
    if len(keys) != len(lines):
        raise SettlementInvariantViolated("two lines share (account, kind, ref)", lines=len(lines), unique=len(keys))
    totals = [line for line in lines if line.kind is LineKind.TOTAL]
    amount_sum = sum(line.amount_minor for line in totals)
    if amount_sum != 0:
        raise SettlementInvariantViolated("the total lines' amounts do not sum to 0", amount_sum=amount_sum)
    # Follows from the rules just as the amounts do: every delivered Wh has a counterparty.
    energy_sum = sum(line.energy_wh for line in totals)
    if energy_sum != 0:
        raise SettlementInvariantViolated("the total lines' energies do not sum to 0", energy_sum=energy_sum)


# --- input checks --------------------------------------------------------------------------


class _Accounts:
    """Checksums addresses, once per distinct spelling: a day has 100k trades but ~1k accounts."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def checksummed(self, address: str, field_name: str) -> str:
        cached = self._cache.get(address)
        if cached is not None:
            return cached
        if not isinstance(address, str) or not is_address(address):
            raise ValidationError("not an address (or a wrong EIP-55 checksum)", field=field_name, address=address)
        checksummed = to_checksum_address(address)
        self._cache[address] = checksummed
        return checksummed


def _check_uint(name: str, value: int, maximum: int, *, minimum: int = 0) -> None:
    if type(value) is not int or not minimum <= value <= maximum:
        raise ValidationError(f"{name} must be an integer in [{minimum}, {maximum}]", field=name, value=value)


def _check_period(period_start: int, period_end: int) -> None:
    _check_uint("period_start", period_start, _UINT64_MAX)
    _check_uint("period_end", period_end, _UINT64_MAX)
    if period_start % INTERVAL_SECONDS or period_end % INTERVAL_SECONDS or period_end <= period_start:
        raise ValidationError(
            f"a period is [start, end) with end > start, both multiples of {INTERVAL_SECONDS} s",
            field="period",
            period_start=period_start,
            period_end=period_end,
        )


def _check_parameters(parameters: SettlementParameters) -> SettlementParameters:
    _check_uint("tolerance_bps", parameters.tolerance_bps, _UINT32_MAX)
    _check_uint("penalty_bps", parameters.penalty_bps, _UINT32_MAX)
    return parameters


def _check_trade(trade: RecordedTrade, trade_id: str, seller: str, buyer: str, balancing: str) -> None:
    """The terms whose violation would make the lines wrong (the contract checks more)."""
    if seller == buyer:
        raise ValidationError("seller and buyer are the same account", field="trades", trade_id=trade_id)
    if balancing in (seller, buyer):
        raise BalancingAccountIsParticipant(
            "the balancing account is a party to a trade", field="trades", trade_id=trade_id, account=balancing
        )
    start, end = trade.delivery_start, trade.delivery_end
    if type(start) is not int or type(end) is not int or start % INTERVAL_SECONDS or end % INTERVAL_SECONDS:
        raise ValidationError("delivery must start and end on the 900 s grid", field="trades", trade_id=trade_id)
    energy, price = trade.energy_per_interval_wh, trade.price_minor_per_mwh
    # A negative quantity or price would swap who pays whom behind the line's back.
    if type(energy) is not int or energy <= 0 or type(price) is not int or price < 0:
        raise ValidationError(
            "energy per interval must be > 0 and the price ≥ 0, both integers", field="trades", trade_id=trade_id
        )


def _period_prices(prices: Mapping[int, int], period_start: int, period_end: int) -> dict[int, int]:
    """Pref for every interval of the period (SETTLEMENT.md: required, used or not)."""
    period = range(period_start, period_end, INTERVAL_SECONDS)
    missing = [start for start in period if start not in prices]
    if missing:
        raise MissingReferencePrice(missing)
    selected = {start: prices[start] for start in period}
    invalid = [start for start, price in selected.items() if type(price) is not int or price < 0]
    if invalid:
        # SETTLEMENT.md does not say what a penalty is at a negative price (as written it would
        # pay the participant); refuse rather than guess until the rulebook does.
        raise ValidationError(
            "reference prices must be integers ≥ 0", field="prices", intervals=invalid, count=len(invalid)
        )
    return selected


def _bytes32(field_name: str, value: str | bytes) -> str:
    """A bytes32 as lower-case 0x hex, from hex or raw bytes."""
    if isinstance(value, bytes) and len(value) == 32:
        return "0x" + value.hex()
    if isinstance(value, str) and len(value) == 66 and value[:2] == "0x":
        try:
            if len(bytes.fromhex(value[2:])) == 32:
                return value.lower()
        except ValueError:
            pass
    raise ValidationError("expected a bytes32 (0x and 64 hex digits)", field=field_name, value=repr(value))


def _sorted_unique_bytes32(field_name: str, values: Iterable[str]) -> list[bytes]:
    normalized = sorted(_bytes32(field_name, value) for value in values)
    duplicates = sorted({a for a, b in pairwise(normalized) if a == b})
    if duplicates:
        raise ValidationError(f"duplicate {field_name}", field=field_name, duplicates=duplicates)
    return [bytes.fromhex(value[2:]) for value in normalized]
