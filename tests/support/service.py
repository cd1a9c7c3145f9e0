"""The whole service for API tests: a fresh deployment, the ledger service with its relayer and
indexer threads, and the FastAPI app under uvicorn on a free port, driven over real HTTP."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvicorn
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import func, select

from api.app import create_app
from ledger.auth.scopes import ROLES
from ledger.chain.deployment import Deployment
from ledger.chain.node import DEV_ACCOUNT_KEYS, LocalNode
from ledger.chain.rpc import JsonRpc
from ledger.chain.transactions import TransactionSender
from ledger.config import Settings
from ledger.domain.trade import SignedTrade, Trade
from ledger.domain.units import to_datetime
from ledger.services.access import AccessService
from ledger.services.context import LedgerContext
from ledger.services.devstack import deploy
from ledger.services.runtime import LedgerService
from ledger.signing.trader import countersigned
from ledger.store import outbox
from ledger.store.models import Submission
from tests.support.market import Market

CHAIN_ID = 31337
OPERATOR_TOKEN = "test-operator-" + secrets.token_hex(8)
# Keys the service does not use, so tests can send from them without racing its nonces:
# the admin (only used to deploy), the pauser (the service never pauses), and two spare accounts.
TEST_ROLE_KEYS = {"admin": 0, "pauser": 3, "direct_recorder": 8, "outsider": 9}
WAIT_SECONDS = 30.0

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], what: str, timeout: float = WAIT_SECONDS, interval: float = 0.05) -> T:
    """Polls `probe` until it returns something other than None/False; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def market_for(rpc_url: str, deployment: Deployment, abi: list[dict[str, Any]]) -> Market:
    """A tests.support.market.Market around an existing deployment, holding only the keys in
    TEST_ROLE_KEYS (the operator and recorder keys belong to the running service)."""
    rpc = JsonRpc(rpc_url)
    senders = {
        role: TransactionSender(rpc, Account.from_key(DEV_ACCOUNT_KEYS[index]), deployment.chain_id)
        for role, index in TEST_ROLE_KEYS.items()
    }
    return Market(rpc, deployment.chain_id, deployment, abi, senders)


def trade_json(trade: Trade) -> dict[str, Any]:
    """The API form of trade terms: ISO 8601 times, the nonce as a decimal string."""
    return {
        "seller": trade.seller,
        "buyer": trade.buyer,
        "deliveryStart": iso(trade.delivery_start),
        "deliveryEnd": iso(trade.delivery_end),
        "energyPerIntervalWh": trade.energy_per_interval_wh,
        "priceMinorPerMWh": trade.price_minor_per_mwh,
        "nonce": str(trade.nonce),
        "deadline": iso(trade.deadline),
        "replaces": trade.replaces,
    }


def signed_json(signed: SignedTrade) -> dict[str, Any]:
    return {
        "trade": trade_json(signed.trade),
        "sellerSignature": "0x" + signed.seller_signature.hex(),
        "buyerSignature": "0x" + signed.buyer_signature.hex(),
    }


def iso(unix_seconds: int) -> str:
    return to_datetime(unix_seconds).isoformat()


