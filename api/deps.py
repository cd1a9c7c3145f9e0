"""Dependencies, as `Annotated` aliases: the running service, its settings, reads of the index.
Who is asking, and what they may read: `api.auth`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from ledger.config import Settings
from ledger.errors import ChainError
from ledger.services.runtime import LedgerService

log = logging.getLogger(__name__)
T = TypeVar("T")


# `async def` although they do no I/O: FastAPI runs a plain `def` dependency in the thread pool,
# a hop (and a wait for the GIL) on every request.
async def get_service(request: Request) -> LedgerService:
    service: LedgerService = request.app.state.service
    return service


async def get_settings(request: Request) -> Settings:
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


class IndexReads:
    """Runs a read of the index in the thread pool, in a session of its own, for `async` routes.

    The hot reads (a trade by id, trade lists, health) use it: a sync route with `SessionDep`
    costs a hop through the thread pool to open the session, one to run the route, one to check
    its answer and one to close the session; each hop waits for the GIL behind whatever the event
    loop is doing, which is what a p99 under load is made of. Here it is one hop."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    async def __call__(self, read: Callable[[Session], T]) -> T:
        return await run_in_threadpool(self._run, read)

    def _run(self, read: Callable[[Session], T]) -> T:
        with self._sessions() as session:
            return read(session)


async def index_reads(service: ServiceDep) -> IndexReads:
    return IndexReads(service.context.read_sessions)


ReadsDep = Annotated[IndexReads, Depends(index_reads)]


def chain_head(service: LedgerService) -> int | None:
    """The latest block number (cached for a second); None when the node cannot be reached, so
    that reads of the index still answer (without confirmations) while the node is down."""
    try:
        return service.context.clock.head()
    except ChainError as exc:
        log.warning("chain head unavailable: %s", exc.code)
        return None
