"""Dependencies, as `Annotated` aliases: the running service, its settings, a read session.
Who is asking, and what they may read: `api.auth`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from ledger.config import Settings
from ledger.errors import ChainError
from ledger.services.runtime import LedgerService

log = logging.getLogger(__name__)


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


# scope="function": the connection goes back to the pool when the route returns, not after the
# answer is sent (which waits for the access log's commit).
SessionDep = Annotated[Session, Depends(read_session, scope="function")]


def chain_head(service: LedgerService) -> int | None:
    """The latest block number (cached for a second); None when the node cannot be reached, so
    that reads of the index still answer (without confirmations) while the node is down."""
    try:
        return service.context.clock.head()
    except ChainError as exc:
        log.warning("chain head unavailable: %s", exc.code)
        return None
