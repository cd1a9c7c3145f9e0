"""Benchmark: the settlement run of one busy day, end to end on a real chain and index.

Prepares (untimed, with progress on stderr): an anvil node, a fresh deployment, 1,000 registered
participants, 50,000 trades of 1-16 intervals inside one UTC day recorded through the ledger
layer in `recordTrades` batches (before their gate closure: the day lies ahead of chain time),
chain time moved past the day (evm_increaseTime), the trade index caught up, one batch of
readings (about 95 % of the participant-intervals, metered a few percent off contracted) and the
day's 96 reference prices imported through MeteringService, and the index caught up again: a run
takes only batches whose blocks are final in the index, and no indexer follows the head here as
the service's does.

Then times `SettlementService.execute` for the day: gathering the inputs from the index,
computing, the Merkle tree, writing the run (lines and positions), the commit transaction (and
its gas), and the whole run; the target is under 60 s for the whole run, in one commit
transaction whatever the size. A second execute shows the no-op of unchanged inputs.

    python -m scripts.bench_settle [--participants 1000] [--trades 50000] [--database-url URL]

Figures vary with the machine and its load: run it twice before drawing conclusions.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr

from ledger.chain.node import LocalNode
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.config import Settings
from ledger.domain.settlement import MeterReading, ReadingQuality
from ledger.domain.trade import DEFAULT_TRADE_LIMITS, ParticipantKind, SignedTrade, Trade
from ledger.domain.units import INTERVAL_SECONDS, to_datetime
from ledger.services.context import LedgerContext
from ledger.services.devstack import deploy
from ledger.services.metering import MeteringService
from ledger.services.runtime import LedgerService
from ledger.services.settlement import ProgressEvent, SettlementService
from ledger.signing.trader import countersigned
from scripts.bench_env import print_header
from scripts.progress import Progress, chunks

CHAIN_ID = 31337
INTERVALS_PER_DAY = 96
T = TypeVar("T")


def chain_now(context: LedgerContext) -> int:
    return int(context.rpc.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)


# --- preparation -------------------------------------------------------------------------------


def register(operator: TradeLedgerContract, accounts: Sequence[LocalAccount]) -> None:
    progress = Progress("registering participants", len(accounts))
    for chunk in chunks(accounts, 250):
        txs = [
            operator.sender.sign(
                operator.address,
                operator.encode("registerParticipant", [a.address, ParticipantKind.PROSUMER.ordinal, b"\x01" * 32]),
                200_000,
            )
            for a in chunk
        ]
        refused = operator.sender.broadcast(txs)
        if refused:
            raise RuntimeError(f"registration refused: {next(iter(refused.values()))}")
        receipts = operator.sender.wait([t.hash for t in txs])
        assert all(r.status == 1 for r in receipts.values())
        progress.add(len(chunk))


def make_trades(
    rng: random.Random, recorder: TradeLedgerContract, accounts: Sequence[LocalAccount], n: int, day: int, now: int
) -> tuple[list[SignedTrade], dict[tuple[str, int], int]]:
    """Signed trades inside the day, and the contracted net energy per (participant, interval)."""
    contracted: defaultdict[tuple[str, int], int] = defaultdict(int)
    trades = []
    progress = Progress("signing trades (2 signatures each)", n)
    for i in range(n):
        seller, buyer = rng.sample(accounts, 2)
        length = rng.randint(1, 16)
        first = rng.randrange(0, INTERVALS_PER_DAY - length + 1)
        start = day + first * INTERVAL_SECONDS
        energy = rng.randint(1, 5_000) * 1_000
        trade = Trade(
            seller.address,
            buyer.address,
            start,
            start + length * INTERVAL_SECONDS,
            energy,
            rng.randint(200, 900) * 100,
            rng.getrandbits(64),
            now + 3 * 86_400,
        )
        trades.append(countersigned(seller, buyer, recorder.domain, trade))
        for k in range(first, first + length):
            contracted[seller.address, day + k * INTERVAL_SECONDS] += energy
            contracted[buyer.address, day + k * INTERVAL_SECONDS] -= energy
        if i % 1000 == 999 or i == n - 1:
            progress.add(i % 1000 + 1)
    return trades, contracted


def record(recorder: TradeLedgerContract, trades: list[SignedTrade], batch_size: int, in_flight: int) -> int:
    """Records the trades in `recordTrades` batches, `in_flight` transactions at a time; total gas."""
    progress = Progress("recording trades", len(trades))
    gas = 0
    for round_ in chunks(trades, batch_size * in_flight):
        txs = [recorder.sign_record_trades(list(batch)) for batch in chunks(round_, batch_size)]
        refused = recorder.sender.broadcast(txs)
        if refused:
            raise RuntimeError(f"refused: {next(iter(refused.values()))}")
        for receipt in recorder.sender.wait([t.hash for t in txs], timeout=600).values():
            outcome = recorder.batch_outcome(receipt)
            if outcome.rejected:
                raise RuntimeError(f"a trade was rejected: {next(iter(outcome.rejected.values()))}")
            gas += receipt.gas_used
        progress.add(len(round_))
    return gas


def index(service: LedgerService, events: int, label: str = "indexing trade events") -> None:
    """Steps the service's indexer up to the head (final with one confirmation)."""
    progress = Progress(label, events)
    while True:
        step = service.indexer.step()
        progress.add(step.events)
        if step.to_block >= step.head:
            return


