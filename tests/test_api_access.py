"""Access by role over HTTP: the public sees aggregates, a trader its own data, an auditor all of
it, and every non-public read lands in the access log first."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from pydantic import SecretStr
from sqlalchemy import Engine, func, select

from api import problems, rate_limit
from api.auth import AccessLogMiddleware, ReaderDep
from ledger.auth.scopes import ROLES
from ledger.auth.tokens import new_token
from ledger.chain.node import LocalNode
from ledger.config import Settings
from ledger.domain.units import INTERVAL_SECONDS
from ledger.services.access import OPERATOR, AccessLog, AccessRecord, AccessService
from ledger.services.verification import access_log_differences
from ledger.store.access_models import AccessLogEntry
from ledger.store.db import make_engine, make_session_factory, migrate
from tests.support.service import RunningService, anvil_service, iso, running_service, serve

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with anvil_service(tmp_path_factory.mktemp("api-access")) as running:
        yield running


def assert_problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = dict(answer.json())
    assert (problem["status"], problem["code"]) == (status, code)
    return problem


class Book:
    """Three participants and two recorded trades: A sells to B, B sells to C."""

    def __init__(self, api: RunningService) -> None:
        self.a, self.b, self.c = api.register("generator"), api.register("retailer"), api.register("consumer")
        self.ab = self._record(api, self.a, self.b, energy_per_interval_wh=100_000, price_minor_per_mwh=40_000)
        self.bc = self._record(api, self.b, self.c, energy_per_interval_wh=300_000, price_minor_per_mwh=50_001)

    @staticmethod
    def _record(api: RunningService, seller: LocalAccount, buyer: LocalAccount, **terms: Any) -> dict[str, Any]:
        body = api.body(seller, buyer, **terms)
        accepted = api.public.post("/trades", json=body)  # submitting needs no token: both parties signed
        assert accepted.status_code == 202, accepted.text
        api.wait_recorded(accepted.json()["submissionId"])
        return api.wait_indexed(f"/trades/{accepted.json()['tradeId']}")


@pytest.fixture(scope="module")
def book(api: RunningService) -> Book:
    return Book(api)


def test_the_public_reads_aggregates_but_no_trade(api: RunningService, book: Book) -> None:
    for path in (
        "/trades",
        f"/trades/{book.ab['tradeId']}",
        f"/trades/{book.ab['tradeId']}/history",
        f"/verify/trades/{book.ab['tradeId']}",
        "/meter-readings",
        "/access-log",
    ):
        assert_problem(api.public.get(path), 401, "token_required")
    assert api.public.get("/participants").status_code == 200  # the register is public

    trades = (book.ab, book.bc)
    start = min(_unix(t["deliveryStart"]) for t in trades)
    end = max(_unix(t["deliveryEnd"]) for t in trades)
    answer = api.public.get("/market/intervals", params={"from": iso(start), "to": iso(end)})
    assert answer.status_code == 200, answer.text
    intervals = answer.json()["intervals"]
    assert [i["intervalStart"] for i in intervals] == [iso(t) for t in range(start, end, INTERVAL_SECONDS)]
    for interval in intervals:
        moment = _unix(interval["intervalStart"])
        delivering = [t for t in trades if _unix(t["deliveryStart"]) <= moment < _unix(t["deliveryEnd"])]
        assert interval["tradeCount"] == len(delivering)
        assert interval["volumeWh"] == sum(t["energyPerIntervalWh"] for t in delivering)
        if len(delivering) == 2:
            assert interval["valueWhMinorPerMWh"] == 100_000 * 40_000 + 300_000 * 50_001
            assert interval["vwapMinorPerMWh"] == 47_501  # 47,500.75 rounded half to even
            assert (interval["lowMinorPerMWh"], interval["highMinorPerMWh"]) == (40_000, 50_001)
    assert any(interval["tradeCount"] == 2 for interval in intervals)
    text = answer.text.lower()
    for account in (book.a, book.b, book.c):
        assert account.address.lower()[2:] not in text  # no counterparties
    misaligned = api.public.get("/market/intervals", params={"from": iso(start + 1), "to": iso(end)})
    assert assert_problem(misaligned, 422, "validation_error")["field"] == "from"


def test_a_trader_sees_only_its_own_trades(api: RunningService, book: Book) -> None:
    with api.trader(book.a) as trader:
        me = trader.get("/auth/me").json()
        assert (me["kind"], me["address"], me["scopes"]) == ("trader", book.a.address, [])

        listed = trader.get("/trades").json()["items"]
        assert [t["tradeId"] for t in listed] == [book.ab["tradeId"]]
        # The same answer as the auditor's, but for the confirmations: a block may come in between.
        assert _without_confirmations(trader.get(f"/trades/{book.ab['tradeId']}").json()) == _without_confirmations(
            api.client.get(f"/trades/{book.ab['tradeId']}").json()
        )
        assert trader.get(f"/trades/{book.ab['tradeId']}/history").status_code == 200
        assert trader.get(f"/verify/trades/{book.ab['tradeId']}").status_code == 200

        # Somebody else's trade does not exist for A; asking for another's list is refused.
        for path in (f"/trades/{book.bc['tradeId']}", f"/trades/{book.bc['tradeId']}/history"):
            assert_problem(trader.get(path), 404, "not_found")
        refused = assert_problem(trader.get("/trades", params={"participant": book.c.address}), 403, "forbidden")
        assert refused["reason"] == "not_your_account"
        assert_problem(trader.get("/access-log"), 403, "forbidden")
        assert_problem(trader.post("/participants", json={}), 403, "forbidden")

        exported = trader.get(
            "/exports/trades.json", params={"from": book.ab["deliveryStart"], "to": book.ab["deliveryEnd"]}
        )
        assert [row["tradeId"] for row in exported.json()] == [book.ab["tradeId"]]

    with api.trader(book.b) as trader:  # B is a party to both
        assert {t["tradeId"] for t in trader.get("/trades").json()["items"]} == {
            book.ab["tradeId"],
            book.bc["tradeId"],
        }


def _without_confirmations(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_confirmations(item) for key, item in value.items() if key != "confirmations"}
    if isinstance(value, list):
        return [_without_confirmations(item) for item in value]
    return value


def test_every_non_public_read_is_in_the_access_log(api: RunningService, book: Book) -> None:
    with api.trader(book.c) as trader:
        assert trader.get(f"/trades/{book.bc['tradeId']}").status_code == 200
        assert trader.get(f"/trades/{book.ab['tradeId']}").status_code == 404
        assert trader.get("/trades", params={"participant": book.a.address}).status_code == 403
        api.public.get("/market/intervals", params={"from": book.ab["deliveryStart"], "to": book.ab["deliveryEnd"]})

    # The entry is committed before the answer leaves: no waiting needed.
    entries = api.client.get("/access-log", params={"principal": book.c.address}).json()["items"]
    assert [(e["method"], e["path"], e["query"], e["status"]) for e in entries] == [
        ("GET", f"/trades/{book.bc['tradeId']}", "", 200),
        ("GET", f"/trades/{book.ab['tradeId']}", "", 404),
        ("GET", "/trades", f"participant={book.a.address}", 403),
    ]
    assert {e["principalKind"] for e in entries} == {"trader"}

    # The auditor's own reads are logged too, the reading of the log included.
    auditor = api.client.get("/access-log", params={"principal": "test-auditor", "limit": 500}).json()["items"]
    assert (auditor[-1]["path"], auditor[-1]["query"]) == ("/access-log", f"principal={book.c.address}")
    assert all(entry["tokenId"] for entry in auditor)


def test_the_access_log_pages_by_cursor(api: RunningService, book: Book) -> None:
    for _ in range(3):
        api.client.get(f"/trades/{book.ab['tradeId']}")
    first = api.client.get("/access-log", params={"limit": 2}).json()
    second = api.client.get("/access-log", params={"limit": 2, "cursor": first["nextCursor"]}).json()
    assert [e["id"] for e in first["items"]] < [e["id"] for e in second["items"]]
    assert len({e["id"] for e in first["items"] + second["items"]}) == 4
    assert_problem(api.client.get("/access-log", params={"cursor": "x"}), 422, "validation_error")


def test_sign_in_over_http_refuses_a_stranger_another_domain_and_a_signed_out_token(
    api: RunningService, book: Book
) -> None:
    stranger: LocalAccount = Account.create()
    challenge = api.public.get("/auth/siwe/nonce", params={"address": stranger.address}).json()
    message = challenge["message"]
    assert f"Nonce: {challenge['nonce']}" in message and message.startswith(challenge["domain"] + " wants you")
    answer = api.public.post("/auth/siwe", json={"message": message, "signature": _sign(stranger, message)})
    assert_problem(answer, 403, "forbidden")

    message = api.public.get("/auth/siwe/nonce", params={"address": book.a.address}).json()["message"]
    phishing = message.replace(message.split(" ")[0], "gridledger.example.evil", 1)
    answer = api.public.post("/auth/siwe", json={"message": phishing, "signature": _sign(book.a, phishing)})
    assert assert_problem(answer, 422, "siwe_invalid")["field"] == "message.domain"
    answer = api.public.post("/auth/siwe", json={"message": message, "signature": _sign(book.b, message)})
    assert assert_problem(answer, 422, "siwe_invalid")["field"] == "signature"

    with api.trader(book.a) as trader:
        assert trader.post("/auth/sign-out").status_code == 204
        answer = trader.get("/trades")
        assert_problem(answer, 401, "token_revoked")
        assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_a_sign_in_relayed_by_another_site_is_refused_whatever_host_it_names(api: RunningService, book: Book) -> None:
    """Without GRIDLEDGER_SIWE_DOMAIN, messages must name the address the service serves, not the
    Host header, which a phishing site relaying its visitors' signatures sets as it likes."""
    evil = {"Host": "evil.example"}
    served = api.public.base_url.netloc.decode()
    challenge = api.public.get("/auth/siwe/nonce", params={"address": book.a.address}, headers=evil).json()
    assert (challenge["domain"], challenge["uri"]) == (served, f"http://{served}/")
    relayed = challenge["message"].replace(served, "evil.example")
    answer = api.public.post("/auth/siwe", json={"message": relayed, "signature": _sign(book.a, relayed)}, headers=evil)
    assert assert_problem(answer, 422, "siwe_invalid")["field"] == "message.domain"

    # The right domain, and a URI on the phishing site: refused too.
    message = api.public.get("/auth/siwe/nonce", params={"address": book.a.address}).json()["message"]
    elsewhere = message.replace(f"URI: http://{served}/", "URI: https://evil.example/")
    answer = api.public.post("/auth/siwe", json={"message": elsewhere, "signature": _sign(book.a, elsewhere)})
    assert assert_problem(answer, 422, "siwe_invalid")["field"] == "message.uri"


