"""Participants: the registry, read from the index with the registrations not indexed yet shown
as `pending`; registering (queued, 202) and suspending is the operator's."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response, status

from api.auth import OperatorDep
from api.deps import ServiceDep, SessionDep, chain_head
from api.participant_schemas import (
    RegistrationBatchIn,
    RegistrationBatchOut,
    RegistrationOut,
    parse_registrations,
    registration_path,
    to_request,
)
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
from ledger.services.participants import OnChain, RegistrationRequest
from ledger.store import queries, registrations
from ledger.store.models import ParticipantKind as IndexedKind
from ledger.store.models import ParticipantStatus as IndexedStatus
from ledger.store.registration_models import ParticipantRegistration

router = APIRouter(prefix="/participants", tags=["participants"], responses=problem_responses(422, 503))

AddressPath = Annotated[Address, Path(description="the participant's account")]
_operator_only = problem_responses(401, 403, 404, 409)
_QUEUED_BEFORE: dict[int | str, dict[str, Any]] = {
    200: {"model": RegistrationOut, "description": "registered before: the first registration, as it stands"}
}
registrations_router = APIRouter(
    prefix="/participant-registrations", tags=["participants"], responses=problem_responses(404, 422)
)
RegistrationIdPath = Annotated[
    str,
    Path(
        alias="registrationId",
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="as POST /participants answered it",
    ),
]


@router.get("", operation_id="listParticipants", summary="List registered participants, in order of registration")
def list_participants(
    session: SessionDep,
    service: ServiceDep,
    participant_status: Annotated[ParticipantStatusName | Literal["pending"] | None, Query(alias="status")] = None,
    kind: ParticipantKindName | None = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> ParticipantPage:
    """The indexed participants in chain order, then (`status` pending, or no status) those whose
    registration is accepted but not indexed yet, in the order they were accepted."""
    items: list[ParticipantSummaryOut] = []
    next_cursor: str | None = None
    pending_phase = cursor is not None and cursor.startswith(registrations.PENDING_CURSOR_PREFIX)
    if participant_status != "pending" and not pending_phase:
        page = queries.list_participants(
            session,
            status=None if participant_status is None else IndexedStatus(participant_status),
            kind=None if kind is None else IndexedKind(kind),
            limit=limit,
            cursor=cursor,
        )
        head = chain_head(service) if page.items else None
        items = [ParticipantSummaryOut.from_row(row, head) for row in page.items]
        next_cursor, cursor = page.next_cursor, None
    if next_cursor is None and participant_status in (None, "pending") and len(items) < limit:
        if cursor == registrations.PENDING_CURSOR_PREFIX:
            cursor = None  # the first page of unindexed registrations
        rows, next_cursor = registrations.list_unindexed(
            session, kind=None if kind is None else ParticipantKind(kind), limit=limit - len(items), cursor=cursor
        )
        items += [ParticipantSummaryOut(**_pending(row)) for row in rows]
    elif next_cursor is None and participant_status is None and items:
        # A full last page of indexed participants: the unindexed ones follow on the next page.
        rows, _ = registrations.list_unindexed(
            session, kind=None if kind is None else ParticipantKind(kind), limit=1, cursor=None
        )
        next_cursor = registrations.PENDING_CURSOR_PREFIX if rows else None
    return ParticipantPage(items=items, next_cursor=next_cursor)


@router.get(
    "/{address}",
    operation_id="getParticipant",
    summary="A participant with its events and their provenance",
    responses=problem_responses(404),
)
def get_participant(address: AddressPath, session: SessionDep, service: ServiceDep) -> ParticipantOut:
    """An account whose registration is accepted but not indexed yet is `pending`, without events."""
    row = queries.get_participant(session, address)
    if row is not None:
        return ParticipantOut.from_row(row, chain_head(service))
    registration = registrations.get_by_address(session, address)
    if registration is None or registration.status is registrations.REJECTED:
        raise errors.NotFoundError("no such participant in the index", address=address)
    return ParticipantOut(**_pending(registration), events=[])


@router.post(
    "",
    operation_id="registerParticipant",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Register a participant (operator)",
    response_description="Accepted for registration (202); the same registration again (200)",
    responses=_operator_only | _QUEUED_BEFORE,
)
def register_participant(
    body: ParticipantIn, _operator: OperatorDep, service: ServiceDep, response: Response
) -> RegistrationOut:
    """Queued for the registrar, which registers queued participants in batches, one transaction
    each. What the contract would refuse and the service can know (the zero address, an account
    registered or queued already with other terms) is refused at once. Poll `links.self` until
    `registered` or `rejected`; meanwhile GET /participants shows the account as `pending`."""
    queued = service.participants.queue(to_request(body))
    if not queued.created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = registration_path(queued.registration.id)
    return RegistrationOut.from_row(queued.registration)


@router.post(
    "/batch",
    operation_id="registerParticipantBatch",
    summary="Register up to 1000 participants (operator)",
    response_description="One result per participant, in order: accepted with its registration, or refused",
    responses=problem_responses(401, 403),
)
def register_participant_batch(
    body: RegistrationBatchIn, _operator: OperatorDep, service: ServiceDep, request: Request
) -> RegistrationBatchOut:
    """Every item is judged on its own, as POST /participants would judge it: a refused item gets
    its problem in place and does not hold back the others. 200 whenever the envelope is valid."""
    parsed = parse_registrations(body.participants, request.url.path)
    queued = [item for item in parsed if isinstance(item, RegistrationRequest)]
    outcomes = service.participants.queue_many(queued) if queued else []
    return RegistrationBatchOut.of(parsed, outcomes, request.url.path)


@registrations_router.get(
    "/{registrationId}", operation_id="getParticipantRegistration", summary="The status of a registration"
)
def get_registration(registration_id: RegistrationIdPath, service: ServiceDep) -> RegistrationOut:
    """`accepted` (queued), `pending` (sent in `transactionHash`), `registered` (mined in
    `blockNumber`) or `rejected` (`errorCode` says why)."""
    return RegistrationOut.from_row(service.participants.registration(registration_id))


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


def _pending(row: ParticipantRegistration) -> dict[str, Any]:
    return ParticipantSummaryOut.pending_fields(
        row.address, row.kind.value, row.identifier_hash, registration_path(row.id)
    )


def _action(address: str, new_status: ParticipantStatusName, mined: OnChain) -> ParticipantActionOut:
    return ParticipantActionOut(
        address=address,
        status=new_status,
        transaction_hash=mined.transaction_hash,
        block_number=mined.block_number,
        links={"participant": f"/participants/{address}"},
    )
