"""Benchmark: recording signed trades, through the ledger layer and through the HTTP API.

Starts its own anvil node with interval mining (1 s blocks, as under load; automine would mine
one block per transaction), deploys, registers participants, pre-signs the trades, then records:

  baseline   one trade per transaction (`recordTrade`), all sent at once
  ledger     `recordTrades` batches through the ledger layer, several transactions in flight
  http       POST /trades/batch to the service, run as its own process (API -> outbox ->
             relayer -> chain); timed until the relayer has recorded every trade
  http/1     the same with one trade per POST /trades request, from 8 client threads

and prints trades/s and gas per trade for each, with the ratio to the baseline measured in the
same run (the machines are shared and noisy: compare ratios, not absolute figures).

The service runs with its rate limits off: the bench measures throughput, not the limiter (one
client address sending thousands of requests would be refused with 429 at the default limits).

    python -m scripts.bench_record --trades 5000
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import create_engine, func, select

from ledger.chain.compiler import compile_contracts
from ledger.chain.deployment import Deployment, deploy_contracts
from ledger.chain.node import DEV_ACCOUNT_KEYS, LocalNode
from ledger.chain.rpc import JsonRpc
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.chain.transactions import TransactionSender
from ledger.domain.trade import DEFAULT_TRADE_LIMITS, ParticipantKind, SignedTrade, Trade
from ledger.domain.units import INTERVAL_SECONDS, to_datetime
from ledger.signing.eip712 import Domain
from ledger.signing.trader import countersigned, new_nonce
from ledger.store.models import Submission, SubmissionStatus
from scripts.bench_env import print_header
from scripts.progress import Progress, chunks

CHAIN_ID = 31337
# The service's settings for a load from one client: the benches measure throughput, not the limiter.
RATE_LIMITS_OFF = {"GRIDLEDGER_RATE_LIMIT_PER_SECOND": "0", "GRIDLEDGER_TOKEN_RATE_LIMIT_PER_SECOND": "0"}


@dataclass(frozen=True)
class Figure:
    name: str
    trades: int
    seconds: float
    gas_per_trade: float

    @property
    def rate(self) -> float:
        return self.trades / self.seconds


@contextmanager
def chain(block_time: float) -> Iterator[JsonRpc]:
    with LocalNode("anvil", chain_id=CHAIN_ID, block_time=block_time) as node:
        rpc = JsonRpc(node.rpc_url)
        try:
            yield rpc
        finally:
            rpc.close()


def sender(rpc: JsonRpc, index: int) -> TransactionSender:
    return TransactionSender(rpc, Account.from_key(DEV_ACCOUNT_KEYS[index]), CHAIN_ID)


def register(operator: TradeLedgerContract, accounts: Sequence[LocalAccount]) -> None:
    txs = [
        operator.sender.sign(
            operator.address,
            operator.encode("registerParticipant", [a.address, ParticipantKind.PROSUMER.ordinal, b"\x01" * 32]),
            200_000,
        )
        for a in accounts
    ]
    refused = operator.sender.broadcast(txs)
    if refused:
        raise RuntimeError(f"registration refused: {refused}")
    operator.sender.wait([t.hash for t in txs])


def deploy_market(rpc: JsonRpc, participants: int) -> tuple[Deployment, TradeLedgerContract, list[LocalAccount], int]:
    """A fresh deployment (operator and recorder on dev accounts 1 and 2) with `participants`
    registered accounts: the deployment, the recorder's contract, the accounts and the latest
    block's time."""
    artifacts = compile_contracts()
    admin, operator_sender, recorder_sender = sender(rpc, 0), sender(rpc, 1), sender(rpc, 2)
    deployment = deploy_contracts(
        admin, artifacts, roles={"operator": operator_sender.address, "recorder": recorder_sender.address}
    )
    address, abi = deployment.contracts["TradeLedger"].address, artifacts["TradeLedger"].abi
    accounts = [Account.create() for _ in range(participants)]
    register(TradeLedgerContract(operator_sender, address, abi), accounts)
    now = int(rpc.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)
    return deployment, TradeLedgerContract(recorder_sender, address, abi), accounts, now


