"""Tables of the transaction senders: each key's next nonce, and the relayer's last progress.

Every process that signs with a key (the API, the workers, the CLI scripts) takes its nonces from
the key's row here, under the row's lock (`ledger.store.senders`): one owner per key, whatever
the number of processes. None of these rows come from the chain: a reindex never touches them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from ledger.store.models import Base, UtcDateTime, utc_now


class SenderNonce(Base):
    """The next nonce to hand out for one sending address (checksummed)."""

    __tablename__ = "sender_nonces"

    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    next_nonce: Mapped[int] = mapped_column(BigInteger)


class WorkerProgress(Base):
    """When a worker last got work done (the relayer: a submission settled), for /health."""

    __tablename__ = "worker_progress"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    progressed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
