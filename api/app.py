"""The HTTP adapter of GridLedger: `create_app(settings)` builds the FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import explorer, problems, rate_limit
from api.auth import AccessLogMiddleware
from api.body_limit import BodyLimit
from api.request_guard import RequestGuard, restore_recursion_limit
from api.routers import (
    access_log,
    audit,
    auth,
    chain,
    eip712,
    exports,
    health,
    market,
    metering,
    participants,
    settlement,
    submissions,
    trades,
)
from api.types import exact_integers
from ledger.config import Settings
from ledger.services.access import AccessService
from ledger.services.context import LedgerContext
from ledger.services.runtime import LedgerService
from ledger.store.db import make_engine

# 1000 signed trades are ~700 KB of JSON; anything far beyond is not a request we serve.
MAX_BODY_BYTES = 4 * 1024 * 1024

DESCRIPTION = """
Traders submit trades signed by both parties with their own keys (EIP-712, see `/eip712`);
the service checks them as the contract will, records them on chain in batches, and indexes
every recorded trade with its provenance for auditors.

Access: the public reads public data (participants, reference prices, settlement run headers,
market aggregates per interval under `/market`). Trades, readings, statements, proofs, exports and
the audit endpoints need a bearer token: auditors and operators get one with scopes from the
operator (`scripts/tokens.py`); a trader signs in with its own key (`/auth/siwe`, EIP-4361) and
sees its own data only. Every such read is written to the access log (`/access-log`) before the
answer leaves. Requests are rate-limited per client and per token (429 `rate_limited`).

Formats: JSON members in camelCase; times ISO 8601 with a UTC offset (naive times are refused),
answered in UTC (`+00:00`); energy (Wh) and money (minor units) as JSON integers; nonces as
decimal strings; errors as RFC 9457 problems (`application/problem+json`) with a stable `code`.
"""


def create_app(settings: Settings | None = None, *, service: LedgerService | None = None) -> FastAPI:
    """The application. Without `service` it opens the ledger from `settings` at start-up and
    closes it at shutdown. A given `service` is started at start-up and stopped at shutdown; its
    context stays the caller's to close."""
    if settings is None:
        settings = service.context.settings if service is not None else Settings()
    restore_recursion_limit()  # which importing the eth libraries raised to 100,000

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = service
        context: LedgerContext | None = None
        if running is None:
            context = LedgerContext.open(settings)
            running = LedgerService(context)
        app.state.service = running
        log_engine = make_engine(settings.database_url, flush_commits=settings.access_log_flush)
        app.state.access = AccessService(
            settings,
            running.context.sessions,
            running.context.read_sessions,
            log_engine=log_engine,
        )
        running.start()
        try:
            yield
        finally:
            running.stop()
            app.state.access.log.close()
            log_engine.dispose()
            if context is not None:
                context.close()

    app = FastAPI(
        title="GridLedger",
        version="0.1.0",
        summary="A blockchain-backed ledger for electricity trades",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    # The last added runs first: refuse floods before reading bodies, oversized bodies, then a
    # token route's caller without a valid token and bodies too deep or not UTF-8, before logging.
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(RequestGuard)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    rate_limit.install(app, settings)
    app.state.settings = settings
    if service is not None:
        app.state.service = service
    problems.install(app)
    for module in (
        trades,
        submissions,
        participants,
        metering,
        settlement,
        market,
        eip712,
        health,
        audit,
        exports,
        auth,
        access_log,
        chain,
    ):
        app.include_router(module.router)
    app.include_router(participants.registrations_router)
    explorer.mount(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with error responses filed under application/problem+json."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for answer in operation.get("responses", {}).values():
                    content = answer.get("content", {})
                    if _is_problem(content):
                        content[problems.MEDIA_TYPE] = content.pop("application/json")
        problems.document_edge_answers(schema)
        exact_integers(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _is_problem(content: dict[str, Any]) -> bool:
    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    return bool(ref.endswith("/Problem"))