def _sign(account: LocalAccount, message: str) -> str:
    return account.sign_message(encode_defunct(text=message)).signature.to_0x_hex()


def _unix(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


# --- middlewares on an app of their own ------------------------------------------------------


def _probe_app() -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.get("/private")
    def private(reader: ReaderDep) -> dict[str, str]:
        return {"name": reader.name}

    @app.get("/open")
    def public() -> dict[str, str]:
        return {"ok": "yes"}

    return app


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Callable[..., FastAPI]]:
    """Probe apps with the rate limits of `Settings(**overrides)` and a migrated database."""
    engine = make_engine(f"sqlite:///{tmp_path / 'limits.db'}")
    migrate(engine)
    services: list[AccessService] = []

    def app(**overrides: Any) -> FastAPI:
        settings = Settings(_env_file=None, operator_token=SecretStr("probe-operator-token"), **overrides)  # type: ignore[call-arg]
        probe = _probe_app()
        probe.add_middleware(AccessLogMiddleware)
        rate_limit.install(probe, settings)
        probe.state.access = AccessService(settings, make_session_factory(engine), make_session_factory(engine))
        services.append(probe.state.access)
        return probe

    yield app
    for service in services:
        service.log.close()
    engine.dispose()


SLOW = {"rate_limit_per_second": 0.5, "rate_limit_burst": 3, "token_rate_limit_per_second": 0.5}


