"""Bodies of participant registrations: requests one at a time or in batches, and the status
resource of each (`GET /participant-registrations/{registrationId}`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, WithJsonSchema

from api.batches import counts, merge_answers, parse_items
from api.problems import Problem
from api.schemas import MAX_BATCH, ParticipantIn, ParticipantKindName, RequestModel, ResponseModel
from api.types import Timestamp
from ledger import errors
from ledger.domain.trade import ParticipantKind
from ledger.services.participants import Queued, RegistrationRequest
from ledger.store.registration_models import ParticipantRegistration

RegistrationStatusName = Literal["accepted", "pending", "registered", "rejected"]

# Items are validated one by one (`parse_registrations`), so that a malformed one is refused in its
# place instead of failing the whole batch; the schema still documents them as ParticipantIn.
RegistrationItem = Annotated[Any, WithJsonSchema({"$ref": "#/components/schemas/ParticipantIn"})]


class RegistrationBatchIn(RequestModel):
    participants: list[RegistrationItem] = Field(min_length=1, max_length=MAX_BATCH)


_participant = TypeAdapter(ParticipantIn)


def to_request(body: ParticipantIn) -> RegistrationRequest:
    return RegistrationRequest(body.address, ParticipantKind(body.kind), body.identifier)


def parse_registrations(items: Sequence[Any], path: str) -> list[RegistrationRequest | dict[str, Any]]:
    """Each item as a registration, or the validation problem naming its bad values
    (`participants[3].kind`)."""
    return parse_items(items, _participant, to_request, "participants", path)


class RegistrationOut(ResponseModel):
    """`accepted` (queued), `pending` (sent in `transactionHash`), `registered` (mined in
    `blockNumber`) or `rejected` (`errorCode` is the problem code of the contract's reason)."""

    registration_id: str
    address: str
    kind: ParticipantKindName
    identifier_hash: str = Field(description="keccak-256 of the identifier")
    status: RegistrationStatusName
    transaction_hash: str | None = Field(description="the registerParticipants transaction, once sent")
    block_number: int | None
    error_code: str | None = Field(description="why the chain rejected the registration (status rejected)")
    error_detail: str | None
    attempts: int
    created_at: Timestamp
    updated_at: Timestamp
    links: dict[str, str] = Field(
        examples=[{"self": "/participant-registrations/…", "participant": "/participants/0x…"}]
    )

    @classmethod
    def from_row(cls, row: ParticipantRegistration) -> RegistrationOut:
        return cls(
            registration_id=row.id,
            address=row.address,
            kind=row.kind.value,  # type: ignore[arg-type]
            identifier_hash=row.identifier_hash,
            status=row.status.value,  # type: ignore[arg-type]
            transaction_hash=row.transaction_hash,
            block_number=row.block_number,
            error_code=row.error_code,
            error_detail=row.error_detail,
            attempts=row.attempts,
            created_at=row.created_at,
            updated_at=row.updated_at,
            links={"self": registration_path(row.id), "participant": f"/participants/{row.address}"},
        )


def registration_path(registration_id: str) -> str:
    return f"/participant-registrations/{registration_id}"


class RegistrationBatchItemOut(ResponseModel):
    """One item's answer: `accepted` with its registration, or `refused` with the problem (nothing written)."""

    index: int
    outcome: Literal["accepted", "refused"]
    registration: RegistrationOut | None = None
    created: bool | None = Field(default=None, description="false when the same registration was queued before")
    problem: Problem | None = None


class RegistrationBatchOut(ResponseModel):
    accepted: int
    refused: int
    results: list[RegistrationBatchItemOut]

    @classmethod
    def of(
        cls,
        parsed: Sequence[RegistrationRequest | dict[str, Any]],
        outcomes: Sequence[Queued | errors.LedgerError],
        path: str,
    ) -> RegistrationBatchOut:
        """Merges the items refused by validation with the service's answers for the others
        (`outcomes`, in the order of the registrations in `parsed`)."""
        results = [
            RegistrationBatchItemOut(index=index, outcome="refused", problem=answer)
            if isinstance(answer, Problem)
            else RegistrationBatchItemOut(
                index=index,
                outcome="accepted",
                registration=RegistrationOut.from_row(answer.registration),
                created=answer.created,
            )
            for index, answer in merge_answers(parsed, outcomes, path)
        ]
        return cls(**counts(results), results=results)
