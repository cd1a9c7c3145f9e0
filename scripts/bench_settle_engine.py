"""Benchmark: the pure settlement engine and the Merkle tree over one day of a busy market.

Generates (seeded) 1,000 participants, 50,000 trades of 1-16 intervals each (some starting the day
before, so partly inside the period) and a reading for 95 % of the (participant, interval) pairs
of a 96-interval day, metered near contracted (a few percent off, so that there are penalties),
then times each step:

  settle    ledger.domain.settlement.settle: positions, lines, totals, invariant checks
  tree      StandardMerkleTree.of over one leaf per line
  proofs    get_proof for 1,000 lines
  dump      the JSON-safe dump of the whole tree

    python -m scripts.bench_settle_engine [--participants 1000] [--trades 50000] [--seed 7]

Figures vary with the machine and its load: run it twice before drawing conclusions.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import TypeVar

from ledger.domain.settlement import (
    MeterReading,
    ReadingQuality,
    RecordedTrade,
    SettlementInputs,
    settle,
)
from ledger.domain.units import INTERVAL_SECONDS
from scripts.bench_env import print_header

DAY_START = 1_767_225_600  # 2026-01-01T00:00:00Z
INTERVALS_PER_DAY = 96

T = TypeVar("T")


def generate(participants: int, trades: int, seed: int) -> SettlementInputs:
    rng = random.Random(seed)
    accounts = ["0x" + rng.randbytes(20).hex() for _ in range(participants)]
    day_end = DAY_START + INTERVALS_PER_DAY * INTERVAL_SECONDS
    contracted_wh: defaultdict[tuple[str, int], int] = defaultdict(int)
    trade_list = []
    for _ in range(trades):
        seller, buyer = rng.sample(accounts, 2)
        length = rng.randint(1, 16)
        # Up to 15 intervals before the day, so that some trades are only partly inside it.
        first = rng.randrange(-15, INTERVALS_PER_DAY)
        length = min(length, INTERVALS_PER_DAY - first) if first >= 0 else max(length, 1 - first)
        start = DAY_START + first * INTERVAL_SECONDS
        end = start + length * INTERVAL_SECONDS
        energy = rng.randint(1, 5_000) * 1_000
        trade_list.append(
            RecordedTrade(
                "0x" + rng.randbytes(32).hex(), seller, buyer, start, end, energy, rng.randint(200, 900) * 100
            )
        )
        for interval_start in range(max(start, DAY_START), min(end, day_end), INTERVAL_SECONDS):
            contracted_wh[seller, interval_start] += energy
            contracted_wh[buyer, interval_start] -= energy
    readings = []
    for account in accounts:
        for k in range(INTERVALS_PER_DAY):
            if rng.random() < 0.05:
                continue  # no reading: the engine uses metered = contracted
            interval_start = DAY_START + k * INTERVAL_SECONDS
            contracted = contracted_wh.get((account, interval_start), 0)
            metered = contracted + int(contracted * rng.uniform(-0.06, 0.06)) + rng.randint(-2_000, 2_000)
            quality = ReadingQuality.MEASURED if rng.random() < 0.98 else ReadingQuality.SUBSTITUTED
            readings.append(MeterReading(account, interval_start, max(metered, 0), max(-metered, 0), quality))
    prices = {DAY_START + k * INTERVAL_SECONDS: rng.randint(100, 1_200) * 100 for k in range(INTERVALS_PER_DAY)}
    operator = "0x" + "ba1a" * 10
    return SettlementInputs(DAY_START, day_end, 1, operator, trade_list, readings, prices)


def timed(label: str, step: Callable[[], T]) -> T:
    started = time.perf_counter()
    result = step()
    print(f"{label:<10} {time.perf_counter() - started:7.3f} s")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1_000)
    parser.add_argument("--trades", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    print_header("scripts.bench_settle_engine", argv)

    inputs = timed("generate", lambda: generate(args.participants, args.trades, args.seed))
    result = timed("settle", lambda: settle(inputs))
    tree = timed("tree", result.merkle_tree)
    timed("proofs", lambda: [tree.get_proof(i) for i in range(0, len(tree), max(1, len(tree) // 1_000))])
    timed("dump", tree.dump)
    estimated = sum(position.estimated for position in result.positions)
    print(
        f"{len(inputs.trades)} trades, {len(inputs.readings)} readings -> {len(result.positions)} positions "
        f"({estimated} estimated), {len(result.lines)} lines; root {tree.root}"
    )


if __name__ == "__main__":
    main()
