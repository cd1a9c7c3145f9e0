"""The HTTP adapter of GridLedger: `create_app(settings)` builds the FastAPI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import explorer, problems
from api.body_limit import BodyLimit
from api.routers import audit, eip712, exports, health, metering, participants, settlement, submissions, trades
from ledger.config import Settings
from ledger.services.context import LedgerContext
from ledger.services.runtime import LedgerService

# 1000 signed trades are ~700 KB of JSON; anything far beyond is not a request we serve.
MAX_BODY_BYTES = 4 * 1024 * 1024

DESCRIPTION = """
Traders submit trades signed by both parties with their own keys (EIP-712, see `/eip712`);
the service checks them as the contract will, records them on chain in batches, and indexes
every recorded trade with its provenance for auditors.

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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = service
        context: LedgerContext | None = None
        if running is None:
            context = LedgerContext.open(settings)
            running = LedgerService(context)
        app.state.service = running
        running.start()
        try:
            yield
        finally:
            running.stop()
            if context is not None:
                context.close()

    app = FastAPI(
        title="GridLedger",
        version="0.1.0",
        summary="A blockchain-backed ledger for electricity trades",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.state.settings = settings
    if service is not None:
        app.state.service = service
    problems.install(app)
    for module in (trades, submissions, participants, metering, settlement, eip712, health, audit, exports):
        app.include_router(module.router)
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
        app.openapi_schema = schema
    return app.openapi_schema


def _is_problem(content: dict[str, Any]) -> bool:
    ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
    return bool(ref.endswith("/Problem"))