def test_requests_beyond_the_rate_are_refused_with_retry_after(limited: Callable[..., FastAPI]) -> None:
    with serve(limited(**SLOW, token_rate_limit_burst=5)) as url, httpx.Client(base_url=url) as client:
        assert [client.get("/open").status_code for _ in range(3)] == [200, 200, 200]
        refused = client.get("/open")
        problem = assert_problem(refused, 429, "rate_limited")
        assert int(refused.headers["retry-after"]) >= 1 and problem["retryAfterSeconds"] >= 1
        # A valid token has a bucket of its own.
        operator = {"Authorization": "Bearer probe-operator-token"}
        statuses = [client.get("/private", headers=operator).status_code for _ in range(6)]
        assert statuses == [200] * 5 + [429]


def test_random_bearer_tokens_count_against_the_address(limited: Callable[..., FastAPI]) -> None:
    with serve(limited(**SLOW, token_rate_limit_burst=1000)) as url, httpx.Client(base_url=url) as client:
        statuses = [
            client.get("/open", headers={"Authorization": f"Bearer {token}"}).status_code
            for token in [f"x{secrets.token_hex(8)}" for _ in range(150)] + [new_token()[1] for _ in range(150)]
        ]
    assert statuses.count(200) <= 3 + 1 and statuses.count(429) >= 296


