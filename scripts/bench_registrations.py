"""Benchmark: registering participants, one transaction each versus the operator's queue.

Starts its own anvil node with interval mining (1 s blocks by default), deploys, then registers
fresh accounts three ways:

  baseline   one `registerParticipant` transaction per participant through the ledger layer,
             all sent at once (the transactions of one block are mined together)
  http/batch POST /participants/batch (1,000 per request) to the service, run as its own process
             (API -> queue -> registrar -> chain); timed until every registration is
             `registered`, then until every participant is in the index (GET /participants
             shows it `active` instead of `pending`)
  http/1     POST /participants, one per request, from 8 client threads; timed the same way

and prints participants/s for each with the ratio to the baseline measured in the same run (the
machines are shared and noisy: compare ratios, not absolute figures), after the date, the machine,
the commit and the command (scripts/bench_env.py).

    python -m scripts.bench_registrations --registrations 1000
    python -m scripts.bench_registrations --small      # CI: a few of each, to prove it runs
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from eth_account import Account
from sqlalchemy import Engine, create_engine, func, select

from ledger.chain.compiler import compile_contracts
from ledger.chain.deployment import deploy_contracts
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.config import LOCAL_OPERATOR_TOKEN
from ledger.domain.trade import ParticipantKind
from ledger.store.models import Participant
from ledger.store.registration_models import ParticipantRegistration, RegistrationStatus
from scripts.bench_env import print_header
from scripts.bench_record import chain, sender, service_process
from scripts.progress import Progress, chunks

BATCH_REQUEST = 1000


@dataclass(frozen=True)
class Figure:
    name: str
    participants: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.participants / self.seconds


def register_one_per_tx(operator: TradeLedgerContract, accounts: Sequence[str]) -> Figure:
    started = time.monotonic()
    progress = Progress("baseline", len(accounts))
    for chunk in chunks(list(accounts), 100):
        txs = [
            operator.sender.sign(
                operator.address,
                operator.encode("registerParticipant", [a, ParticipantKind.PROSUMER.ordinal, b"\x01" * 32]),
                150_000,
            )
            for a in chunk
        ]
        refused = operator.sender.broadcast(txs)
        if refused:
            raise RuntimeError(f"refused: {next(iter(refused.values()))}")
        receipts = operator.sender.wait([t.hash for t in txs])
        assert all(r.status == 1 for r in receipts.values())
        progress.add(len(chunk))
    return Figure("baseline: one registerParticipant per tx", len(accounts), time.monotonic() - started)


def register_over_http(base_url: str, engine: Engine, accounts: Sequence[str], per_request: int) -> Figure:
    """Posts the registrations, then waits until all are registered and indexed."""
    started = time.monotonic()
    label = "http/batch" if per_request > 1 else "http/1"
    progress = Progress(f"{label} accepted", len(accounts))
    headers = {"Authorization": f"Bearer {os.environ.get('GRIDLEDGER_OPERATOR_TOKEN', LOCAL_OPERATOR_TOKEN)}"}
    local = threading.local()

    def post(chunk: list[str]) -> int:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, timeout=120, headers=headers)
        bodies = [{"address": a, "kind": "prosumer", "identifier": f"GLN-{a[2:14]}"} for a in chunk]
        if per_request == 1:
            answer = local.client.post("/participants", json=bodies[0])
            ok = answer.status_code == 202
        else:
            answer = local.client.post("/participants/batch", json={"participants": bodies})
            ok = answer.status_code == 200 and answer.json()["refused"] == 0
        if not ok:
            raise RuntimeError(f"the service refused a registration: {answer.status_code} {answer.text[:300]}")
        return len(chunk)

    with ThreadPoolExecutor(8 if per_request == 1 else 1) as pool:
        for done in pool.map(post, chunks(list(accounts), per_request)):
            progress.add(done)
    accepted = time.monotonic() - started
    registered = _wait_for(
        engine,
        select(func.count())
        .select_from(ParticipantRegistration)
        .where(ParticipantRegistration.address.in_(accounts))
        .where(ParticipantRegistration.status == RegistrationStatus.REGISTERED),
        f"{label} registered",
        len(accounts),
    )
    registered_at = time.monotonic() - started
    _wait_for(
        engine,
        select(func.count()).select_from(Participant).where(Participant.address.in_(accounts)),
        f"{label} indexed",
        len(accounts),
    )
    seconds = time.monotonic() - started
    assert registered == len(accounts)
    name = "http: POST /participants/batch" if per_request > 1 else "http: POST /participants x 8 clients"
    return Figure(name, len(accounts), seconds, f"accepted {accepted:.1f} s, registered {registered_at:.1f} s")


def _wait_for(engine: Engine, count: object, label: str, total: int, timeout: float = 300) -> int:
    progress = Progress(label, total)
    deadline = time.monotonic() + timeout
    with engine.connect() as db:
        while True:
            done = int(db.scalar(count) or 0)  # type: ignore[call-overload]
            progress.add(done - progress.done)
            if done >= total:
                return done
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: {done} of {total} after {timeout:.0f} s")
            db.rollback()  # a fresh snapshot each poll
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registrations", type=int, default=1000, help="participants for the batch run")
    parser.add_argument("--baseline", type=int, default=200, help="participants for the baseline")
    parser.add_argument("--single", type=int, default=200, help="participants for the one-per-request run")
    parser.add_argument("--block-time", type=float, default=1.0)
    parser.add_argument("--small", action="store_true", help="20 of each (CI: proves the benchmark runs)")
    args = parser.parse_args(argv)
    if args.small:
        args.registrations = args.baseline = args.single = 20

    print_header("scripts.bench_registrations", argv)
    artifacts = compile_contracts()
    with chain(args.block_time) as rpc:
        admin, operator_sender = sender(rpc, 0), sender(rpc, 1)
        deployment = deploy_contracts(admin, artifacts, roles={"operator": operator_sender.address})
        operator = TradeLedgerContract(
            operator_sender, deployment.contracts["TradeLedger"].address, artifacts["TradeLedger"].abi
        )
        baseline = register_one_per_tx(operator, [Account.create().address for _ in range(args.baseline)])
        with (
            tempfile.TemporaryDirectory() as workdir,
            service_process(rpc.url, deployment, Path(workdir)) as (base_url, database_url),
        ):
            engine = create_engine(database_url)
            try:
                batch = register_over_http(
                    base_url, engine, [Account.create().address for _ in range(args.registrations)], BATCH_REQUEST
                )
                single = register_over_http(base_url, engine, [Account.create().address for _ in range(args.single)], 1)
            finally:
                engine.dispose()

    print()
    print(f"anvil, interval mining {args.block_time:g} s; the service as `python -m scripts.serve` on SQLite")
    print("HTTP runs: the service's rate limits are off (the bench measures throughput, not the limiter)")
    print(f"{'run':40} {'count':>6} {'seconds':>8} {'per s':>8} {'vs baseline':>12}  (seconds: until all are indexed)")
    for figure in (baseline, batch, single):
        print(
            f"{figure.name:40} {figure.participants:>6} {figure.seconds:>8.1f} {figure.rate:>8,.0f}"
            f" {figure.rate / baseline.rate:>11.1f}x  {figure.note}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