def make_trades(domain: Domain, accounts: Sequence[LocalAccount], n: int, now: int) -> list[SignedTrade]:
    start = (now + DEFAULT_TRADE_LIMITS.gate_closure_seconds) // INTERVAL_SECONDS * INTERVAL_SECONDS + 4 * 900
    progress = Progress("signing", n)
    trades = []
    for i in range(n):
        seller = accounts[i % len(accounts)]
        buyer = accounts[(i * 7 + 1) % len(accounts)]
        if buyer is seller:
            buyer = accounts[(i + 1) % len(accounts)]
        trade = Trade(
            seller.address,
            buyer.address,
            start + (i % 96) * INTERVAL_SECONDS,
            start + (i % 96 + 4) * INTERVAL_SECONDS,
            100_000 + i,
            30_000 + i % 1000,
            new_nonce(),
            now + 7200,
        )
        trades.append(countersigned(seller, buyer, domain, trade))
        if i % 500 == 499:
            progress.add(500)
    return trades


def record_one_per_tx(ledger: TradeLedgerContract, trades: list[SignedTrade]) -> Figure:
    started = time.monotonic()
    gas = 0
    progress = Progress("baseline", len(trades))
    for chunk in chunks(trades, 100):
        txs = []
        for signed in chunk:
            data = ledger.encode("recordTrade", [signed.as_tuple()])
            txs.append(ledger.sender.sign(ledger.address, data, 150_000))
        refused = ledger.sender.broadcast(txs)
        if refused:
            raise RuntimeError(f"refused: {next(iter(refused.values()))}")
        receipts = ledger.sender.wait([t.hash for t in txs])
        gas += sum(r.gas_used for r in receipts.values())
        assert all(r.status == 1 for r in receipts.values())
        progress.add(len(chunk))
    return Figure("baseline: one trade per tx", len(trades), time.monotonic() - started, gas / len(trades))


def record_batches(ledger: TradeLedgerContract, trades: list[SignedTrade], batch_size: int, in_flight: int) -> Figure:
    started = time.monotonic()
    gas = recorded = 0
    progress = Progress("ledger batches", len(trades))
    for round_ in chunks(trades, batch_size * in_flight):
        txs = [ledger.sign_record_trades(batch) for batch in chunks(round_, batch_size)]
        refused = ledger.sender.broadcast(txs)
        if refused:
            raise RuntimeError(f"refused: {next(iter(refused.values()))}")
        receipts = ledger.sender.wait([t.hash for t in txs])
        for receipt in receipts.values():
            outcome = ledger.batch_outcome(receipt)
            if outcome.rejected:
                raise RuntimeError(f"rejected: {next(iter(outcome.rejected.values()))}")
            recorded += len(outcome.recorded)
            gas += receipt.gas_used
        progress.add(len(round_))
    assert recorded == len(trades)
    return Figure(f"ledger layer: batches of {batch_size}", len(trades), time.monotonic() - started, gas / len(trades))


def full_batch_gas(ledger: TradeLedgerContract, trades: list[SignedTrade]) -> float:
    tx = ledger.sign_record_trades(trades)
    ledger.sender.broadcast([tx])
    receipt = ledger.sender.wait([tx.hash])[tx.hash]
    assert len(ledger.batch_outcome(receipt).recorded) == len(trades)
    return receipt.gas_used / len(trades)


@contextmanager
def service_process(rpc_url: str, deployment: Deployment, workdir: Path) -> Iterator[tuple[str, str]]:
    """`python -m scripts.serve` on the bench's chain and deployment; yields (base URL, DB URL)."""
    deployment_file = workdir / "deployment.json"
    deployment.save(deployment_file)
    database_url = f"sqlite:///{workdir / 'bench.db'}"
    port = _free_port()
    env = dict(
        os.environ,
        GRIDLEDGER_RPC_URL=rpc_url,
        GRIDLEDGER_CHAIN_ID=str(CHAIN_ID),
        GRIDLEDGER_DEPLOYMENT_FILE=str(deployment_file),
        GRIDLEDGER_DATABASE_URL=database_url,
        GRIDLEDGER_RELAYER_BATCH_WINDOW_MS="50",
        GRIDLEDGER_RELAYER_MAX_IN_FLIGHT="8",
        **RATE_LIMITS_OFF,
    )
    log = (workdir / "service.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start: see {workdir / 'service.log'}")
            time.sleep(0.2)
        yield base_url, database_url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def record_over_http(
    base_url: str, database_url: str, trades: list[SignedTrade], per_request: int, clients: int
) -> Figure:
    """Posts the trades (`per_request` per request; 1 means POST /trades), then waits until the
    relayer has recorded all of them; returns the end-to-end rate."""
    engine = create_engine(database_url)
    started = time.monotonic()
    progress = Progress(f"http ({per_request} per request)", len(trades))

    def post(chunk: list[SignedTrade], client: httpx.Client) -> None:
        if per_request == 1:
            answer = client.post("/trades", json=_body(chunk[0]))
            ok = answer.status_code == 202
        else:
            answer = client.post("/trades/batch", json={"trades": [_body(t) for t in chunk]})
            ok = answer.status_code == 200 and all("submissionId" in r for r in answer.json()["results"])
        if not ok:
            raise RuntimeError(f"the service refused a trade: {answer.status_code} {answer.text[:300]}")

    requests = list(chunks(trades, per_request))
    with ThreadPoolExecutor(clients) as pool:
        local = threading.local()

        def worker(chunk: list[SignedTrade]) -> int:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=base_url, timeout=120)
            post(chunk, local.client)
            return len(chunk)

        for done in pool.map(worker, requests):
            progress.add(done)
    accepted = time.monotonic() - started
    with engine.connect() as db:
        while True:
            recorded = (
                db.scalar(
                    select(func.count()).select_from(Submission).where(Submission.status == SubmissionStatus.RECORDED)
                )
                or 0
            )
            if recorded >= len(trades):
                break
            time.sleep(0.1)
    seconds = time.monotonic() - started
    engine.dispose()
    name = "http: POST /trades/batch" if per_request > 1 else f"http: POST /trades x {clients} clients"
    print(f"  {name}: all accepted after {accepted:.1f} s, all recorded after {seconds:.1f} s", file=sys.stderr)
    return Figure(name, len(trades), seconds, float("nan"))


