"""Each sending key's nonces, handed out by the database to every process that signs with it, and
the relayer's last progress (`sender_models`).

`allocate` locks the key's row for the rest of the caller's transaction (PostgreSQL: FOR UPDATE;
SQLite: its write transactions run one at a time, see db.py), so two processes never get the same
nonce. Functions never commit: the caller's unit of work does, and a rolled-back transaction gives
its nonces back.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from ledger.store.db import dialect_insert
from ledger.store.models import Submission, SubmissionStatus, utc_now
from ledger.store.sender_models import SenderNonce, WorkerProgress


def allocate(session: Session, address: str, chain_next: int, count: int = 1) -> int:
    """The first of `count` consecutive nonces for `address`: the stored next one, or the chain's
    own count (`chain_next`, with pending transactions) when that is higher (another sender of the
    key, or a first use)."""
    session.execute(
        dialect_insert(session)(SenderNonce)
        .values(address=address, next_nonce=chain_next)
        .on_conflict_do_nothing(index_elements=[SenderNonce.address])
    )
    stored = session.scalar(select(SenderNonce.next_nonce).where(SenderNonce.address == address).with_for_update())
    first = max(int(stored or 0), chain_next)
    session.execute(update(SenderNonce).where(SenderNonce.address == address).values(next_nonce=first + count))
    return first


def rewind(session: Session, address: str, chain_next: int) -> None:
    """Hands out `chain_next` next: nonces above the chain's count were lost (a refused or dropped
    transaction, one signed but never sent), and a gap would hold every later one back."""
    session.execute(
        update(SenderNonce)
        .where(SenderNonce.address == address, SenderNonce.next_nonce > chain_next)
        .values(next_nonce=chain_next)
    )


# The relayer's row in worker_progress.
RELAYER = "relayer"


def record_progress(session: Session, name: str) -> None:
    now = utc_now()
    session.execute(
        dialect_insert(session)(WorkerProgress)
        .values(name=name, progressed_at=now)
        .on_conflict_do_update(index_elements=[WorkerProgress.name], set_={"progressed_at": now})
    )


def last_progress(session: Session, name: str) -> datetime | None:
    return session.scalar(select(WorkerProgress.progressed_at).where(WorkerProgress.name == name))


def relayer_waiting_since(session: Session) -> datetime | None:
    """Since when trades have waited for the relayer without it settling any: the acceptance of
    the oldest trade still accepted or pending, or the relayer's last progress if later. None
    while nothing waits."""
    oldest = [
        session.scalar(select(func.min(Submission.created_at)).where(Submission.status == status))
        for status in (SubmissionStatus.ACCEPTED, SubmissionStatus.PENDING)
    ]
    waiting = [t for t in oldest if t is not None]
    if not waiting:
        return None
    progressed = last_progress(session, RELAYER)
    return max(min(waiting), progressed) if progressed is not None else min(waiting)
