"""The API's edge: bodies judged before they are parsed (depth, encoding, after authentication),
the interpreter's limits in the API process, and the published surface (schema, routes, pages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.messages import encode_defunct

from api.request_guard import MAX_JSON_DEPTH, RECURSION_LIMIT, too_deep
from api.types import UINT64_MAX
from ledger.chain.node import LocalNode
from tests.support.service import RunningService, anvil_service

PROBLEM = "application/problem+json"
ROOT = Path(__file__).resolve().parent.parent
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with anvil_service(tmp_path_factory.mktemp("api-edge")) as running:
        yield running


def assert_problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = dict(answer.json())
    assert (problem["status"], problem["code"]) == (status, code)
    assert problem["type"].endswith("/" + code) and problem["detail"]
    return problem


# --- deep nesting, in a service of its own process --------------------------------------------

# The service in a child process, as `make run` serves it: a SIGSEGV there kills the child, not
# the tests, and shows as its exit status.
_SERVE = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from tests.support.service import running_service

    with running_service(sys.argv[1], sys.argv[2], Path(sys.argv[3])) as api:
        print(api.public.base_url, flush=True)
        sys.stdin.read()  # until the test closes our stdin
    """
)


@pytest.fixture(scope="module")
def served_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[str], str]]:
    workdir = tmp_path_factory.mktemp("api-edge-process")
    with LocalNode("anvil", chain_id=31337) as node:
        child = subprocess.Popen(
            [sys.executable, "-c", _SERVE, node.rpc_url, f"sqlite:///{workdir / 'gridledger.db'}", str(workdir)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            base_url = child.stdout.readline().strip()
            assert base_url.startswith("http://"), f"the service did not start (exit status {child.poll()})"
            yield child, base_url
        finally:
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_a_deeply_nested_body_is_refused_and_the_service_lives_on(
    served_process: tuple[subprocess.Popen[str], str], opening: str
) -> None:
    child, base_url = served_process
    closing = "]" if opening == "[" else "}"
    body = opening * 66_000 + closing * 66_000  # 132 KB and more: under the body cap
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for path in ("/trades", "/trades/batch", "/eip712/trade", "/auth/siwe"):
            assert_problem(client.post(path, content=body, headers=JSON), 400, "json_too_deep")
        assert child.poll() is None, f"the API process died (exit status {child.returncode})"
        assert client.get("/health").json()["status"] == "ok"


def test_create_app_restores_the_recursion_limit_py_ecc_raises() -> None:
    script = textwrap.dedent(
        """
        import sys
        import py_ecc  # raises it to 100,000 on import
        assert sys.getrecursionlimit() >= 100_000
        from api.app import create_app
        from ledger.config import Settings
        create_app(Settings(_env_file=None, environment="local"))
        print(sys.getrecursionlimit())
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert int(out.stdout.split()[-1]) == RECURSION_LIMIT


def test_depth_counts_brackets_outside_strings_only() -> None:
    nested = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    assert too_deep(nested.encode())
    assert not too_deep(("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH).encode())
    assert not too_deep(json.dumps({"a": nested, "b": ['x"[[[\\"', {"c": "{" * 100}]}).encode())
    assert not too_deep(json.dumps([[i] for i in range(10_000)]).encode())  # wide, not deep
    # Escapes do not hide depth: a string ending in an escaped backslash, or holding a quote.
    for text in ("\\", '"', '\\"', "]]]]" * 10, "\n"):
        assert too_deep(json.dumps({"a": text, "b": json.loads(nested)}).encode()), text
        assert not too_deep(json.dumps({"a": text, "b": [[1]], "c": "[" * 40}).encode()), text


def test_a_body_nested_just_beyond_the_limit_is_refused(api: RunningService) -> None:
    depth = MAX_JSON_DEPTH + 1
    problem = assert_problem(
        api.public.post("/eip712/trade", content="[" * depth + "]" * depth, headers=JSON), 400, "json_too_deep"
    )
    assert str(MAX_JSON_DEPTH) in problem["detail"]


# --- item 10: the smaller ones ------------------------------------------------------------------


@pytest.mark.parametrize("body", [b'{"trade": "\xff"}', b"\xff\xfe{\x00}\x00", b'{"a": "\xed\xa0\x80"}'])
def test_a_body_that_is_not_utf8_is_a_problem(api: RunningService, body: bytes) -> None:
    problem = assert_problem(api.public.post("/trades", content=body, headers=JSON), 400, "body_not_utf8")
    assert "offset" in problem["detail"]


def test_an_unparseable_body_is_judged_after_authentication(api: RunningService) -> None:
    for body in (b"{", b"[" * 1000, b'{"a": "\xff"}'):
        answer = api.public.post("/participants", content=body, headers=JSON)
        assert_problem(answer, 401, "token_required")
        assert answer.headers["www-authenticate"] == "Bearer"
        bad_token = {**JSON, "Authorization": "Bearer not-a-token"}
        answer = api.public.post("/settlement-runs", content=body, headers=bad_token)
        assert_problem(answer, 401, "invalid_token")
    # With the token, the body is judged.
    operator = {**JSON, **api.operator}
    assert_problem(api.public.post("/participants", content=b"{", headers=operator), 422, "validation_error")
    assert_problem(api.public.post("/participants", content=b"[" * 1000, headers=operator), 400, "json_too_deep")


def test_get_trades_batch_is_a_405_not_a_trade_lookup(api: RunningService) -> None:
    for client in (api.client, api.public):
        answer = client.get("/trades/batch")
        assert_problem(answer, 405, "method_not_allowed")
        assert answer.headers["allow"] == "POST"


def test_every_list_caps_its_pages_at_500_rows(api: RunningService) -> None:
    schema = api.public.get("/openapi.json").json()
    caps = {
        path: parameter["schema"]["maximum"]
        for path, operations in schema["paths"].items()
        for parameter in operations.get("get", {}).get("parameters", [])
        if parameter["name"] == "limit"
    }
    assert "/settlement-runs" in caps and set(caps.values()) == {500}, caps
    for path in caps:
        assert_problem(api.client.get(path, params={"limit": 501}), 422, "validation_error")
    assert api.client.get("/settlement-runs", params={"limit": 500}).status_code == 200


def test_the_schema_publishes_integer_bounds_exactly(api: RunningService) -> None:
    text = api.public.get("/openapi.json").text
    assert "e+19" not in text
    assert not any(isinstance(value, float) for value in _values(json.loads(text)))
    terms = json.loads(text)["components"]["schemas"]["TradeTerms"]["properties"]
    assert terms["energyPerIntervalWh"]["maximum"] == UINT64_MAX
    assert terms["energyPerIntervalWh"]["minimum"] == 0 and isinstance(terms["energyPerIntervalWh"]["minimum"], int)


def test_a_trader_token_lasts_the_configured_ttl(api: RunningService) -> None:
    account = api.register()
    challenge = api.public.get("/auth/siwe/nonce", params={"address": account.address}).json()
    signature = account.sign_message(encode_defunct(text=challenge["message"])).signature.to_0x_hex()
    answer = api.public.post("/auth/siwe", json={"message": challenge["message"], "signature": signature})
    assert answer.status_code == 201, answer.text
    issued = datetime.fromisoformat(challenge["issuedAt"])
    ttl = timedelta(seconds=api.settings.trader_token_ttl_seconds)
    assert ttl == timedelta(minutes=15)  # the README's figure
    lifetime = datetime.fromisoformat(answer.json()["expiresAt"]) - issued
    assert ttl - timedelta(seconds=5) <= lifetime <= ttl
    # The nonce still has to be used within its own (shorter) lifetime.
    assert datetime.fromisoformat(challenge["expiresAt"]) - issued == timedelta(
        seconds=api.settings.siwe_nonce_ttl_seconds
    )


def _values(document: Any) -> Iterator[Any]:
    if isinstance(document, dict):
        for value in document.values():
            yield from _values(value)
    elif isinstance(document, list):
        for value in document:
            yield from _values(value)
    else:
        yield document
