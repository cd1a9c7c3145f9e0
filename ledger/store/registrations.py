"""The registrar's queue of participant registrations (`registration_models`).

Functions never commit: the caller's unit of work does. Like the relayer's outbox, a row is
signed for before it is sent: `mark_pending` stores the transaction's hash before the broadcast,
so a restart finds every sent registration by its hash (`list_pending`).

A reorg can take back what a block said (`ledger.services.reconcile`): a registered or rejected
registration whose transaction waits to be mined again is pending again (`unconfirm`); one whose
transaction is gone is accepted again, to be sent anew (`reopen`); one whose transaction was
mined again elsewhere, possibly with another outcome, takes the new one (`relocate`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy import ColumnElement, select, tuple_, update
from sqlalchemy.orm import Session

from ledger.domain.trade import ParticipantKind
from ledger.errors import ParticipantAlreadyRegistered, ValidationError
from ledger.store import queues
from ledger.store.db import dialect_insert
from ledger.store.models import Participant, checksum_address, hash32, utc_now
from ledger.store.registration_models import ParticipantRegistration, RegistrationStatus

ACCEPTED = RegistrationStatus.ACCEPTED
PENDING = RegistrationStatus.PENDING
REGISTERED = RegistrationStatus.REGISTERED
REJECTED = RegistrationStatus.REJECTED

# The cursor of a page of unindexed registrations: "p." and the last row's id. "." is outside the
# alphabet of the index's cursors (base64url), so the two never mix up.
PENDING_CURSOR_PREFIX = "p."
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


Entry = tuple[str, ParticipantKind, str]  # (address, kind, identifier hash)


def add_registration(
    session: Session, address: str, kind: ParticipantKind, identifier_hash: str
) -> tuple[ParticipantRegistration, bool]:
    """`add_registrations` of one entry, its error raised."""
    (outcome,) = add_registrations(session, [(address, kind, identifier_hash)])
    if isinstance(outcome, ParticipantAlreadyRegistered):
        raise outcome
    return outcome


def add_registrations(
    session: Session, entries: Sequence[Entry]
) -> list[tuple[ParticipantRegistration, bool] | ParticipantAlreadyRegistered]:
    """Queue each registration once, in order: (the new row, True), or (the row already there,
    False) when the same registration was queued before (also earlier in `entries`). Another
    registration of an address already queued is ParticipantAlreadyRegistered in its place.

    One SELECT and one INSERT ... ON CONFLICT DO NOTHING: a concurrent transaction adding the
    same address cannot make it fail."""
    entries = [
        (checksum_address(a, field="address"), kind, hash32(h, field="identifier_hash")) for a, kind, h in entries
    ]
    found = get_by_addresses(session, {a for a, _, _ in entries})
    new: dict[str, dict[str, Any]] = {}
    now = utc_now()
    for address, kind, identifier_hash in entries:
        if address not in found and address not in new:
            # A microsecond apart: rows of one batch keep its order (claims and pages go by time).
            accepted_at = now + timedelta(microseconds=len(new))
            new[address] = {
                "id": str(uuid4()),
                "address": address,
                "kind": kind,
                "identifier_hash": identifier_hash,
                "status": ACCEPTED,
                "attempts": 0,
                "created_at": accepted_at,
                "updated_at": accepted_at,
            }
    inserted: dict[str, ParticipantRegistration] = {}
    if new:
        # ORM bulk INSERT: one statement, compiled once, its rows sent in batches (insertmanyvalues).
        statement = (
            dialect_insert(session)(ParticipantRegistration)
            .on_conflict_do_nothing(index_elements=[ParticipantRegistration.address])
            .returning(ParticipantRegistration)
        )
        inserted = {row.address: row for row in session.scalars(statement, list(new.values()))}
    if len(inserted) < len(new):  # another transaction queued some of them meanwhile
        found |= get_by_addresses(session, new.keys() - inserted.keys())
    results: list[tuple[ParticipantRegistration, bool] | ParticipantAlreadyRegistered] = []
    for address, kind, identifier_hash in entries:
        row = inserted.pop(address, None)
        if row is not None:
            found[address] = row
            results.append((row, True))
            continue
        row = found[address]
        if (row.kind, row.identifier_hash) != (kind, identifier_hash) or row.status is REJECTED:
            results.append(
                ParticipantAlreadyRegistered(
                    "the account has a registration already", address=address, registration_id=row.id
                )
            )
        else:
            results.append((row, False))
    return results


def get_by_addresses(session: Session, addresses: Collection[str]) -> dict[str, ParticipantRegistration]:
    if not addresses:
        return {}
    statement = select(ParticipantRegistration).where(ParticipantRegistration.address.in_(set(addresses)))
    return {row.address: row for row in session.scalars(statement)}


def get_registration(session: Session, registration_id: str) -> ParticipantRegistration | None:
    return session.get(ParticipantRegistration, registration_id)


def get_by_address(session: Session, address: str) -> ParticipantRegistration | None:
    statement = select(ParticipantRegistration).where(
        ParticipantRegistration.address == checksum_address(address, field="address")
    )
    return session.scalars(statement).one_or_none()


def indexed_addresses(session: Session, addresses: Collection[str]) -> set[str]:
    """Those of `addresses` (checksummed) the index holds as participants."""
    if not addresses:
        return set()
    return set(session.scalars(select(Participant.address).where(Participant.address.in_(set(addresses)))))


def claim_accepted(session: Session, limit: int) -> list[ParticipantRegistration]:
    """Up to `limit` accepted registrations, oldest first, locked until the caller's transaction
    ends (`queues.claim`)."""
    return queues.claim(session, ParticipantRegistration, ACCEPTED, limit)


def list_pending(session: Session) -> list[ParticipantRegistration]:
    """Registrations sent in a transaction not yet known to be mined: check them by its hash."""
    return queues.listed(session, ParticipantRegistration, PENDING)


def mark_pending(session: Session, ids: Collection[str], tx_hash: str) -> None:
    _update(session, ids, {ACCEPTED}, status=PENDING, transaction_hash=hash32(tx_hash, field="tx_hash"))


def mark_registered(session: Session, ids: Collection[str], tx_hash: str, block_number: int) -> None:
    _update(
        session,
        ids,
        {ACCEPTED, PENDING, REGISTERED},
        status=REGISTERED,
        transaction_hash=hash32(tx_hash, field="tx_hash"),
        block_number=block_number,
        error_code=None,
        error_detail=None,
    )


def mark_rejected(
    session: Session,
    ids: Collection[str],
    code: str,
    detail: str | None,
    tx_hash: str | None = None,
    block_number: int | None = None,
) -> None:
    """The chain refused these registrations: `code` is the problem code of its reason."""
    _update(
        session,
        ids,
        {ACCEPTED, PENDING, REJECTED},
        status=REJECTED,
        error_code=code,
        error_detail=detail,
        transaction_hash=None if tx_hash is None else hash32(tx_hash, field="tx_hash"),
        block_number=block_number,
    )


def requeue(session: Session, ids: Collection[str]) -> None:
    """The transaction of these pending registrations was lost or reverted: send them again."""
    _update(
        session,
        ids,
        {PENDING},
        status=ACCEPTED,
        transaction_hash=None,
        attempts=ParticipantRegistration.attempts + 1,
    )


def unconfirm(session: Session, registration_id: str, tx_hash: str) -> None:
    """A reorg sent the registration's transaction back to the mempool: pending until it is mined."""
    _update(
        session,
        [registration_id],
        {REGISTERED, REJECTED, PENDING},
        status=PENDING,
        transaction_hash=hash32(tx_hash, field="tx_hash"),
        block_number=None,
    )


