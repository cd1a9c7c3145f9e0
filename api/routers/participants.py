"""Participants: the registry, read from the index; registering and suspending is the operator's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from api.auth import OperatorDep
from api.deps import ServiceDep, SessionDep, chain_head
from api.problems import problem_responses
from api.schemas import (
    ParticipantActionOut,
    ParticipantIn,
    ParticipantKindName,
    ParticipantOut,
    ParticipantPage,
    ParticipantStatusName,
    ParticipantSummaryOut,
)
from api.types import Address
from ledger import errors
from ledger.domain.trade import ParticipantKind
from ledger.services.participants import OnChain
from ledger.store import queries
from ledger.store.models import ParticipantKind as IndexedKind
from ledger.store.models import ParticipantStatus as IndexedStatus

router = APIRouter(prefix="/participants", tags=["participants"], responses=problem_responses(422, 503))

AddressPath = Annotated[Address, Path(description="the participant's account")]
_operator_only = problem_responses(401, 403, 404, 409)


@router.get("", operation_id="listParticipants", summary="List registered participants, in order of registration")
def list_participants(
    session: SessionDep,
    service: ServiceDep,
    participant_status: Annotated[ParticipantStatusName | None, Query(alias="status")] = None,
    kind: ParticipantKindName | None = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> ParticipantPage:
    page = queries.list_participants(
        session,
        status=None if participant_status is None else IndexedStatus(participant_status),
        kind=None if kind is None else IndexedKind(kind),
        limit=limit,
        cursor=cursor,
    )
    head = chain_head(service) if page.items else None
    return ParticipantPage(
        items=[ParticipantSummaryOut.from_row(row, head) for row in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/{address}",
    operation_id="getParticipant",
    summary="A participant with its events and their provenance",
    responses=problem_responses(404),
)
def get_participant(address: AddressPath, session: SessionDep, service: ServiceDep) -> ParticipantOut:
    row = queries.get_participant(session, address)
    if row is None:
        raise errors.NotFoundError("no such participant in the index", address=address)
    return ParticipantOut.from_row(row, chain_head(service))


@router.post(
    "",
    operation_id="registerParticipant",
    status_code=status.HTTP_201_CREATED,
    summary="Register a participant (operator)",
    responses=_operator_only,
)
def register_participant(
    body: ParticipantIn, _operator: OperatorDep, service: ServiceDep, response: Response
) -> ParticipantActionOut:
    """Synchronous: answers once the registration is mined; GET /participants/{address} shows it
    once its block is final."""
    mined = service.participants.register(body.address, ParticipantKind(body.kind), body.identifier)
    response.headers["Location"] = f"/participants/{body.address}"
    return _action(body.address, "active", mined)


@router.post(
    "/{address}/suspend",
    operation_id="suspendParticipant",
    summary="Suspend a participant (operator): its new trades are refused",
    responses=_operator_only,
)
def suspend_participant(address: AddressPath, _operator: OperatorDep, service: ServiceDep) -> ParticipantActionOut:
    return _action(address, "suspended", service.participants.suspend(address))


@router.post(
    "/{address}/reinstate",
    operation_id="reinstateParticipant",
    summary="Reinstate a suspended participant (operator)",
    responses=_operator_only,
)
def reinstate_participant(address: AddressPath, _operator: OperatorDep, service: ServiceDep) -> ParticipantActionOut:
    return _action(address, "active", service.participants.reinstate(address))


def _action(address: str, new_status: ParticipantStatusName, mined: OnChain) -> ParticipantActionOut:
    return ParticipantActionOut(
        address=address,
        status=new_status,
        transaction_hash=mined.transaction_hash,
        block_number=mined.block_number,
        links={"participant": f"/participants/{address}"},
    )