def test_forwarded_addresses_count_from_a_trusted_proxy_only(limited: Callable[..., FastAPI]) -> None:
    def statuses(url: str) -> list[int]:
        with httpx.Client(base_url=url) as client:
            return [
                client.get("/open", headers={"X-Forwarded-For": f"203.0.113.{index % 250}"}).status_code
                for index in range(300)
            ]

    with serve(limited(**SLOW)) as url:  # the peer 127.0.0.1 is no proxy of ours
        assert statuses(url).count(200) <= 3 + 1
    with serve(limited(**SLOW, trusted_proxies="10.0.0.0/8, 127.0.0.1")) as url:
        counted = statuses(url)  # each forwarded address has its bucket: 2 requests each of 250
        assert counted.count(200) == 300
        with httpx.Client(base_url=url) as client:
            same = [client.get("/open", headers={"X-Forwarded-For": "198.51.100.7"}).status_code for _ in range(5)]
        assert same == [200] * 3 + [429] * 2


def test_an_answer_whose_access_log_entry_cannot_be_written_is_a_503(tmp_path: Path) -> None:
    # A database without the access-log table: every write of the log fails.
    engine = make_engine(f"sqlite:///{tmp_path / 'unmigrated.db'}")
    settings = Settings(_env_file=None, operator_token=SecretStr("probe-operator-token"))  # type: ignore[call-arg]
    app = _probe_app()
    app.add_middleware(AccessLogMiddleware)
    app.state.access = AccessService(settings, make_session_factory(engine), make_session_factory(engine))
    try:
        with serve(app) as url, httpx.Client(base_url=url) as client:
            answer = client.get("/private", headers={"Authorization": "Bearer probe-operator-token"})
            assert_problem(answer, 503, "access_log_unavailable")
            assert "operator" not in answer.text  # the data never left
            assert client.get("/open").json() == {"ok": "yes"}  # public reads are not logged
    finally:
        app.state.access.log.close()
        engine.dispose()


