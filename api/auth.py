"""Who is asking, and what they may see: the bearer-token dependencies and the access-log middleware.

Three kinds of caller (`ledger.auth.scopes`): the public (no token) reads public data only; a
token with scopes (auditors, operators); a trader signed in with SIWE, who sees its own data.
Routes of non-public data depend on `ReaderDep`: it requires a credential and marks the request
for the access log, which `AccessLogMiddleware` writes (with the answer's status) before the
answer's first byte is sent. If the entry cannot be written, the answer is a 503 instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import problems
from ledger.auth import scopes
from ledger.auth.scopes import PUBLIC, Principal
from ledger.errors import Forbidden, NotFoundError, Unauthenticated
from ledger.services.access import AccessRecord, AccessService

log = logging.getLogger(__name__)

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="BearerToken",
    description=(
        "An operator-issued token with scopes (`scripts/tokens.py issue`), the operator token of the "
        "settings, or a trader's token from POST /auth/siwe."
    ),
)
TOKEN_REQUIRED = "this data is not public: send a bearer token (see /auth/siwe for traders)"
# The request state member that asks AccessLogMiddleware to log the request.
_LOGGED = "access_principal"


# The dependencies below are `async def` on purpose: they do no blocking work (a token check
# that misses the cache goes to the thread pool), and each sync dependency would cost a hop
# through the thread pool on every request.


async def get_access(request: Request) -> AccessService:
    access: AccessService = request.app.state.access
    return access


AccessDep = Annotated[AccessService, Depends(get_access)]


async def caller(
    access: AccessDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The caller: the public without a token, 401 for a token that is not valid."""
    if credentials is None:
        return PUBLIC
    known = access.cached(credentials.credentials)
    if known is not None:
        return known
    return await run_in_threadpool(access.authenticate, credentials.credentials)


CallerDep = Annotated[Principal, Depends(caller)]


async def reader(request: Request, who: CallerDep) -> Principal:
    """A caller with a credential, logged in the access log; routes then narrow what it sees
    with `Principal.sees` / `own_account`."""
    if not who.authenticated:
        raise Unauthenticated(TOKEN_REQUIRED)
    setattr(request.state, _LOGGED, who)
    return who


ReaderDep = Annotated[Principal, Depends(reader)]


def require(scope: scopes.Scope) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: a logged caller holding `scope`, else 401 (no token) or 403."""

    async def dependency(who: ReaderDep) -> Principal:
        if not who.holds(scope):
            raise Forbidden(f"this needs a token with the scope {scope}", required_scope=str(scope))
        return who

    return dependency


OperatorDep = Annotated[Principal, Depends(require(scopes.Scope.OPERATE))]


def own_account(who: Principal, scope: scopes.Scope, account: str | None) -> str | None:
    """The account a list must be narrowed to: `account` itself for a holder of `scope`; a
    trader's own address otherwise (403 when it asks for somebody else's)."""
    if who.holds(scope):
        return account
    if who.address is None:
        raise Forbidden(f"this needs a token with the scope {scope}", required_scope=str(scope))
    if account is not None and account != who.address:
        raise Forbidden(
            "a trader sees its own data only", required_scope=str(scope), account=account, reason="not_your_account"
        )
    return who.address


def visible(who: Principal, scope: scopes.Scope, *accounts: str | None, what: str, **context: Any) -> None:
    """404 (as if it did not exist) unless the caller may see data of `accounts`: a trader does
    not learn whether somebody else's trade or statement exists."""
    if not who.sees(scope, *accounts):
        raise NotFoundError(f"no such {what}", **context)


class AccessLogMiddleware:
    """Writes the access-log entry of a marked request before its answer starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        replaced = False

        async def logged_send(message: Message) -> None:
            nonlocal replaced
            if replaced:  # the app's answer, after its start was replaced by a 503: dropped
                return
            if message["type"] == "http.response.start":
                principal = scope.get("state", {}).get(_LOGGED)
                if principal is not None and not await self._log(scope, principal, message["status"]):
                    replaced = True
                    body = problems.http_problem(
                        503, "the access log could not be written; try again", scope["path"], "access_log_unavailable"
                    )
                    await problems.response(body, {"Retry-After": "5"})(scope, receive, send)
                    return
            await send(message)

        await self.app(scope, receive, logged_send)

    async def _log(self, scope: Scope, principal: Principal, status: int) -> bool:
        access: AccessService = scope["app"].state.access
        client = scope.get("client")
        record = AccessRecord(
            principal=principal,
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            status=status,
            client=client[0] if client else None,
            at=datetime.now(UTC),
        )
        try:
            await asyncio.wrap_future(access.log.append(record))
        except Exception:  # logged by the writer; the answer becomes a 503
            return False
        return True