@dataclass
class RunningService:
    client: httpx.Client  # with an auditor's token (every read scope, no operator action)
    public: httpx.Client  # without a token
    service: LedgerService
    settings: Settings
    market: Market
    auditor_token: str

    @property
    def operator(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    def settle(self, period: dict[str, str], expect: str = "succeeded") -> dict[str, Any]:
        """POST /settlement-runs, then the job until it ends (`expect`: succeeded or failed); with
        a succeeded job, its run (`GET /settlement-runs/{runId}`) under "run"."""
        answer = self.client.post("/settlement-runs", json=period, headers=self.operator)
        assert answer.status_code in (200, 202), answer.text
        assert answer.headers["location"] == f"/settlement-jobs/{answer.json()['jobId']}"
        job = self.wait_job(answer.json()["jobId"])
        assert job["status"] == expect, job
        if job["status"] == "succeeded":
            job["run"] = self.client.get(f"/settlement-runs/{job['runId']}").json()
        return job

    def wait_job(self, job_id: str) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            job: dict[str, Any] = self.client.get(f"/settlement-jobs/{job_id}", headers=self.operator).json()
            return job if job["status"] in ("succeeded", "failed") else None

        return wait_for(ended, f"settlement job {job_id}")

    def trader(self, account: LocalAccount) -> httpx.Client:
        """A client signed in as `account` (a registered participant) with SIWE; close it after use."""
        challenge = self.public.get("/auth/siwe/nonce", params={"address": account.address})
        assert challenge.status_code == 200, challenge.text
        message = challenge.json()["message"]
        signature = account.sign_message(encode_defunct(text=message)).signature.to_0x_hex()
        answer = self.public.post("/auth/siwe", json={"message": message, "signature": signature})
        assert answer.status_code == 201, answer.text
        token = answer.json()["accessToken"]
        return httpx.Client(base_url=self.public.base_url, timeout=60, headers={"Authorization": f"Bearer {token}"})

    def register(self, kind: str = "prosumer") -> LocalAccount:
        """A new participant, registered through the operator endpoint, mined (its registration's
        status is `registered`) and indexed (the register lists it `active`, no longer `pending`)."""
        account: LocalAccount = Account.create()
        answer = self.client.post(
            "/participants",
            json={"address": account.address, "kind": kind, "identifier": f"GLN-{account.address[2:10]}"},
            headers=self.operator,
        )
        assert answer.status_code == 202, answer.text
        self.wait_registered(answer.json()["links"]["self"])
        self.wait_indexed(f"/participants/{account.address}", lambda p: p["status"] == "active")
        return account

    def wait_registered(self, path: str) -> dict[str, Any]:
        def registered() -> dict[str, Any] | None:
            answer = self.client.get(path).json()
            assert answer["status"] != "rejected", answer
            return answer if answer["status"] == "registered" else None

        return wait_for(registered, f"{path} to be registered")

    def trade(self, seller: LocalAccount, buyer: LocalAccount, **terms: Any) -> Trade:
        return self.market.trade(seller, buyer, **terms)

    def sign(self, seller: LocalAccount, buyer: LocalAccount, trade: Trade) -> SignedTrade:
        return countersigned(seller, buyer, self.market.domain, trade)

    def body(self, seller: LocalAccount, buyer: LocalAccount, **terms: Any) -> dict[str, Any]:
        """A POST /trades body for a valid trade (unless `terms` break it), signed by both."""
        trade = self.trade(seller, buyer, **terms)
        return signed_json(self.sign(seller, buyer, trade))

    def trade_id(self, body: dict[str, Any]) -> str:
        """The id of the trade in a POST /trades body, computed here, not by the service."""
        terms = body["trade"]
        unix = {
            k: int(datetime.fromisoformat(terms[k]).timestamp()) for k in ("deliveryStart", "deliveryEnd", "deadline")
        }
        signed = SignedTrade.from_json({**body, "trade": {**terms, **unix}})
        return self.market.trade_id(signed.trade)

    def wait_recorded(self, submission_id: str) -> dict[str, Any]:
        def recorded() -> dict[str, Any] | None:
            answer = self.client.get(f"/submissions/{submission_id}").json()
            assert answer["status"] != "rejected", answer
            return answer if answer["status"] == "recorded" else None

        return wait_for(recorded, f"submission {submission_id} to be recorded")

    def wait_cancelled(self, cancellation_id: str) -> dict[str, Any]:
        def cancelled() -> dict[str, Any] | None:
            answer = self.client.get(f"/cancellations/{cancellation_id}").json()
            assert answer["status"] != "rejected", answer
            return answer if answer["status"] == "recorded" else None

        return wait_for(cancelled, f"cancellation {cancellation_id} to be recorded")

    def wait_indexed(self, path: str, until: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
        def indexed() -> dict[str, Any] | None:
            answer = self.client.get(path)
            if answer.status_code == 200 and until(answer.json()):
                return dict(answer.json())
            return None

        return wait_for(indexed, f"{path} in the index")

    def submission_count(self) -> int:
        with self.service.context.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Submission)) or 0)

    def has_submission(self, trade_id: str) -> bool:
        with self.service.context.sessions() as session:
            return outbox.get_submission_by_trade(session, trade_id) is not None

    def record_directly(self, signed: SignedTrade) -> None:
        """Records a trade from another recorder account, bypassing the service."""
        if not self.market.ledger("admin").has_role("recorder", self.market.senders["direct_recorder"].address):
            self.market.ledger("admin").grant_role("recorder", self.market.senders["direct_recorder"].address)
        self.market.ledger("direct_recorder").record_trade(signed)


@contextmanager
def serve(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Runs `app` (with its lifespan) under uvicorn in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, proxy_headers=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        if not server.started:
            raise RuntimeError("uvicorn stopped during start-up (see the log above)")
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def deployed_settings(rpc_url: str, database_url: str, workdir: Path) -> Settings:
    """Deploys a fresh TradeLedger on the node at `rpc_url`: the settings of a service over it
    with an index in `database_url` and a relayer that sends at once (no API)."""
    settings = Settings(
        rpc_url=rpc_url,
        database_url=database_url,
        deployment_file=workdir / "deployment.json",
        relayer_batch_window_ms=10,
    )
    deploy(settings, rpc_url)
    return settings


@contextmanager
def running_service(
    rpc_url: str, database_url: str, workdir: Path, *, confirmations: int = 1
) -> Iterator[RunningService]:
    """Deploys a fresh TradeLedger on the node at `rpc_url`, and serves the API over it with an
    index in `database_url`. Blocks are final after `confirmations` confirmations."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment="local",
        rpc_url=rpc_url,
        chain_id=CHAIN_ID,
        database_url=database_url,
        deployment_file=workdir / "deployment.json",
        confirmations=confirmations,
        relayer_batch_window_ms=20,
        operator_token=SecretStr(OPERATOR_TOKEN),
        # Tests poll fast; tests/test_access.py checks the limits on an app of its own.
        rate_limit_per_second=0,
        token_rate_limit_per_second=0,
    )
    deployment = deploy(settings, rpc_url)
    context = LedgerContext.open(settings, rpc_url=rpc_url)
    try:
        service = LedgerService(context)
        market = market_for(rpc_url, deployment, context.abi)
        auditor = AccessService(settings, context.sessions, context.read_sessions).issue(
            "test-auditor", ROLES["auditor"]
        )
        with (
            serve(create_app(settings, service=service)) as base_url,
            httpx.Client(base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {auditor.token}"}) as client,
            httpx.Client(base_url=base_url, timeout=60) as public,
        ):
            running = RunningService(client, public, service, settings, market, auditor.token)
            running.wait_indexed("/health")
            yield running
        market.rpc.close()
    finally:
        context.close()


@contextmanager
def anvil_service(workdir: Path) -> Iterator[RunningService]:
    """An automining anvil node of its own, a SQLite index, and the service over them."""
    with (
        LocalNode("anvil", chain_id=CHAIN_ID) as node,
        running_service(node.rpc_url, f"sqlite:///{workdir / 'gridledger.db'}", workdir) as running,
    ):
        yield running
