"""Public market data: volume and volume-weighted price per delivery interval, without parties.

A trade delivers `energy_per_interval_wh` in every interval of [delivery_start, delivery_end) at
its price, so it counts in each of those intervals. Only trades in force count (recorded, not
cancelled or amended). The VWAP is sum(energy x price) / sum(energy) in minor units per MWh,
rounded half to even like every settlement amount (SETTLEMENT.md); the exact numerator is given
too, so nobody has to trust the rounding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ledger.domain.settlement import divide_half_even
from ledger.domain.units import INTERVAL_SECONDS


@dataclass(frozen=True)
class TradeVolume:
    delivery_start: int
    delivery_end: int
    energy_per_interval_wh: int
    price_minor_per_mwh: int


@dataclass(frozen=True)
class IntervalAggregate:
    interval_start: int
    trade_count: int
    volume_wh: int
    value_wh_minor_per_mwh: int  # sum(energy x price): the VWAP's exact numerator
    vwap_minor_per_mwh: int | None  # None for an interval without trades
    low_minor_per_mwh: int | None
    high_minor_per_mwh: int | None


def interval_aggregates(trades: Iterable[TradeVolume], start: int, end: int) -> list[IntervalAggregate]:
    """One aggregate per interval of [start, end) (aligned), empty intervals included."""
    if start % INTERVAL_SECONDS or end % INTERVAL_SECONDS or end <= start:
        raise ValueError("start and end must be interval-aligned with end after start")
    count = (end - start) // INTERVAL_SECONDS
    trade_counts = [0] * count
    volumes = [0] * count
    values = [0] * count
    lows: list[int | None] = [None] * count
    highs: list[int | None] = [None] * count
    for trade in trades:
        first = max(trade.delivery_start, start)
        last = min(trade.delivery_end, end)
        price = trade.price_minor_per_mwh
        for slot in range((first - start) // INTERVAL_SECONDS, (last - start) // INTERVAL_SECONDS):
            trade_counts[slot] += 1
            volumes[slot] += trade.energy_per_interval_wh
            values[slot] += trade.energy_per_interval_wh * price
            low, high = lows[slot], highs[slot]
            lows[slot] = price if low is None or price < low else low
            highs[slot] = price if high is None or price > high else high
    return [
        IntervalAggregate(
            interval_start=start + slot * INTERVAL_SECONDS,
            trade_count=trade_counts[slot],
            volume_wh=volumes[slot],
            value_wh_minor_per_mwh=values[slot],
            vwap_minor_per_mwh=divide_half_even(values[slot], volumes[slot]) if volumes[slot] else None,
            low_minor_per_mwh=lows[slot],
            high_minor_per_mwh=highs[slot],
        )
        for slot in range(count)
    ]
