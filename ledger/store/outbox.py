"""The relayer's durable outbox of signed trades and of signed cancellations.

A submission moves   accepted -> pending -> recorded | rejected,   and back from pending to
accepted when its transaction is lost (`requeue`). Marking a row recorded or rejected again is a
no-op, because the chain may be observed twice (a receipt, then the indexer); anything else out
of order is a ConflictError. Functions never commit: the caller's unit of work does.

A reorg can take back what a block said (`ledger.services.reconcile`): a recorded or rejected
submission whose transaction is waiting to be mined again is pending again (`unconfirm`); one
whose transaction is gone is accepted again, to be sent anew (`reopen`); one whose transaction
was mined again elsewhere, possibly with another outcome, takes the new one (`relocate`).

A cancellation moves through the same states (`recorded`: the trade is cancelled; `rejected`: the
chain refused the cancellation), keyed by its own id: a trade may have several cancellations, each
signed with another deadline, of which the chain takes one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, cast
from uuid import uuid4

from sqlalchemy import ColumnElement, CursorResult, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from ledger.errors import ConflictError, NotFoundError
from ledger.store import queues
from ledger.store.db import dialect_insert
from ledger.store.models import Cancellation, Submission, SubmissionStatus, hash32, utc_now

ACCEPTED = SubmissionStatus.ACCEPTED
PENDING = SubmissionStatus.PENDING
RECORDED = SubmissionStatus.RECORDED
REJECTED = SubmissionStatus.REJECTED


def add_submission(session: Session, trade_id: str, payload: Mapping[str, Any]) -> tuple[Submission, bool]:
    """Accept a signed trade once: (the new row, True), or (the row already there, False).

    One INSERT ... ON CONFLICT DO NOTHING: a concurrent transaction adding the same trade cannot
    make it fail, and the common case (a new trade) costs a single statement."""
    trade_id = hash32(trade_id, field="trade_id")
    now = utc_now()
    statement = (
        dialect_insert(session)(Submission)
        .values(
            id=str(uuid4()),
            trade_id=trade_id,
            payload=dict(payload),
            status=ACCEPTED,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[Submission.trade_id])
        .returning(Submission)
    )
    submission = session.scalars(statement).one_or_none()
    if submission is not None:
        return submission, True
    existing = get_submission_by_trade(session, trade_id)
    if existing is None:  # a conflict on another key: not ours to hide
        raise ConflictError("the submission could not be stored", trade_id=trade_id)
    return existing, False


def get_submission(session: Session, submission_id: str) -> Submission | None:
    return session.get(Submission, submission_id)


def get_submission_by_trade(session: Session, trade_id: str) -> Submission | None:
    statement = select(Submission).where(Submission.trade_id == hash32(trade_id, field="trade_id"))
    return session.scalars(statement).one_or_none()


def claim_accepted(session: Session, limit: int) -> list[Submission]:
    """Up to `limit` accepted submissions, oldest first, locked until the caller's transaction
    ends: relayers never send the same trade twice (`queues.claim`)."""
    return queues.claim(session, Submission, ACCEPTED, limit)


def list_pending(session: Session) -> list[Submission]:
    """Submissions sent in a transaction not yet known to be mined: check them by tx hash."""
    return queues.listed(session, Submission, PENDING)


def mark_pending(session: Session, ids: Collection[str], tx_hash: str) -> None:
    """The submissions `ids` were sent in the transaction `tx_hash`."""
    _transition(
        session,
        Submission.id,
        ids,
        to=PENDING,
        allowed_from={ACCEPTED},
        values={"transaction_hash": hash32(tx_hash, field="tx_hash")},
    )


def mark_recorded(session: Session, trade_ids: Collection[str], tx_hash: str, block_number: int) -> None:
    """The trades `trade_ids` were recorded on chain by `tx_hash` in `block_number`."""
    _transition(
        session,
        Submission.trade_id,
        [hash32(trade_id, field="trade_ids") for trade_id in trade_ids],
        to=RECORDED,
        allowed_from={ACCEPTED, PENDING, RECORDED},
        values={
            "transaction_hash": hash32(tx_hash, field="tx_hash"),
            "block_number": block_number,
            "error_code": None,
            "error_detail": None,
        },
    )


def mark_rejected(
    session: Session,
    trade_id: str,
    code: str,
    detail: str | None,
    tx_hash: str | None = None,
    block_number: int | None = None,
) -> None:
    """The trade will not be recorded: `code` says why (a custom error name, a check that failed)."""
    _transition(
        session,
        Submission.trade_id,
        [hash32(trade_id, field="trade_id")],
        to=REJECTED,
        allowed_from={ACCEPTED, PENDING, REJECTED},
        values={
            "error_code": code,
            "error_detail": detail,
            "transaction_hash": None if tx_hash is None else hash32(tx_hash, field="tx_hash"),
            "block_number": block_number,
        },
    )


def requeue(session: Session, ids: Collection[str]) -> None:
    """The transaction of pending submissions `ids` was lost: send them again."""
    _transition(
        session,
        Submission.id,
        ids,
        to=ACCEPTED,
        allowed_from={PENDING},
        values={"transaction_hash": None, "attempts": Submission.attempts + 1},
    )


def unconfirm(session: Session, trade_ids: Collection[str], tx_hash: str) -> None:
    """A reorg sent the transaction `tx_hash` of these recorded or rejected trades back to the mempool."""
    _transition(
        session,
        Submission.trade_id,
        [hash32(trade_id, field="trade_ids") for trade_id in trade_ids],
        to=PENDING,
        allowed_from={RECORDED, REJECTED, PENDING},
        values={"transaction_hash": hash32(tx_hash, field="tx_hash"), "block_number": None},
    )


def reopen(session: Session, trade_ids: Collection[str]) -> None:
    """A reorg dropped the transaction of these trades: the relayer sends them again. Not an
    attempt that failed (`requeue` counts those): the chain, not the trade, undid it."""
    _transition(
        session,
        Submission.trade_id,
        [hash32(trade_id, field="trade_ids") for trade_id in trade_ids],
        to=ACCEPTED,
        allowed_from={RECORDED, REJECTED, PENDING},
        values={"transaction_hash": None, "block_number": None, "error_code": None, "error_detail": None},
    )


def relocate(
    session: Session,
    trade_id: str,
    to: SubmissionStatus,
    tx_hash: str,
    block_number: int,
    reason: tuple[str, str] | None = None,
) -> None:
    """Where a reorg put the trade's outcome now: recorded, or rejected for `code`, by `tx_hash` in
    `block_number` (a re-execution in another order may turn one outcome into the other);
    `reason` (code, detail) of a rejection."""
    _transition(
        session,
        Submission.trade_id,
        [hash32(trade_id, field="trade_id")],
        to=to,
        allowed_from={RECORDED, REJECTED, PENDING},
        values={
            "transaction_hash": hash32(tx_hash, field="tx_hash"),
            "block_number": block_number,
            "error_code": None if reason is None else reason[0],
            "error_detail": None if reason is None else reason[1],
        },
    )


# --- cancellations ----------------------------------------------------------------------------


def add_cancellation(
    session: Session, digest: str, trade_id: str, payload: Mapping[str, Any]
) -> tuple[Cancellation, bool]:
    """Accept a signed cancellation once (by its `CancelTrade` digest): (the new row, True), or
    (the row already there, False)."""
    digest = hash32(digest, field="digest")
    now = utc_now()
    statement = (
        dialect_insert(session)(Cancellation)
        .values(
            id=str(uuid4()),
            digest=digest,
            trade_id=hash32(trade_id, field="trade_id"),
            payload=dict(payload),
            status=ACCEPTED,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[Cancellation.digest])
        .returning(Cancellation)
    )
    cancellation = session.scalars(statement).one_or_none()
    if cancellation is not None:
        return cancellation, True
    existing = get_cancellation_by_digest(session, digest)
    if existing is None:
        raise ConflictError("the cancellation could not be stored", trade_id=trade_id)
    return existing, False


def get_cancellation(session: Session, cancellation_id: str) -> Cancellation | None:
    return session.get(Cancellation, cancellation_id)


def get_cancellation_by_digest(session: Session, digest: str) -> Cancellation | None:
    statement = select(Cancellation).where(Cancellation.digest == hash32(digest, field="digest"))
    return session.scalars(statement).one_or_none()


def live_cancellations(session: Session, trade_ids: Collection[str]) -> set[str]:
    """Which of `trade_ids` have a cancellation accepted, on its way or done: the chain takes no
    other cancellation or amendment of those trades."""
    ids = {hash32(trade_id, field="trade_id") for trade_id in trade_ids}
    if not ids:
        return set()
    statement = select(Cancellation.trade_id).where(
        Cancellation.trade_id.in_(ids) & Cancellation.status.in_([ACCEPTED, PENDING, RECORDED])
    )
    return set(session.scalars(statement))


def other_cancellation_done(session: Session, trade_id: str, cancellation_id: str) -> bool:
    """Whether another cancellation of the trade is recorded as having cancelled it."""
    statement = select(Cancellation.id).where(
        (Cancellation.trade_id == hash32(trade_id, field="trade_id"))
        & (Cancellation.status == RECORDED)
        & (Cancellation.id != cancellation_id)
    )
    return session.scalars(statement).first() is not None


def claim_accepted_cancellations(session: Session, limit: int) -> list[Cancellation]:
    """As `claim_accepted`, for cancellations."""
    return queues.claim(session, Cancellation, ACCEPTED, limit)


def list_pending_cancellations(session: Session) -> list[Cancellation]:
    return queues.listed(session, Cancellation, PENDING)


def mark_cancellations_pending(session: Session, ids: Collection[str], tx_hash: str) -> None:
    _transition(
        session,
        Cancellation.id,
        ids,
        to=PENDING,
        allowed_from={ACCEPTED},
        values={"transaction_hash": hash32(tx_hash, field="tx_hash")},
    )


def settle_cancellation(
    session: Session,
    cancellation_id: str,
    to: SubmissionStatus,
    tx_hash: str | None,
    block_number: int | None,
    reason: tuple[str, str] | None = None,
) -> None:
    """The chain's outcome of a cancellation: `recorded` (the trade is cancelled), or `rejected`
    for `reason` (code, detail). Also where a reorg moved it (from recorded or rejected)."""
    _transition(
        session,
        Cancellation.id,
        [cancellation_id],
        to=to,
        allowed_from={ACCEPTED, PENDING, RECORDED, REJECTED},
        values={
            "transaction_hash": None if tx_hash is None else hash32(tx_hash, field="tx_hash"),
            "block_number": block_number,
            "error_code": None if reason is None else reason[0],
            "error_detail": None if reason is None else reason[1],
        },
    )


def requeue_cancellations(session: Session, ids: Collection[str]) -> None:
    """The transaction of pending cancellations `ids` was lost: send them again."""
    _transition(
        session,
        Cancellation.id,
        ids,
        to=ACCEPTED,
        allowed_from={PENDING},
        values={"transaction_hash": None, "attempts": Cancellation.attempts + 1},
    )


def unconfirm_cancellation(session: Session, cancellation_id: str, tx_hash: str) -> None:
    """A reorg sent the cancellation's transaction back to the mempool."""
    _transition(
        session,
        Cancellation.id,
        [cancellation_id],
        to=PENDING,
        allowed_from={RECORDED, REJECTED, PENDING},
        values={"transaction_hash": hash32(tx_hash, field="tx_hash"), "block_number": None},
    )