def reopen(session: Session, registration_id: str) -> None:
    """A reorg dropped the registration's transaction: the registrar sends it again. Not an attempt
    that failed (`requeue` counts those): the chain, not the registration, undid it."""
    _update(
        session,
        [registration_id],
        {REGISTERED, REJECTED, PENDING},
        status=ACCEPTED,
        transaction_hash=None,
        block_number=None,
        error_code=None,
        error_detail=None,
    )


def relocate(
    session: Session,
    registration_id: str,
    to: RegistrationStatus,
    tx_hash: str,
    block_number: int,
    reason: tuple[str, str] | None = None,
) -> None:
    """Where a reorg put the registration's outcome now: registered, or rejected for `reason`
    (code, detail), by `tx_hash` in `block_number` (a re-execution in another order may turn one
    outcome into the other)."""
    _update(
        session,
        [registration_id],
        {REGISTERED, REJECTED, PENDING},
        status=to,
        transaction_hash=hash32(tx_hash, field="tx_hash"),
        block_number=block_number,
        error_code=None if reason is None else reason[0],
        error_detail=None if reason is None else reason[1],
    )


def list_unindexed(
    session: Session, *, kind: ParticipantKind | None, limit: int, cursor: str | None
) -> tuple[list[ParticipantRegistration], str | None]:
    """Registrations the index does not show yet (queued, sent, or mined in a block not indexed
    yet), oldest first, one page at a time: (rows, the next page's cursor or None)."""
    statement = select(ParticipantRegistration).where(
        ParticipantRegistration.status.in_((ACCEPTED, PENDING, REGISTERED)),
        ~select(Participant.address).where(Participant.address == ParticipantRegistration.address).exists(),
    )
    if kind is not None:
        statement = statement.where(ParticipantRegistration.kind == kind)
    if cursor is not None:
        after = _pending_cursor_row(session, cursor)
        statement = statement.where(
            tuple_(ParticipantRegistration.created_at, ParticipantRegistration.id) > tuple_(*after)
        )
    rows = list(
        session.scalars(
            statement.order_by(ParticipantRegistration.created_at, ParticipantRegistration.id).limit(limit + 1)
        )
    )
    following = PENDING_CURSOR_PREFIX + rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], following


def _pending_cursor_row(session: Session, cursor: str) -> tuple[datetime, str]:
    registration_id = cursor.removeprefix(PENDING_CURSOR_PREFIX)
    # Only an id of ours reaches the database (PostgreSQL refuses a NUL in a string, for one).
    row = get_registration(session, registration_id) if _UUID.fullmatch(registration_id) else None
    if not cursor.startswith(PENDING_CURSOR_PREFIX) or row is None:
        raise ValidationError("cursor is not one this API returned", field="cursor", value=cursor)
    return row.created_at, row.id


def _update(session: Session, ids: Collection[str], allowed_from: set[RegistrationStatus], **values: Any) -> None:
    if not ids:
        return
    where: ColumnElement[bool] = ParticipantRegistration.id.in_(set(ids)) & ParticipantRegistration.status.in_(
        allowed_from
    )
    session.execute(
        update(ParticipantRegistration)
        .where(where)
        .values(updated_at=utc_now(), **values)
        .execution_options(synchronize_session="fetch")
    )
