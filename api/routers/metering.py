"""Metering: import meter readings and reference prices (committed on chain in batches), read the
current values, every version with its provenance, and the Merkle proof of any value.

Imports need the operator's bearer token for now, readings included: the meter oracle's own
credential (and key) is a later step; the service commits readings with the meter-oracle key.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse

from api import problems
from api.auth import OperatorDep, ReaderDep, own_account, visible
from api.deps import ServiceDep, SessionDep
from api.metering_schemas import (
    IntervalTime,
    LeafProofOut,
    MeterBatchOut,
    MeterReadingHistoryOut,
    MeterReadingOut,
    MeterReadingPage,
    MeterReadingsIn,
    ReferencePriceHistoryOut,
    ReferencePriceOut,
    ReferencePricePage,
    ReferencePricesIn,
    file_problem,
)
from api.problems import problem_responses
from api.types import Address, Bytes32
from ledger import errors
from ledger.auth.scopes import Scope
from ledger.domain.metering import MeteringFileError
from ledger.domain.units import INTERVAL_SECONDS
from ledger.services.metering import BatchResult, MeteringService
from ledger.store import metering_queries
from ledger.store.queries import MAX_PAGE_SIZE

router = APIRouter(tags=["metering"], responses=problem_responses(422, 503))

_service_lock = threading.Lock()


def get_metering(request: Request, service: ServiceDep) -> MeteringService:
    """One MeteringService per application: it serialises imports and remembers participants."""
    with _service_lock:
        metering: MeteringService | None = getattr(request.app.state, "metering", None)
        if metering is None or metering.context is not service.context:
            metering = request.app.state.metering = MeteringService(service.context)
        return metering


MeteringDep = Annotated[MeteringService, Depends(get_metering)]
BatchIdPath = Annotated[Bytes32, Path(alias="batchId", description="the batch id, as the import answered it")]
IntervalPath = Annotated[
    IntervalTime, Path(alias="intervalStart", description="ISO 8601 with a UTC offset, or Unix seconds")
]
FromQuery = Annotated[IntervalTime | None, Query(alias="from", description="first interval start (inclusive)")]
ToQuery = Annotated[IntervalTime | None, Query(alias="to", description="interval starts before this")]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
CursorQuery = Annotated[str | None, Query(max_length=128, description="nextCursor of the previous page")]

_imported_before: dict[int | str, dict[str, Any]] = {
    200: {"model": MeterBatchOut, "description": "imported before: the stored batch, nothing sent"}
}
_import_responses = _imported_before | problem_responses(401, 403, 409)


def _imported(result: BatchResult, response: Response) -> MeterBatchOut:
    out = MeterBatchOut.from_result(result)
    if result.outcome == "existing":
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = out.links["self"]
    return out


# --- meter readings ------------------------------------------------------------------------------


@router.post(
    "/meter-readings",
    operation_id="importMeterReadings",
    status_code=status.HTTP_201_CREATED,
    response_model=MeterBatchOut,
    summary="Import a batch of meter readings and commit its root on chain (operator)",
    responses=_import_responses,
)
def import_meter_readings(
    body: MeterReadingsIn, _operator: OperatorDep, metering: MeteringDep, request: Request, response: Response
) -> MeterBatchOut | JSONResponse:
    """Synchronous: answers once the batch's root is mined. A body with any bad reading is refused
    as a whole (422) with one error per bad value (`row` is its index in `readings`). The same
    readings again (in any order) are the same batch: 200 with the stored batch, nothing sent."""
    try:
        parsed = metering.parse_readings({"readings": body.readings})
        result = metering.import_readings(parsed.readings, source="api", supersedes=body.supersedes)
    except MeteringFileError as exc:
        return problems.response(file_problem(exc, request.url.path, "readings"))
    return _imported(result, response)


@router.get(
    "/meter-readings",
    operation_id="listMeterReadings",
    summary="Current meter readings",
    responses=problem_responses(401, 403),
)
def list_meter_readings(
    session: SessionDep,
    reader: ReaderDep,
    participant: Annotated[Address | None, Query()] = None,
    interval_from: FromQuery = None,
    interval_to: ToQuery = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> MeterReadingPage:
    """The current version of each participant's reading per interval (committed batches only),
    ordered by interval, then participant. `readings:read`, or a trader's own readings."""
    page = metering_queries.list_latest_readings(
        session,
        participant=own_account(reader, Scope.READINGS_READ, participant),
        interval_from=interval_from,
        interval_to=interval_to,
        limit=limit,
        cursor=cursor,
    )
    return MeterReadingPage(items=[MeterReadingOut.from_row(row) for row in page.items], next_cursor=page.next_cursor)


@router.get(
    "/meter-readings/{participant}/{intervalStart}/history",
    operation_id="getMeterReadingHistory",
    summary="Every version of one participant's reading of one interval, with its batch",
    responses=problem_responses(401, 403, 404),
)
def meter_reading_history(
    participant: Annotated[Address, Path()], interval_start: IntervalPath, session: SessionDep, reader: ReaderDep
) -> MeterReadingHistoryOut:
    own_account(reader, Scope.READINGS_READ, participant)
    rows = metering_queries.reading_history(session, participant, interval_start)
    if not rows:
        raise errors.NotFoundError("no reading of this participant for this interval", participant=participant)
    current = metering_queries.list_latest_readings(
        session, participant=participant, interval_from=interval_start, interval_to=interval_start + INTERVAL_SECONDS
    ).items
    return MeterReadingHistoryOut.of(rows, current[0].id if current else None)


