"""Request-rate limits: a token bucket per client address, and one per verified bearer token.

A token counts against a bucket of its own only once it is checked (`AccessService`): a token
that is unknown, expired or revoked counts against its client address's bucket, so sending random
tokens buys no requests. A token not seen for `_VERIFIED_SECONDS` is checked again, once the
address's bucket allows it (the check is a database read). The client address is the peer's, or
the one a proxy of GRIDLEDGER_TRUSTED_PROXIES forwarded (`api.app`, uvicorn's ProxyHeadersMiddleware).

Answered as a 429 problem (`rate_limited`) with `Retry-After`. The buckets live in this process:
with several API processes each holds its own, so the limit is per process. A bucket idle for a
minute is forgotten (it would be full again anyway), so the table stays as small as the set of
recent clients.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api import problems
from ledger.auth.scopes import Principal
from ledger.config import Settings
from ledger.errors import LedgerError
from ledger.services.access import TOKEN_CACHE_ENTRIES, AccessService

_FORGET_AFTER_SECONDS = 60.0
# A token found valid keeps its own bucket this long without another check: its holder is not
# held to its address's bucket each time the access service's short cache expires. (Whether the
# request may read anything is the routes' check, on every request.)
_VERIFIED_SECONDS = 60.0


def install(app: FastAPI, settings: Settings) -> None:
    """The limits of `settings`, behind the proxies it trusts: X-Forwarded-For and -Proto are
    believed from those only (uvicorn's middleware), so the limit counts the forwarded address
    of a trusted proxy's requests and the peer's of anybody else's. The server must not
    interpret the headers itself (scripts/serve.py turns uvicorn's `proxy_headers` off)."""
    app.add_middleware(
        RateLimit,
        anonymous=Rate(settings.rate_limit_per_second, settings.rate_limit_burst),
        with_token=Rate(settings.token_rate_limit_per_second, settings.token_rate_limit_burst),
    )
    if settings.trusted_proxies:  # added last: runs first
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int

    @property
    def unlimited(self) -> bool:
        return self.per_second <= 0


@dataclass
class _Bucket:
    tokens: float
    refilled: float


class RateLimit:
    def __init__(self, app: ASGIApp, anonymous: Rate, with_token: Rate) -> None:
        self.app = app
        self.anonymous = anonymous
        self.with_token = with_token
        self._buckets: dict[str, _Bucket] = {}
        self._swept = time.monotonic()
        self._verified: dict[str, tuple[float, str]] = {}  # token digest -> (until, token id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wait, rate = await self._wait(scope)
        if wait > 0:
            detail = f"more than {rate.per_second:g} requests per second (burst {rate.burst}); retry after {wait:.2f} s"
            body = problems.http_problem(429, detail, scope.get("path"))
            body["retryAfterSeconds"] = math.ceil(wait)
            await problems.response(body, {"Retry-After": str(math.ceil(wait))})(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _wait(self, scope: Scope) -> tuple[float, Rate]:
        """(0 if the request may go on, else the seconds until it would; the rate applied)."""
        if self.anonymous.unlimited and self.with_token.unlimited:
            return 0.0, self.anonymous
        client = scope.get("client")
        address = "a:" + (client[0] if client else "?")
        authorization = Headers(scope=scope).get("authorization", "")
        token = authorization[7:] if authorization[:7].lower() == "bearer " else ""
        if not token:
            return self._take_at(address, self.anonymous), self.anonymous
        # A digest, not the token: the table must not hold credentials.
        digest = hashlib.sha256(token.encode()).hexdigest()
        access: AccessService | None = getattr(scope["app"].state, "access", None)
        if access is None:  # an app without access control: every token is unchecked
            return self._take_at(address, self.anonymous), self.anonymous
        token_id = self._verified_id(digest, access, token)
        if token_id is None:
            wait = self._take_at(address, self.anonymous)
            if wait > 0:
                return wait, self.anonymous
            token_id = await self._verify(access, token, digest)
            if token_id is None:
                return 0.0, self.anonymous
        return self._take_at("t:" + token_id, self.with_token), self.with_token

    def _verified_id(self, digest: str, access: AccessService, token: str) -> str | None:
        """The id of a token found valid lately, without I/O; None when it must be checked."""
        verified = self._verified.get(digest)
        if verified is not None and verified[0] >= time.monotonic():
            return verified[1]
        principal = access.cached(token)
        return None if principal is None else self._remember(digest, principal)

    async def _verify(self, access: AccessService, token: str, digest: str) -> str | None:
        try:
            principal = await run_in_threadpool(access.authenticate, token)
        except LedgerError:  # not a valid token: the route answers 401 if it needs one
            return None
        return self._remember(digest, principal)

    def _remember(self, digest: str, principal: Principal) -> str:
        if len(self._verified) >= TOKEN_CACHE_ENTRIES:
            now = time.monotonic()
            self._verified = {key: value for key, value in self._verified.items() if value[0] >= now}
            if len(self._verified) >= TOKEN_CACHE_ENTRIES:
                self._verified.clear()
        token_id = principal.token_id or principal.name
        self._verified[digest] = (time.monotonic() + _VERIFIED_SECONDS, token_id)
        return token_id

    def _take_at(self, key: str, rate: Rate) -> float:
        return 0.0 if rate.unlimited else self._take(key, rate)

    def _take(self, key: str, rate: Rate) -> float:
        """Takes one request from the bucket; 0 if allowed, else the seconds until it would be."""
        now = time.monotonic()
        if now - self._swept > _FORGET_AFTER_SECONDS:
            self._buckets = {k: b for k, b in self._buckets.items() if now - b.refilled < _FORGET_AFTER_SECONDS}
            self._swept = now
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(rate.burst), now)
        bucket.tokens = min(float(rate.burst), bucket.tokens + (now - bucket.refilled) * rate.per_second)
        bucket.refilled = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate.per_second