# --- hostile values in the access log, on both databases ------------------------------------


@pytest.fixture
def db_api(anvil: LocalNode, database_url: str, tmp_path: Path) -> Iterator[RunningService]:
    with running_service(anvil.rpc_url, database_url, tmp_path) as running:
        yield running


def test_an_entry_the_database_cannot_store_as_sent_fails_no_other_read(db_api: RunningService) -> None:
    """A NUL in a path (PostgreSQL's text cannot hold it) is logged percent-encoded; and the
    requests logged in the same batch as any entry the database refuses still get their data."""
    context = db_api.service.context
    other = AccessService(db_api.settings, context.sessions, context.read_sessions).issue("other", ROLES["auditor"])
    hostile = httpx.Client(base_url=str(db_api.client.base_url), headers={"Authorization": f"Bearer {other.token}"})

    def read(index: int) -> int:
        if index % 10 == 0:
            return hostile.get("/trades/%00").status_code
        return db_api.client.get("/trades/0x" + "00" * 32).status_code

    with hostile, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(read, range(120)))
    assert 503 not in statuses and 500 not in statuses
    logged = db_api.client.get("/access-log", params={"principal": "other", "limit": 500}).json()["items"]
    assert [entry["path"] for entry in logged] == ["/trades/%00"] * 12

    # Every value filtered on is refused at the edge when the database cannot compare it.
    assert_problem(db_api.client.get("/access-log", params={"cursor": "9" * 20}), 422, "validation_error")
    assert_problem(db_api.client.get("/access-log", params={"principal": "\x00"}), 422, "validation_error")
    assert db_api.client.get("/access-log", params={"cursor": str(2**63 - 1)}).json()["items"] == []
    beyond_9999 = {"from": "9999-12-31T23:59:59-12:00", "to": "9999-12-31T23:59:59-13:00"}
    assert db_api.client.get("/access-log", params=beyond_9999).json()["items"] == []


def test_one_entry_the_database_refuses_fails_its_own_request_only(store_engine: Engine) -> None:
    log = AccessLog(store_engine)
    at = datetime.now(UTC)
    records = [
        AccessRecord(OPERATOR, "GET", f"/trades/{index}", "", 2**70 if index == 25 else 200, "127.0.0.1", at)
        for index in range(50)
    ]
    try:
        # The writer takes the first entry alone; the others queue up meanwhile, into one batch.
        futures = [log.append(record) for record in records]
        wait(futures, timeout=30)
    finally:
        log.close()
    assert [future.exception() is not None for future in futures] == [index == 25 for index in range(50)]
    with store_engine.connect() as connection:
        rows = connection.execute(select(AccessLogEntry.path).order_by(AccessLogEntry.id)).scalars().all()
    assert rows == [f"/trades/{index}" for index in range(50) if index != 25]


def test_writers_of_several_processes_keep_one_chain(database_url: str) -> None:
    """Each API process has its own writer: the chain's head is read and appended under a lock."""
    engines = [make_engine(database_url) for _ in range(3)]
    migrate(engines[0])
    logs = [AccessLog(engine) for engine in engines]
    at = datetime.now(UTC)

    def write(index: int) -> None:
        log = logs[index % len(logs)]
        log.append(AccessRecord(OPERATOR, "GET", f"/trades/{index}", "", 200, "127.0.0.1", at)).result(timeout=60)

    try:
        with ThreadPoolExecutor(12) as pool:
            list(pool.map(write, range(300)))
    finally:
        for log in logs:
            log.close()
    with make_session_factory(engines[0])() as session:
        assert session.scalar(select(func.count()).select_from(AccessLogEntry)) == 300
        assert access_log_differences(session) == []
    for engine in engines:
        engine.dispose()
