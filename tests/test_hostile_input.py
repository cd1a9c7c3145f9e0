"""Hostile input in every kind of parameter of every operation: deep nesting, huge integers, NUL
bytes, invalid UTF-8 and lone surrogates, oversized bodies, tampered cursors. Each answer is a
4xx RFC 9457 problem with a `code` (never a 5xx), and the service is healthy afterwards.

The operations come from the service's own OpenAPI schema, so a new route is covered as it is
added. Each request goes with the operator token (every scope: the values reach the route) and
without a token (the values meet the edge only)."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from ledger.chain.node import LocalNode
from tests.store_fixtures import postgres_database
from tests.support.service import CHAIN_ID, OPERATOR_TOKEN, RunningService, anvil_service, running_service

PROBLEM = "application/problem+json"
HUGE = 10**400
# Percent-encoded as they travel in a path or a query string.
HOSTILE_TEXT = {
    "nul": "%00",
    "nul inside": "0x" + "00" * 19 + "%00",
    "invalid utf-8": "%FF%FE",
    "lone surrogate": "%ED%A0%80",
    "huge integer": str(HUGE),
    "negative huge": "-" + str(HUGE),
    "beyond uint256": str(2**256),
    "beyond int64": str(2**63),
    "float": "1e400",
    "long": "9" * 5000,
    "brackets": quote("[" * 2000),
}
# Values of JSON members.
HOSTILE_JSON = {
    "huge integer": str(HUGE),
    "negative huge": "-" + str(HUGE),
    "beyond uint256": str(2**256),
    "beyond int str digits": "9" * 5000,  # beyond Python's int-from-text limit of 4300 digits
    "float": "1e400",
    "nul": json.dumps("\x00"),
    "escaped lone surrogate": '"\\ud800"',
    "escaped nul in hex": '"0x' + "00" * 19 + '\\u0000"',
    "deep array": "[" * 100 + "]" * 100,
    "deep object": '{"a":' * 100 + "1" + "}" * 100,
}
# Whole bodies (bytes as sent).
HOSTILE_BODIES = {
    "deep array": b"[" * 66_000 + b"]" * 66_000,
    "deep object": b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    "invalid utf-8": b'{"a": "\xff\xfe"}',
    "lone surrogate": b'{"a": "\xed\xa0\x80"}',
    "utf-16": '{"a": 1}'.encode("utf-16"),
    "nul": b"\x00" * 64,
    "not json": b"{" + b"\x00" * 10,
    "huge integer": b"[" + str(HUGE).encode() + b"]",
    "beyond int str digits": b"[" + b"9" * 5000 + b"]",
}
AUTHORIZATIONS = {
    "bearer with obs-text": b"Bearer \xff\xfe\xed\xa0\x80",
    "bearer long": b"Bearer " + b"x" * 6000,
    "bearer empty": b"Bearer ",
    "other scheme": b"Basic \xff\xff",
}
# Headers HTTP/1.1 does not allow (control bytes, a length that is not one decimal number, an
# unknown transfer coding): the HTTP server (uvicorn) refuses the request with a plain 400 before
# the app sees it.
MALFORMED_HEADERS = {
    "nul in a header": b"Authorization: Bearer a\x00b",
    "control in a header": b"Authorization: Bearer a\x01b",
    "del in a header": b"Authorization: Bearer a\x7fb",
    "cr in a header": b"Authorization: Bearer a\rb",
    "huge length": b"Content-Length: " + b"9" * 5000,
    "length beyond int64": b"Content-Length: " + str(2**64).encode(),
    "negative length": b"Content-Length: -1",
    "float length": b"Content-Length: 1e3",
    "hex length": b"Content-Length: 0x10",
    "two lengths": b"Content-Length: 2, 2",
    "unknown coding": b"Transfer-Encoding: gzip",
}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    workdir = tmp_path_factory.mktemp("hostile")
    if request.param == "sqlite":
        with anvil_service(workdir) as running:
            yield running
        return
    with (
        postgres_database() as database_url,
        LocalNode("anvil", chain_id=CHAIN_ID) as node,
        running_service(node.rpc_url, database_url, workdir) as running,
    ):
        yield running


@pytest.fixture(scope="module")
def operations(api: RunningService) -> list[tuple[str, str, dict[str, Any]]]:
    schema = api.public.get("/openapi.json").json()
    found = [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(found) >= 50
    return found


def _callers(api: RunningService) -> dict[str, dict[str, str]]:
    return {"operator": {"Authorization": f"Bearer {OPERATOR_TOKEN}"}, "public": {}}


def assert_refused(answer: httpx.Response, what: str) -> None:
    assert 400 <= answer.status_code < 500, f"{what}: {answer.status_code} {answer.text[:300]}"
    assert answer.headers.get("content-type") == PROBLEM, f"{what}: {answer.headers} {answer.text[:300]}"
    problem = answer.json()
    assert problem["status"] == answer.status_code and re.fullmatch(r"[a-z0-9_]+", problem["code"]), what


def _filled(path: str, hostile: str | None = None, name: str | None = None) -> str:
    """`path` with each parameter a plausible value, or `hostile` in the one named `name`."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) == name and hostile is not None:
            return hostile
        return "0x" + "00" * 32

    return re.sub(r"\{([^}]+)\}", value, path)