def readings_of(
    rng: random.Random, accounts: Sequence[LocalAccount], contracted: dict[tuple[str, int], int], day: int
) -> list[MeterReading]:
    """About 95 % of the participant-intervals, metered a few percent off contracted."""
    readings = []
    for account in accounts:
        for k in range(INTERVALS_PER_DAY):
            if rng.random() < 0.05:
                continue  # no reading: the run uses metered = contracted ("estimated")
            interval_start = day + k * INTERVAL_SECONDS
            planned = contracted.get((account.address, interval_start), 0)
            metered = planned + int(planned * rng.uniform(-0.06, 0.06)) + rng.randint(-2_000, 2_000)
            quality = ReadingQuality.MEASURED if rng.random() < 0.98 else ReadingQuality.SUBSTITUTED
            readings.append(MeterReading(account.address, interval_start, max(metered, 0), max(-metered, 0), quality))
    return readings


# --- the run -----------------------------------------------------------------------------------


def print_progress(event: ProgressEvent) -> None:
    counts = f" {event.done:,}/{event.total:,}" if event.total is not None else ""
    print(f"  settle: {event.step.value}{counts} {event.detail}".rstrip(), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participants", type=int, default=1_000)
    parser.add_argument("--trades", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=200, help="trades per recordTrades transaction")
    parser.add_argument("--in-flight", type=int, default=8, help="recordTrades transactions sent at once")
    parser.add_argument("--block-time", type=float, help="interval mining (default: automine)")
    parser.add_argument("--database-url", help="the index (default: a new SQLite file)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.participants < 2 or args.trades < 1:
        parser.error("argument --participants: at least 2 (and --trades at least 1)")
    print_header("scripts.bench_settle", argv)
    rng = random.Random(args.seed)

    prepared = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as workdir,
        LocalNode("anvil", chain_id=CHAIN_ID, block_time=args.block_time) as node,
    ):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            rpc_url=node.rpc_url,
            chain_id=CHAIN_ID,
            database_url=args.database_url or f"sqlite:///{Path(workdir) / 'bench.db'}",
            deployment_file=Path(workdir) / "deployment.json",
            confirmations=1,
            operator_token=SecretStr("bench"),
        )
        print("deploying", file=sys.stderr)
        deploy(settings, node.rpc_url)
        context = LedgerContext.open(settings)
        try:
            ledger = LedgerService(context)
            accounts = [Account.create() for _ in range(args.participants)]
            register(context.operator, accounts)

            # The first UTC midnight after gate closure: every trade of the day is still open.
            now = chain_now(context)
            earliest = to_datetime(now + DEFAULT_TRADE_LIMITS.gate_closure_seconds + 3_600)
            midnight = datetime(earliest.year, earliest.month, earliest.day, tzinfo=UTC) + timedelta(days=1)
            day = int(midnight.timestamp())
            day_end = day + INTERVALS_PER_DAY * INTERVAL_SECONDS
            print(f"the day: {midnight.date()} (chain time now {to_datetime(now)})", file=sys.stderr)
            trades, contracted = make_trades(rng, context.recorder, accounts, args.trades, day, now)
            record_gas = record(context.recorder, trades, args.batch_size, args.in_flight)

            print("moving chain time past the day", file=sys.stderr)
            context.rpc.call("evm_increaseTime", hex(day_end - chain_now(context) + 60))
            context.rpc.call("evm_mine")
            index(ledger, args.trades + args.participants)

            metering = MeteringService(context)
            readings = readings_of(rng, accounts, contracted, day)
            print(f"importing {len(readings):,} readings (one batch) and 96 prices", file=sys.stderr)
            metering.import_readings(readings, source="bench")
            prices = {day + k * INTERVAL_SECONDS: rng.randint(100, 1_200) * 100 for k in range(INTERVALS_PER_DAY)}
            metering.import_prices(prices, day, day_end, source="bench")
            index(ledger, 2, "indexing the two batch commitments")
            preparation = time.monotonic() - prepared

            settlement = SettlementService(context)
            nonce_before = int(
                context.rpc.call("eth_getTransactionCount", context.settler.sender.address, "latest"), 16
            )
            outcome = settlement.execute(day, day_end, progress=print_progress)
            again = settlement.execute(day, day_end)
            nonce_after = int(context.rpc.call("eth_getTransactionCount", context.settler.sender.address, "latest"), 16)
        finally:
            context.close()

    run, timings = outcome.run, outcome.timings
    backend = settings.database_url.split(":", 1)[0]
    print()
    print(
        f"anvil ({'automine' if args.block_time is None else f'{args.block_time:g} s blocks'}), {backend} index; "
        f"{args.participants:,} participants, {args.trades:,} trades, {len(readings):,} readings, one day "
        f"({INTERVALS_PER_DAY} intervals); preparation {preparation:,.0f} s "
        f"(recording: {record_gas / args.trades:,.0f} gas per trade)"
    )
    print(f"run {run.run_id} version {run.version}: {run.line_count:,} lines, root {run.root}")
    for label, key in (
        ("gathering inputs", "gathering"),
        ("computation", "computing"),
        ("Merkle tree", "tree"),
        ("DB writes", "writing"),
        ("commit (1 tx)", "commit"),
        ("whole run", "total"),
    ):
        print(f"  {label:<18} {timings.get(key, float('nan')):7.2f} s")
    print(f"  commit gas         {outcome.gas_used:,}")
    print(f"  commit transactions {nonce_after - nonce_before} (the second, unchanged run: {again.action.value})")
    verdict = "under" if timings["total"] < 60 else "OVER"
    print(f"whole run {timings['total']:.1f} s: {verdict} the 60 s target")
    return 0 if nonce_after - nonce_before == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