@router.get(
    "/meter-reading-batches/{batchId}",
    operation_id="getMeterReadingBatch",
    summary="A batch of meter readings: its root, period, source and on-chain commit",
    responses=problem_responses(404),
)
def meter_reading_batch(batch_id: BatchIdPath, session: SessionDep) -> MeterBatchOut:
    batch = metering_queries.get_reading_batch(session, batch_id)
    if batch is None:
        raise errors.NotFoundError("no such batch of meter readings", batch_id=batch_id)
    return MeterBatchOut.from_row(batch)


@router.get(
    "/meter-reading-batches/{batchId}/proof",
    operation_id="getMeterReadingProof",
    summary="The Merkle proof of one reading in its batch",
    responses=problem_responses(401, 403, 404),
)
def meter_reading_proof(
    batch_id: BatchIdPath,
    session: SessionDep,
    reader: ReaderDep,
    participant: Annotated[Address, Query()],
    interval_start: Annotated[IntervalTime, Query(alias="intervalStart")],
) -> LeafProofOut:
    """The leaf carries the reading: `readings:read`, or the participant's own sign-in."""
    visible(reader, Scope.READINGS_READ, participant, what="reading in this batch", batch_id=batch_id)
    proof = metering_queries.reading_proof(session, batch_id, participant, interval_start)
    if proof is None:
        raise errors.NotFoundError("no such reading in this batch", batch_id=batch_id, participant=participant)
    return LeafProofOut.of(proof)


# --- reference prices ----------------------------------------------------------------------------


@router.post(
    "/reference-prices",
    operation_id="importReferencePrices",
    status_code=status.HTTP_201_CREATED,
    response_model=MeterBatchOut,
    summary="Import the reference prices of a period and commit their root on chain (operator)",
    responses=_import_responses,
)
def import_reference_prices(
    body: ReferencePricesIn, _operator: OperatorDep, metering: MeteringDep, request: Request, response: Response
) -> MeterBatchOut | JSONResponse:
    """Exactly one price per interval of the period; missing and extra intervals are named."""
    try:
        parsed = metering.parse_prices(
            {"prices": body.prices}, period_start=body.period_start, period_end=body.period_end
        )
        result = metering.import_prices(
            parsed.prices, parsed.period_start, parsed.period_end, source="api", supersedes=body.supersedes
        )
    except MeteringFileError as exc:
        return problems.response(file_problem(exc, request.url.path, "prices"))
    return _imported(result, response)


@router.get("/reference-prices", operation_id="listReferencePrices", summary="Current reference prices")
def list_reference_prices(
    session: SessionDep,
    interval_from: FromQuery = None,
    interval_to: ToQuery = None,
    limit: LimitQuery = 50,
    cursor: CursorQuery = None,
) -> ReferencePricePage:
    page = metering_queries.list_latest_prices(
        session, interval_from=interval_from, interval_to=interval_to, limit=limit, cursor=cursor
    )
    return ReferencePricePage(
        items=[ReferencePriceOut.from_row(row) for row in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/reference-prices/{intervalStart}/history",
    operation_id="getReferencePriceHistory",
    summary="Every version of one interval's reference price, with its batch",
    responses=problem_responses(404),
)
def reference_price_history(interval_start: IntervalPath, session: SessionDep) -> ReferencePriceHistoryOut:
    rows = metering_queries.price_history(session, interval_start)
    if not rows:
        raise errors.NotFoundError("no reference price for this interval", interval_start=interval_start)
    current = metering_queries.list_latest_prices(
        session, interval_from=interval_start, interval_to=interval_start + INTERVAL_SECONDS
    ).items
    return ReferencePriceHistoryOut.of(rows, current[0].id if current else None)


@router.get(
    "/reference-price-batches/{batchId}",
    operation_id="getReferencePriceBatch",
    summary="A batch of reference prices: its root, period, source and on-chain commit",
    responses=problem_responses(404),
)
def reference_price_batch(batch_id: BatchIdPath, session: SessionDep) -> MeterBatchOut:
    batch = metering_queries.get_price_batch(session, batch_id)
    if batch is None:
        raise errors.NotFoundError("no such batch of reference prices", batch_id=batch_id)
    return MeterBatchOut.from_row(batch)


@router.get(
    "/reference-price-batches/{batchId}/proof",
    operation_id="getReferencePriceProof",
    summary="The Merkle proof of one interval's price in its batch",
    responses=problem_responses(404),
)
def reference_price_proof(
    batch_id: BatchIdPath,
    session: SessionDep,
    interval_start: Annotated[IntervalTime, Query(alias="intervalStart")],
) -> LeafProofOut:
    proof = metering_queries.price_proof(session, batch_id, interval_start)
    if proof is None:
        raise errors.NotFoundError("no price for this interval in this batch", batch_id=batch_id)
    return LeafProofOut.of(proof)