# --- path parameters --------------------------------------------------------------------------


def test_hostile_path_parameters_are_refused(api: RunningService, operations: list[Any]) -> None:
    seen = 0
    with httpx.Client(base_url=api.public.base_url, timeout=60) as client:
        for method, path, operation in operations:
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "path":
                    continue
                for label, hostile in HOSTILE_TEXT.items():
                    for caller, headers in _callers(api).items():
                        url = _filled(path, hostile, parameter["name"])
                        answer = client.request(method, url, headers=headers, json={} if method == "POST" else None)
                        assert_refused(answer, f"{caller} {method} {path} {parameter['name']}={label}")
                        seen += 1
    assert seen > 200


# --- query parameters -------------------------------------------------------------------------


def test_hostile_query_parameters_are_refused_or_ignored(api: RunningService, operations: list[Any]) -> None:
    """A hostile value of a query parameter is refused; never a 5xx. (A route may ignore a value
    it has no use for only if it answers 2xx as for no value at all.)"""
    seen = 0
    with httpx.Client(base_url=api.public.base_url, timeout=60) as client:
        for method, path, operation in operations:
            if method != "GET":
                continue
            for parameter in operation.get("parameters", []):
                if parameter["in"] != "query":
                    continue
                for label, hostile in HOSTILE_TEXT.items():
                    for caller, headers in _callers(api).items():
                        url = f"{_filled(path)}?{parameter['name']}={hostile}"
                        answer = client.get(url, headers=headers)
                        what = f"{caller} GET {url[:120]} ({label})"
                        if answer.status_code < 300:
                            continue
                        assert_refused(answer, what)
                        seen += 1
    assert seen > 200


@pytest.mark.parametrize(
    "cursor",
    [
        "99999999999999999999",
        "-1",
        "0",
        "AAAA",
        "eyJ0IjogMX0",  # base64 of '{"t": 1}'
        "%00",
        "%FF",
        "x" * 64,
        str(2**63),
        "1:" + "0x" + "ff" * 32,
    ],
)
def test_tampered_cursors_are_refused(api: RunningService, operations: list[Any], cursor: str) -> None:
    lists = [
        path
        for method, path, operation in operations
        if method == "GET" and any(p["name"] == "cursor" for p in operation.get("parameters", []))
    ]
    assert {"/trades", "/participants", "/access-log"} <= set(lists)
    for path in lists:
        answer = api.client.get(f"{path}?cursor={cursor}", headers=_callers(api)["operator"])
        if answer.status_code != 200:  # a cursor that names a position: an empty or shorter page
            assert_refused(answer, f"GET {path}?cursor={cursor}")


# --- headers ----------------------------------------------------------------------------------


