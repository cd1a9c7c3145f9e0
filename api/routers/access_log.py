"""The access log: every request for non-public data made with a credential, oldest first."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.access_schemas import AccessLogEntryOut, AccessLogPage
from api.auth import AccessDep, require
from api.deps import SessionDep
from api.problems import problem_responses
from api.types import IsoTime
from ledger.auth.scopes import Principal, Scope
from ledger.domain.units import to_datetime
from ledger.errors import ValidationError
from ledger.services.access import storable
from ledger.store.queries import MAX_PAGE_SIZE

MAX_ENTRY_ID = 2**63 - 1  # the ids are 64-bit integers
# The last second a datetime holds: a bound beyond it (9999-12-31T23:59:59-12:00 is one) means
# the same for a log written in our time.
LATEST = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp())

router = APIRouter(tags=["audit"], responses=problem_responses(401, 403, 422))


@router.get("/access-log", operation_id="listAccessLog", summary="Who read what, and when (access-log:read)")
def list_access_log(
    session: SessionDep,
    access: AccessDep,
    _auditor: Annotated[Principal, Depends(require(Scope.ACCESS_LOG_READ))],
    principal: Annotated[str | None, Query(max_length=100, description="a token's name or a trader's address")] = None,
    since: Annotated[IsoTime | None, Query(alias="from")] = None,
    until: Annotated[IsoTime | None, Query(alias="to", description="exclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
    cursor: Annotated[str | None, Query(max_length=20, description="nextCursor of the previous page")] = None,
) -> AccessLogPage:
    """Reading the log is itself logged. Entries are never changed or deleted (the database
    refuses it)."""
    # Refused here rather than handed to the database, which cannot compare them: an id beyond
    # 64 bits, a name with a NUL (PostgreSQL's text holds none; names are printable).
    if cursor is not None and not (cursor.isascii() and cursor.isdigit() and int(cursor) <= MAX_ENTRY_ID):
        raise ValidationError("cursor must be the nextCursor of a previous page", field="cursor", value=cursor)
    if principal is not None and not principal.isprintable():
        raise ValidationError(
            "principal must be a token's name or a trader's address (printable characters)",
            field="principal",
            value=storable(principal),
        )
    rows = access.entries(
        session,
        principal=principal,
        since=None if since is None else to_datetime(min(since, LATEST)),
        until=None if until is None else to_datetime(min(until, LATEST)),
        after_id=None if cursor is None else int(cursor),
        limit=limit + 1,
    )
    page = rows[:limit]
    return AccessLogPage(
        items=[AccessLogEntryOut.from_row(row) for row in page],
        next_cursor=str(page[-1].id) if len(rows) > limit else None,
    )
