"""Request-rate limits: a token bucket per client address (no token) or per bearer token.

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

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api import problems

_FORGET_AFTER_SECONDS = 60.0


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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key, rate = self._key(scope)
        wait = 0.0 if rate.unlimited else self._take(key, rate)
        if wait > 0:
            detail = f"more than {rate.per_second:g} requests per second (burst {rate.burst}); retry after {wait:.2f} s"
            body = problems.http_problem(429, detail, scope.get("path"))
            body["retryAfterSeconds"] = math.ceil(wait)
            await problems.response(body, {"Retry-After": str(math.ceil(wait))})(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _key(self, scope: Scope) -> tuple[str, Rate]:
        authorization = Headers(scope=scope).get("authorization", "")
        if authorization[:7].lower() == "bearer " and len(authorization) > 7:
            # A digest, not the token: the table must not hold credentials.
            return "t:" + hashlib.sha256(authorization[7:].encode()).hexdigest()[:32], self.with_token
        client = scope.get("client")
        return "a:" + (client[0] if client else "?"), self.anonymous

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
