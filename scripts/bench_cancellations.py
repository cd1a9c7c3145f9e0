"""Benchmark: cancelling recorded trades, one per transaction and through the service's batches.

Starts its own anvil node with interval mining (1 s blocks), deploys, registers participants,
records the trades to cancel (`recordTrades` batches), pre-signs both parties' `CancelTrade`s,
then cancels:

  baseline   one cancellation per transaction (`cancelTrade`), all sent at once
  http       POST /trades/cancel/batch to the service, run as its own process (API -> outbox ->
             relayer -> `cancelTrades` batches); timed until every cancellation is recorded

and prints cancellations/s and gas per cancellation, with the ratio to the baseline measured in
the same run (the machines are shared and noisy: compare ratios, not absolute figures).

    python -m scripts.bench_cancellations --cancellations 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
from eth_account.signers.local import LocalAccount
from sqlalchemy import create_engine, func, select

from ledger.chain.rpc import JsonRpc
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.domain.trade import SignedCancellation, SignedTrade
from ledger.domain.units import to_datetime
from ledger.signing.eip712 import Domain, trade_digest
from ledger.signing.trader import sign_cancel_trade
from ledger.store.models import Cancellation, SubmissionStatus, Trade
from scripts.bench_env import print_header
from scripts.bench_record import Figure, chain, deploy_market, make_trades, record_batches, service_process
from scripts.progress import Progress, chunks

REQUEST_SIZE = 500  # cancellations per POST /trades/cancel/batch


def sign_cancellations(
    domain: Domain, trades: list[SignedTrade], accounts: dict[str, LocalAccount], deadline: int
) -> list[SignedCancellation]:
    progress = Progress("signing cancellations", len(trades))
    signed = []
    for i, t in enumerate(trades):
        trade_id = "0x" + trade_digest(domain, t.trade).hex()
        seller, buyer = accounts[t.trade.seller], accounts[t.trade.buyer]
        signed.append(
            SignedCancellation(
                trade_id,
                t.trade.seller,
                t.trade.buyer,
                deadline,
                sign_cancel_trade(seller, domain, trade_id, deadline),
                sign_cancel_trade(buyer, domain, trade_id, deadline),
            )
        )
        if i % 200 == 199:
            progress.add(200)
    return signed


def cancel_one_per_tx(ledger: TradeLedgerContract, cancellations: list[SignedCancellation]) -> Figure:
    started = time.monotonic()
    gas = 0
    progress = Progress("baseline", len(cancellations))
    for chunk in chunks(cancellations, 100):
        txs = [ledger.sender.sign(ledger.address, ledger.encode("cancelTrade", [c.as_tuple()]), 120_000) for c in chunk]
        refused = ledger.sender.broadcast(txs)
        if refused:
            raise RuntimeError(f"refused: {next(iter(refused.values()))}")
        receipts = ledger.sender.wait([t.hash for t in txs])
        if not all(r.status == 1 for r in receipts.values()):
            raise RuntimeError("a baseline cancellation reverted")
        gas += sum(r.gas_used for r in receipts.values())
        progress.add(len(chunk))
    return Figure(
        "baseline: one cancelTrade per tx", len(cancellations), time.monotonic() - started, gas / len(cancellations)
    )


def cancel_over_http(rpc: JsonRpc, base_url: str, database_url: str, cancellations: list[SignedCancellation]) -> Figure:
    """Posts the cancellations in batches, then waits until the relayer has recorded all of them."""
    engine = create_engine(database_url)
    with engine.connect() as db:  # the service's index must have the trades before it cancels them
        while (db.scalar(select(func.count()).select_from(Trade)) or 0) < len(cancellations):
            time.sleep(0.2)
    progress = Progress("http cancellations", len(cancellations))
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for chunk in chunks(cancellations, REQUEST_SIZE):
            items = [
                {
                    "tradeId": c.trade_id,
                    "deadline": _iso(c.deadline),
                    "sellerSignature": "0x" + c.seller_signature.hex(),
                    "buyerSignature": "0x" + c.buyer_signature.hex(),
                }
                for c in chunk
            ]
            answer = client.post("/trades/cancel/batch", json={"cancellations": items})
            if answer.status_code != 200 or answer.json()["refused"]:
                raise RuntimeError(f"the service refused a cancellation: {answer.status_code} {answer.text[:300]}")
            progress.add(len(chunk))
    accepted = time.monotonic() - started
    done = Progress("http cancellations recorded", len(cancellations))
    with engine.connect() as db:
        while True:
            recorded = db.scalar(
                select(func.count()).select_from(Cancellation).where(Cancellation.status == SubmissionStatus.RECORDED)
            )
            done.update(recorded or 0)
            if (recorded or 0) >= len(cancellations):
                break
            time.sleep(0.1)
    seconds = time.monotonic() - started
    with engine.connect() as db:
        transactions = list(db.scalars(select(Cancellation.transaction_hash).distinct()))
    engine.dispose()
    gas = sum(int(rpc.call("eth_getTransactionReceipt", tx)["gasUsed"], 16) for tx in transactions)
    print(
        f"  all accepted after {accepted:.1f} s, all recorded on chain after {seconds:.1f} s,"
        f" in {len(transactions)} cancelTrades transactions",
        file=sys.stderr,
    )
    return Figure("http: POST /trades/cancel/batch", len(cancellations), seconds, gas / len(cancellations))


def _iso(unix_seconds: int) -> str:
    return to_datetime(unix_seconds).isoformat()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cancellations", type=int, default=1000, help="cancellations through the service")
    parser.add_argument("--baseline-cancellations", type=int, default=200)
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--block-time", type=float, default=1.0)
    args = parser.parse_args(argv)
    print_header("scripts.bench_cancellations", argv)

    with chain(args.block_time) as rpc:
        deployment, recorder, accounts, now = deploy_market(rpc, args.participants)
        total = args.baseline_cancellations + args.cancellations
        trades = make_trades(recorder.domain, accounts, total, now)
        record_batches(recorder, trades, 200, 8)
        by_address: dict[str, LocalAccount] = {a.address: a for a in accounts}
        cancellations = sign_cancellations(recorder.domain, trades, by_address, now + 3600)

        baseline = cancel_one_per_tx(recorder, cancellations[: args.baseline_cancellations])
        with (
            tempfile.TemporaryDirectory() as workdir,
            service_process(rpc.url, deployment, Path(workdir)) as (base_url, database_url),
        ):
            http = cancel_over_http(rpc, base_url, database_url, cancellations[args.baseline_cancellations :])

    print()
    print(f"anvil, interval mining {args.block_time:g} s, {args.participants} participants")
    print("HTTP runs: the service's rate limits are off (the bench measures throughput, not the limiter)")
    print(f"{'run':40} {'cancels':>7} {'seconds':>8} {'cancels/s':>10} {'gas/cancel':>11} {'vs baseline':>12}")
    for figure in (baseline, http):
        gas = "" if figure.gas_per_trade != figure.gas_per_trade else f"{figure.gas_per_trade:,.0f}"
        print(
            f"{figure.name:40} {figure.trades:>7} {figure.seconds:>8.1f} {figure.rate:>10,.0f} {gas:>11}"
            f" {figure.rate / baseline.rate:>11.1f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