def reopen_cancellation(session: Session, cancellation_id: str) -> None:
    """A reorg dropped the cancellation's transaction: the relayer sends it again."""
    _transition(
        session,
        Cancellation.id,
        [cancellation_id],
        to=ACCEPTED,
        allowed_from={RECORDED, REJECTED, PENDING},
        values={"transaction_hash": None, "block_number": None, "error_code": None, "error_detail": None},
    )


def _transition(
    session: Session,
    key: InstrumentedAttribute[str],
    keys: Collection[str],
    *,
    to: SubmissionStatus,
    allowed_from: set[SubmissionStatus],
    values: Mapping[str, Any],
) -> None:
    """Move every row (of `key`'s table) in `keys` to `to`, or none: NotFoundError/ConflictError name the culprits."""
    keys = set(keys)
    if not keys:
        return
    model = key.class_
    where: ColumnElement[bool] = key.in_(keys) & model.status.in_(allowed_from)
    statement = update(model).where(where).values(status=to, **values)
    savepoint = session.begin_nested()
    result = cast(CursorResult[Any], session.execute(statement.execution_options(synchronize_session="fetch")))
    if result.rowcount == len(keys):
        savepoint.commit()
        return
    savepoint.rollback()
    rows = session.execute(select(key, model.status).where(key.in_(keys)))
    found: dict[str, SubmissionStatus] = {row_key: status for row_key, status in rows}
    missing = sorted(keys - found.keys())
    if missing:
        raise NotFoundError(f"no submission for {key.key} {', '.join(missing)}", **{key.key: missing})
    blocked = {k: str(status) for k, status in found.items() if status not in allowed_from}
    raise ConflictError(
        f"cannot mark {', '.join(sorted(blocked))} {to}: they are {', '.join(sorted(set(blocked.values())))}",
        to=str(to),
        current=blocked,
    )
