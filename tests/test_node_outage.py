"""The node stopped and started again under the running service (real processes: anvil keeping
its chain in a state file, `python -m scripts.serve` with its workers' process): every accepted
trade is recorded once the node is back, none twice, and a stop of the service during the
outage, or while its batch waits for a block, ends it in time. Also: /health reports a relayer
that makes no progress while trades wait.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr
from sqlalchemy import select

from api.app import create_app
from ledger.chain.compiler import compile_contracts
from ledger.chain.node import LocalNode
from ledger.chain.trade_ledger import TRADE_RECORDED_TOPIC
from ledger.config import PROJECT_ROOT, Settings
from ledger.domain.trade import ParticipantKind
from ledger.services.context import LedgerContext
from ledger.services.devstack import deploy
from ledger.services.runtime import LedgerService
from ledger.store.db import make_engine, make_session_factory
from ledger.store.models import Submission, SubmissionStatus
from tests.support.market import Market
from tests.support.service import CHAIN_ID, OPERATOR_TOKEN, market_for, serve, signed_json, wait_for

OUTAGE_SECONDS = 10
RECORDED_WITHIN_SECONDS = 30  # of the node's return
STOPPED_WITHIN_SECONDS = 30


def settings_for(rpc_url: str, database_url: str, workdir: Path, **overrides: object) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="local",
        rpc_url=rpc_url,
        chain_id=CHAIN_ID,
        database_url=database_url,
        deployment_file=workdir / "deployment.json",
        confirmations=1,
        relayer_batch_window_ms=20,
        operator_token=SecretStr(OPERATOR_TOKEN),
        rate_limit_per_second=0,
        token_rate_limit_per_second=0,
        **overrides,  # type: ignore[arg-type]
    )


@contextmanager
def service_process(settings: Settings, workdir: Path) -> Iterator[tuple[subprocess.Popen[bytes], httpx.Client]]:
    """`python -m scripts.serve` over the deployed contracts, as an operator would run it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(
        os.environ,
        GRIDLEDGER_ENVIRONMENT="local",
        GRIDLEDGER_RPC_URL=str(settings.rpc_url),
        GRIDLEDGER_CHAIN_ID=str(settings.chain_id),
        GRIDLEDGER_DATABASE_URL=settings.database_url,
        GRIDLEDGER_DEPLOYMENT_FILE=str(settings.deployment_file),
        GRIDLEDGER_CONFIRMATIONS=str(settings.confirmations),
        GRIDLEDGER_RELAYER_BATCH_WINDOW_MS=str(settings.relayer_batch_window_ms),
        GRIDLEDGER_OPERATOR_TOKEN=OPERATOR_TOKEN,
        GRIDLEDGER_RATE_LIMIT_PER_SECOND="0",
        GRIDLEDGER_TOKEN_RATE_LIMIT_PER_SECOND="0",
    )
    with (workdir / "service.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scripts.serve", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:

        def healthy() -> bool:
            assert process.poll() is None, (workdir / "service.log").read_text()
            try:
                return client.get("/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, "the service to start", timeout=120, interval=0.2)
        yield process, client
    finally:
        client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOPPED_WITHIN_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def register(client: httpx.Client) -> LocalAccount:
    account: LocalAccount = Account.create()
    answer = client.post(
        "/participants",
        json={"address": account.address, "kind": "prosumer", "identifier": f"GLN-{account.address[2:10]}"},
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
    )
    assert answer.status_code == 202, answer.text
    registration = answer.json()["links"]["self"]
    wait_for(lambda: client.get(registration).json()["status"] == "registered", f"{registration} registered")
    return account


def bodies(market: Market, parties: tuple[LocalAccount, LocalAccount], count: int) -> list[dict[str, Any]]:
    """`count` new trades, signed by both parties (at the chain's time: ask while it answers)."""
    return [signed_json(market.signed(*parties)) for _ in range(count)]


def submit(client: httpx.Client, trades: list[dict[str, Any]]) -> list[str]:
    """The ids of the submissions the service accepted (202)."""
    accepted = []
    for body in trades:
        try:
            answer = client.post("/trades", json=body)
        except httpx.TransportError:
            continue
        if answer.status_code == 202:
            accepted.append(answer.json()["submissionId"])
    return accepted


def statuses(database_url: str, ids: list[str]) -> dict[str, SubmissionStatus]:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            rows = session.execute(select(Submission.id, Submission.status).where(Submission.id.in_(ids)))
            return {row.id: row.status for row in rows}
    finally:
        engine.dispose()


def recorded_trade_ids(market: Market) -> Counter[str]:
    logs = market.rpc.call(
        "eth_getLogs",
        {"address": market.address, "fromBlock": "0x0", "toBlock": "latest", "topics": [TRADE_RECORDED_TOPIC]},
    )
    return Counter(log["topics"][1] for log in logs)


def test_every_trade_accepted_around_a_restart_of_the_node_is_recorded_once(database_url: str, tmp_path: Path) -> None:
    node = LocalNode("anvil", chain_id=CHAIN_ID, block_time=1, state_path=tmp_path / "chain.json")
    with node:
        settings = settings_for(node.rpc_url, database_url, tmp_path)
        deployment = deploy(settings, node.rpc_url)
        with service_process(settings, tmp_path) as (_, client):
            market = market_for(node.rpc_url, deployment, compile_contracts()["TradeLedger"].abi)
            parties = (register(client), register(client))
            during_outage = bodies(market, parties, 5)
            accepted = submit(client, bodies(market, parties, 20))
            accepted += submit(client, bodies(market, parties, 1))

            def in_the_mempool() -> bool:  # a batch sent, not mined yet: the restart loses it
                return SubmissionStatus.PENDING in statuses(database_url, accepted).values()

            wait_for(in_the_mempool, "a batch in the mempool", interval=0.01)
            node.stop()
            stopped = time.monotonic()
            accepted += submit(client, during_outage)  # those the service accepts without the node count too
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
            node.start()
            node.wait_ready()
            back = time.monotonic()
            accepted += submit(client, bodies(market, parties, 100))

            def all_recorded() -> bool:
                found = statuses(database_url, accepted)
                return all(found[i] is SubmissionStatus.RECORDED for i in accepted)

            wait_for(
                all_recorded, "every accepted trade recorded", timeout=back + RECORDED_WITHIN_SECONDS - time.monotonic()
            )
            health = client.get("/health")
            assert health.status_code == 200, health.text
            assert health.json()["workers"]["relayer"]["stalled"] is False

            recorded = recorded_trade_ids(market)
            assert len(accepted) >= 120
            assert set(recorded.values()) == {1}  # none twice
            assert len(recorded) == len(accepted)
            market.rpc.close()


def test_a_stop_of_the_service_while_the_node_is_away_ends_it_in_time(tmp_path: Path) -> None:
    node = LocalNode("anvil", chain_id=CHAIN_ID, block_time=1, state_path=tmp_path / "chain.json")
    with node:
        settings = settings_for(node.rpc_url, f"sqlite:///{tmp_path / 'gridledger.db'}", tmp_path)
        deployment = deploy(settings, node.rpc_url)
        with service_process(settings, tmp_path) as (process, client):
            market = market_for(node.rpc_url, deployment, compile_contracts()["TradeLedger"].abi)
            parties = (register(client), register(client))
            assert submit(client, bodies(market, parties, 20))
            node.stop()
            time.sleep(2)  # the workers meet the outage

            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            process.wait(STOPPED_WITHIN_SECONDS)

            assert time.monotonic() - started < STOPPED_WITHIN_SECONDS
            market.rpc.close()


def test_health_reports_a_relayer_that_makes_no_progress_while_trades_wait(
    anvil: LocalNode, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(anvil.rpc_url, database_url, tmp_path, relayer_stall_seconds=1)
    deployment = deploy(settings, anvil.rpc_url)
    context = LedgerContext.open(settings)
    try:
        service = LedgerService(context)
        service.relayer.run = lambda stop: stop.wait()  # type: ignore[method-assign]  # alive, never relaying
        market = market_for(anvil.rpc_url, deployment, context.abi)
        parties: tuple[LocalAccount, LocalAccount] = (Account.create(), Account.create())
        for account in parties:
            service.participants.register(account.address, ParticipantKind.PROSUMER, f"GLN-{account.address}")
        with serve(create_app(settings, service=service)) as base_url, httpx.Client(base_url=base_url) as client:
            wait_for(lambda: client.get("/health").status_code == 200, "the service to be healthy")
            assert client.get("/health").json()["workers"]["relayer"] == {
                "alive": True,
                "state": "running",
                "restarts": 0,
                "stalled": False,
                "waitingSince": None,
            }
            service.trading.submit(market.signed(*parties))

            wait_for(lambda: client.get("/health").status_code == 503, "the stalled relayer reported")
            health = client.get("/health").json()
            assert health["status"] == "degraded"
            assert health["workers"]["relayer"]["alive"] is True
            assert health["workers"]["relayer"]["stalled"] is True
            assert health["workers"]["relayer"]["waitingSince"] is not None
            assert health["workers"]["indexer"] == {"alive": True, "state": "running", "restarts": 0}
        market.rpc.close()
    finally:
        context.close()


def test_a_stop_of_the_service_while_its_batch_waits_for_a_block_ends_it_in_time(tmp_path: Path) -> None:
    """The relayer waits for receipts of a batch that no block takes (before: up to 120 s, and the
    stop waited for it)."""
    node = LocalNode("anvil", chain_id=CHAIN_ID, block_time=1)
    with node:
        settings = settings_for(node.rpc_url, f"sqlite:///{tmp_path / 'gridledger.db'}", tmp_path)
        deployment = deploy(settings, node.rpc_url)
        with service_process(settings, tmp_path) as (process, client):
            market = market_for(node.rpc_url, deployment, compile_contracts()["TradeLedger"].abi)
            parties = (register(client), register(client))
            trades = bodies(market, parties, 5)
            market.rpc.call("evm_setIntervalMining", 0)
            market.rpc.call("evm_setAutomine", False)  # no more blocks
            accepted = submit(client, trades)

            def waiting() -> bool:
                return SubmissionStatus.PENDING in statuses(settings.database_url, accepted).values()

            wait_for(waiting, "the batch sent and waiting for its block")
            process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            process.wait(STOPPED_WITHIN_SECONDS + 30)

            assert time.monotonic() - started < STOPPED_WITHIN_SECONDS
            market.rpc.close()