def _body(signed: SignedTrade) -> dict[str, object]:
    trade = signed.trade
    return {
        "trade": {
            "seller": trade.seller,
            "buyer": trade.buyer,
            "deliveryStart": _iso(trade.delivery_start),
            "deliveryEnd": _iso(trade.delivery_end),
            "energyPerIntervalWh": trade.energy_per_interval_wh,
            "priceMinorPerMWh": trade.price_minor_per_mwh,
            "nonce": str(trade.nonce),
            "deadline": _iso(trade.deadline),
            "replaces": trade.replaces,
        },
        "sellerSignature": "0x" + signed.seller_signature.hex(),
        "buyerSignature": "0x" + signed.buyer_signature.hex(),
    }


def _iso(unix_seconds: int) -> str:
    return to_datetime(unix_seconds).isoformat()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=5000, help="trades for the ledger-layer run")
    parser.add_argument("--baseline-trades", type=int, default=500)
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--block-time", type=float, default=1.0)
    parser.add_argument("--http-trades", type=int, default=3000, help="trades for each HTTP run")
    args = parser.parse_args(argv)
    print_header("scripts.bench_record", argv)

    with chain(args.block_time) as rpc:
        deployment, recorder, accounts, now = deploy_market(rpc, args.participants)

        total = args.baseline_trades + args.trades + args.batch_size + 2 * args.http_trades
        signing_started = time.monotonic()
        trades = make_trades(recorder.domain, accounts, total, now)
        signing = time.monotonic() - signing_started

        baseline = record_one_per_tx(recorder, trades[: args.baseline_trades])
        ledger = record_batches(
            recorder, trades[args.baseline_trades : args.baseline_trades + args.trades], args.batch_size, args.in_flight
        )
        gas_full = full_batch_gas(recorder, trades[-args.batch_size :])
        http_trades = trades[args.baseline_trades + args.trades : -args.batch_size]
        with (
            tempfile.TemporaryDirectory() as workdir,
            service_process(rpc.url, deployment, Path(workdir)) as (base_url, database_url),
        ):
            http_batch = record_over_http(base_url, database_url, http_trades[: args.http_trades], 500, 2)
            http_single = record_over_http(base_url, database_url, http_trades[args.http_trades :], 1, 8)

    print()
    print(f"anvil, interval mining {args.block_time:g} s, {args.participants} participants")
    print("HTTP runs: the service's rate limits are off (the bench measures throughput, not the limiter)")
    print(f"signing (2 signatures per trade, not in the figures below): {total / signing:,.0f} trades/s")
    print(f"{'run':40} {'trades':>7} {'trades/s':>10} {'gas/trade':>10} {'vs baseline':>12}")
    for figure in (baseline, ledger, http_batch, http_single):
        gas = "" if figure.gas_per_trade != figure.gas_per_trade else f"{figure.gas_per_trade:,.0f}"
        print(
            f"{figure.name:40} {figure.trades:>7} {figure.rate:>10,.0f} {gas:>10} {figure.rate / baseline.rate:>11.1f}x"
        )
    print(f"gas per trade in one full batch of {args.batch_size}: {gas_full:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
