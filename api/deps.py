"""Dependencies, as `Annotated` aliases: the running service, a read session, the operator check."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.problems import NotAuthenticated
from ledger.config import Settings
from ledger.errors import ChainError
from ledger.services.runtime import LedgerService

log = logging.getLogger(__name__)

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="The operator's bearer token (GRIDLEDGER_OPERATOR_TOKEN), for registering and suspending participants.",
)


def get_service(request: Request) -> LedgerService:
    service: LedgerService = request.app.state.service
    return service


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ServiceDep = Annotated[LedgerService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def read_session(service: ServiceDep) -> Iterator[Session]:
    """One session per request, for reads of the index; nothing is committed through it."""
    with service.context.read_sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(read_session)]


def require_operator(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """401 unless the request carries `Authorization: Bearer <operator token>`."""
    if credentials is None:
        raise NotAuthenticated("this action needs the operator's bearer token", token_given=False)
    expected = settings.operator_token.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise NotAuthenticated("the bearer token is not the operator's", token_given=True)
    return "operator"


OperatorDep = Annotated[str, Depends(require_operator)]


def chain_head(service: LedgerService) -> int | None:
    """The latest block number (cached for a second); None when the node cannot be reached, so
    that reads of the index still answer (without confirmations) while the node is down."""
    try:
        return service.context.clock.head()
    except ChainError as exc:
        log.warning("chain head unavailable: %s", exc.code)
        return None
