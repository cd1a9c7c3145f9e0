"""Tables of access control: issued tokens, sign-in nonces, and the append-only access log.

None of these rows come from the chain: a reindex never touches them. The access log is
append-only in the database itself (migration 0005 adds triggers that refuse UPDATE and DELETE on
SQLite and PostgreSQL, 0008 one that refuses SQLite's INSERT OR REPLACE), so even a bug in the
service cannot rewrite who read what; and tamper-evident: each entry carries the hash of the one
before it (`ledger.auth.access_chain`), so a rewrite by somebody who can drop the triggers shows.
`ledger/store/migrations/env.py` imports this module so that the metadata holds these tables.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ledger.auth.scopes import PrincipalKind
from ledger.store.models import _EVENT_ID, Base, UtcDateTime, _code_list, utc_now


class ApiToken(Base):
    """An operator-issued token (kind `token`, with scopes) or a trader's sign-in session (kind
    `trader`, with its address). Only the SHA-256 digest of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[PrincipalKind] = mapped_column(_code_list(PrincipalKind, "principal_kind"))
    name: Mapped[str] = mapped_column(String(100))
    address: Mapped[str | None] = mapped_column(String(42))
    scopes: Mapped[str] = mapped_column(String(255))  # comma-separated, sorted
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SiweNonce(Base):
    """A nonce handed out for one sign-in; `used_at` is set by the sign-in that consumes it."""

    __tablename__ = "siwe_nonces"

    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (Index("ix_siwe_nonces_expires_at", "expires_at"),)


class AccessLogEntry(Base):
    """One request for non-public data made with a credential, whatever its outcome."""

    __tablename__ = "access_log"

    id: Mapped[int] = mapped_column(_EVENT_ID, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    principal_kind: Mapped[PrincipalKind] = mapped_column(_code_list(PrincipalKind, "principal_kind"))
    principal: Mapped[str] = mapped_column(String(100))  # the token's name or the trader's address
    token_id: Mapped[str | None] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    query: Mapped[str] = mapped_column(String(1024))
    status: Mapped[int] = mapped_column(Integer)
    client: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))  # the previous entry's `hash`, hex
    hash: Mapped[str] = mapped_column(String(64))  # ledger.auth.access_chain.link(prev_hash, entry)

    __table_args__ = (
        Index("ix_access_log_at", "at"),
        Index("ix_access_log_principal_id", "principal", "id"),
    )