def _raw(api: RunningService, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends bytes httpx would not (obs-text and controls in a header); the answer's status,
    headers and body."""
    url = urlsplit(str(api.public.base_url))
    with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize("label", list(AUTHORIZATIONS))
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/trades"), ("GET", "/auth/me"), ("POST", "/participants"), ("GET", "/participants")],
)
def test_hostile_authorization_headers_are_refused(api: RunningService, label: str, method: str, path: str) -> None:
    request = (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode()
        + b"Authorization: "
        + AUTHORIZATIONS[label]
        + b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    status, headers, body = _raw(api, request)
    if path == "/participants" and method == "GET":  # public: the header is not looked at
        assert status == 200, body[:300]
        return
    if path == "/auth/me" and label in ("bearer empty", "other scheme"):  # no bearer token: the public
        assert status == 200 and json.loads(body)["kind"] == "public", body[:300]
        return
    assert status == 401, (label, status, body[:300])
    assert headers["content-type"] == PROBLEM
    assert json.loads(body)["code"] in ("token_required", "invalid_token")


@pytest.mark.parametrize("label", list(MALFORMED_HEADERS))
def test_malformed_headers_are_refused_before_the_app(api: RunningService, label: str) -> None:
    request = (
        b"POST /trades HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\n"
        + MALFORMED_HEADERS[label]
        + b"\r\n\r\n{}"
    )
    status, _, body = _raw(api, request)
    assert status == 400, body[:300]
    assert api.public.get("/health").status_code == 200


@pytest.mark.parametrize(
    "content_type", [b"application/json; charset=\xff", b"application/\xff+json", b"text/plain", b"\xff"]
)
def test_hostile_content_types_are_refused(api: RunningService, content_type: bytes) -> None:
    request = (
        b"POST /trades HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: 2\r\n\r\n{}"
    )
    status, headers, body = _raw(api, request)
    assert 400 <= status < 500 and headers["content-type"] == PROBLEM, (status, body[:300])


# --- bodies -----------------------------------------------------------------------------------


def _body_operations(operations: list[Any]) -> list[tuple[str, str]]:
    return [(method, _filled(path)) for method, path, operation in operations if "requestBody" in operation]


def test_hostile_bodies_are_refused(api: RunningService, operations: list[Any]) -> None:
    targets = _body_operations(operations)
    assert len(targets) >= 12
    with httpx.Client(base_url=api.public.base_url, timeout=60) as client:
        for method, path in targets:
            for label, body in HOSTILE_BODIES.items():
                for caller, headers in _callers(api).items():
                    answer = client.request(
                        method, path, content=body, headers={**headers, "content-type": "application/json"}
                    )
                    assert_refused(answer, f"{caller} {method} {path} body={label}")


def test_hostile_values_in_every_body_member_are_refused(api: RunningService, operations: list[Any]) -> None:
    schema = api.public.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    seen = 0
    with httpx.Client(base_url=api.public.base_url, timeout=60) as client:
        for method, path, operation in operations:
            if "requestBody" not in operation:
                continue
            ref = operation["requestBody"]["content"]["application/json"]["schema"].get("$ref", "")
            members = list(components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}))
            for member in members:
                for label, value in HOSTILE_JSON.items():
                    body = "{" + ",".join(f'"{m}": {value if m == member else "null"}' for m in members) + "}"
                    answer = client.request(
                        method,
                        _filled(path),
                        content=body.encode(),
                        headers={**_callers(api)["operator"], "content-type": "application/json"},
                    )
                    assert_refused(answer, f"{method} {path} {member}={label}")
                    seen += 1
    assert seen > 200


def test_oversized_bodies_are_refused_declared_or_chunked(api: RunningService, operations: list[Any]) -> None:
    for method, path in _body_operations(operations):
        for caller, headers in _callers(api).items():
            request = (
                f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n".encode()
                + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode()
                + b"Content-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{}"
            )
            status, answer_headers, body = _raw(api, request)
            assert status in (401, 413) and answer_headers["content-type"] == PROBLEM, (path, status, body[:200])

            def chunks() -> Iterator[bytes]:
                yield b"["
                for _ in range(5):
                    yield b"0," * 1_000_000
                yield b"0]"

            answer = api.public.request(
                method, path, content=chunks(), headers={**headers, "content-type": "application/json"}
            )
            assert answer.status_code in (401, 413), (caller, path, answer.status_code)
            assert_refused(answer, f"{caller} {method} {path} chunked 5 MB")


# --- afterwards ---------------------------------------------------------------------------------


def test_the_service_is_healthy_afterwards(api: RunningService) -> None:
    # Module order: this runs after the hostile requests above, on the same service.
    answer = api.public.get("/health")
    assert answer.status_code == 200 and answer.json()["status"] == "ok", answer.text
    assert api.client.get("/trades").status_code == 200
