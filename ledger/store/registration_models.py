"""The registrar's durable queue of participant registrations.

A registration moves   accepted -> pending -> registered | rejected,   and back from pending to
accepted when its transaction is lost. It is stored before the API answers, so an accepted
registration survives any crash. `ledger/store/migrations/env.py` imports this module so that the
metadata holds the table (migration 0010).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ledger.domain.trade import ParticipantKind
from ledger.store.models import Base, UtcDateTime, _code_list, utc_now


class RegistrationStatus(StrEnum):
    ACCEPTED = "accepted"
    PENDING = "pending"
    REGISTERED = "registered"
    REJECTED = "rejected"


class ParticipantRegistration(Base):
    """One operator request to register `address`; one per address, so the same request again
    finds this row. Only the identifier's keccak-256 is kept, as on chain."""

    __tablename__ = "participant_registrations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), unique=True)
    kind: Mapped[ParticipantKind] = mapped_column(_code_list(ParticipantKind, "participant_kind"))
    identifier_hash: Mapped[str] = mapped_column(String(66))
    status: Mapped[RegistrationStatus] = mapped_column(_code_list(RegistrationStatus, "registration_status"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    transaction_hash: Mapped[str | None] = mapped_column(String(66))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utc_now, onupdate=utc_now)

    __table_args__ = (
        # The registrar's claims and recoveries, and the pending ones GET /participants shows.
        Index("ix_participant_registrations_status_created_at", "status", "created_at"),
    )
