"""What the relayer's outbox and the registrar's queue share: rows waiting in a status, oldest
first (by creation, then id), and the claim of the accepted ones by one sender at a time."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from ledger.store.models import Cancellation, Submission, SubmissionStatus
from ledger.store.registration_models import ParticipantRegistration, RegistrationStatus

Queued = TypeVar("Queued", Submission, Cancellation, ParticipantRegistration)


def oldest_first(model: type[Queued], status: SubmissionStatus | RegistrationStatus) -> Select[Queued]:
    return select(model).where(model.status == status).order_by(model.created_at, model.id)


def claim(
    session: Session, model: type[Queued], status: SubmissionStatus | RegistrationStatus, limit: int
) -> list[Queued]:
    """Up to `limit` rows in `status`, oldest first, locked until the caller's transaction ends.

    On PostgreSQL, rows another sender holds are skipped (FOR UPDATE SKIP LOCKED), so two senders
    never send the same row. SQLite transactions take the write lock when they begin (see db.py),
    which serialises claims the same way."""
    statement = oldest_first(model, status).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(skip_locked=True)
    return list(session.scalars(statement))


def listed(session: Session, model: type[Queued], status: SubmissionStatus | RegistrationStatus) -> list[Queued]:
    return list(session.scalars(oldest_first(model, status)))
