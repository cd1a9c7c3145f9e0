"""The edge's judgement of a request body, before FastAPI parses it.

FastAPI reads and parses a JSON body before it solves a route's dependencies, so without this a
route that needs a token would judge a body of a caller it has not authenticated yet, and the
stdlib JSON parser would recurse as deep as the body nests. `RequestGuard`, for a request that
carries a body:

1. on a route that needs a token (a `reader` dependency), answers the 401 first, body unread;
2. for a JSON body, refuses one that is not UTF-8 (400 `body_not_utf8`) or that nests deeper than
   `MAX_JSON_DEPTH` (400 `json_too_deep`), by a scan that does not recurse;
3. replays the body it read to the app.

It sits inside `BodyLimit`, whose cap applies while it reads (413 `content_too_large`).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import auth, problems
from ledger import errors

log = logging.getLogger(__name__)

# The deepest legitimate body nests 4 levels ({"trades": [{"trade": {...}}]}).
MAX_JSON_DEPTH = 32
# CPython's default. py_ecc (imported by eth-account through eth-keyfile, for BLS keys the ledger
# does not use) raises the limit to 100,000 on import, deep enough for a recursive C parser to
# overflow the C stack (a SIGSEGV) long before Python raises a RecursionError.
RECURSION_LIMIT = 1000

# Brackets as signed bytes: an opening one +1, a closing one -1.
_BRACKETS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))


def restore_recursion_limit() -> None:
    """Imports py_ecc now if nothing has yet, then puts the interpreter's limit back."""
    import py_ecc  # noqa: F401  (the import that raises it, at a point of our choosing)

    sys.setrecursionlimit(RECURSION_LIMIT)


def too_deep(body: bytes) -> bool:
    """Whether `body` nests arrays and objects deeper than MAX_JSON_DEPTH (brackets inside strings
    do not count), found without parsing it; for a body that is not JSON, the parser's refusal
    follows anyway."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return False  # the common case, at the cost of two scans in C
    # Escaped backslashes, then escaped quotes, go first (outside strings JSON has no backslash);
    # then every other quote opens or closes a string, and what lies between quotes is dropped.
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    skeleton = b"".join(unescaped.translate(None, _NOT_STRUCTURE).split(b'"')[::2]).translate(_BRACKETS)
    return max(accumulate(memoryview(skeleton).cast("b")), default=0) > MAX_JSON_DEPTH


def is_json(headers: Headers) -> bool:
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


@dataclass(frozen=True)
class _Route:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    needs_token: bool


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: list[_Route] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(headers := Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self._needs_token(scope):
            refusal = await _authentication_problem(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        if not is_json(headers):
            await self.app(scope, receive, send)
            return
        try:
            body, more = await _read(receive)
        except HTTPException as exc:  # BodyLimit's cap, reached while reading
            await problems.response(problems.http_problem(exc.status_code, str(exc.detail), path))(scope, receive, send)
            return
        problem = judge_json(body, path)
        if problem is not None:
            await problems.response(problem)(scope, receive, send)
            return
        await self.app(scope, _replay(body, more, receive), send)

    def _needs_token(self, scope: Scope) -> bool:
        if self._routes is None:
            self._routes = list(_routes(scope["app"]))
        path, method = scope["path"], scope["method"]
        for route in self._routes:
            if route.pattern.match(path) and method in route.methods:
                return route.needs_token
        return False


def judge_json(body: bytes, instance: str | None) -> dict[str, Any] | None:
    """The problem of a JSON body that must not reach the parser, else None."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return problems.http_problem(
            400, f"the body is not UTF-8 (RFC 8259): invalid byte at offset {exc.start}", instance, "body_not_utf8"
        )
    if too_deep(body):
        return problems.http_problem(
            400, f"the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels", instance, "json_too_deep"
        )
    return None


def _has_body(headers: Headers) -> bool:
    declared = headers.get("content-length")
    return "transfer-encoding" in headers or (declared is not None and declared != "0")


async def _authentication_problem(scope: Scope, headers: Headers) -> problems.JSONResponse | None:
    """The 401 a route's `reader` dependency would answer, or None for an authenticated caller."""
    scheme, token = get_authorization_scheme_param(headers.get("authorization"))
    try:
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthenticated(auth.TOKEN_REQUIRED)
        credentials = HTTPAuthorizationCredentials(scheme=scheme, credentials=token)
        who = await auth.caller(scope["app"].state.access, credentials)
        if not who.authenticated:
            raise errors.Unauthenticated(auth.TOKEN_REQUIRED)
    except errors.LedgerError as exc:  # a 401, or a store that cannot be asked (its 5xx)
        if problems.status_for(exc) >= 500:
            log.error("checking the token of %s %s failed: %s", scope["method"], scope["path"], exc, exc_info=exc)
        return problems.ledger_error_response(exc, scope["path"])
    return None


async def _read(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and whether the client is still connected."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, connected: bool, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if connected:
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}
        return await receive()

    return replay


def _routes(app: FastAPI) -> Iterator[_Route]:
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and context.path_format is not None:
            pattern, _, _ = compile_path(context.path_format)
            yield _Route(frozenset(context.methods or ()), pattern, _needs(route.dependant, auth.reader))


def _needs(dependant: Dependant, call: Any) -> bool:
    return dependant.call is call or any(_needs(sub, call) for sub in dependant.dependencies)
