"""Auditor exports: trades, meter readings and statement lines of a period, as CSV or JSON
downloads streamed from the index (formats and provenance columns: `ledger.services.exports`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from api.auth import ReaderDep, own_account
from api.deps import ServiceDep
from api.problems import problem_responses
from api.types import Address, Bytes32, IsoTime
from ledger.auth.scopes import Scope
from ledger.services.exports import Export, ExportPeriod, ExportService, encode_csv, encode_json

# The scope of each export's data, or a trader's own rows (the participant filter is then its own).
router = APIRouter(prefix="/exports", tags=["exports"], responses=problem_responses(401, 403, 422))


def get_exports(service: ServiceDep) -> ExportService:
    return ExportService(service.context.read_sessions)


ExportsDep = Annotated[ExportService, Depends(get_exports)]
FromQuery = Annotated[IsoTime, Query(alias="from", description="period start (inclusive), ISO 8601 with offset")]
ToQuery = Annotated[IsoTime, Query(alias="to", description="period end (exclusive); at most 366 days after from")]
ParticipantQuery = Annotated[Address | None, Query(description="only this participant's rows")]
RunIdQuery = Annotated[Bytes32 | None, Query(alias="runId", description="one run's lines, whatever its status")]

_ENCODERS: dict[str, tuple[str, Callable[[Export], Iterator[bytes]]]] = {
    "csv": ("text/csv; charset=utf-8", encode_csv),
    "json": ("application/json", encode_json),
}


def _download(export: Export, period: ExportPeriod, extension: str) -> StreamingResponse:
    media_type, encode = _ENCODERS[extension]
    filename = f"gridledger-{export.name}-{period.label}.{extension}"
    return StreamingResponse(
        encode(export), media_type=media_type, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


def _described(media_type: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {media_type: {}}, "description": "the export, streamed"}}


def _routes(extension: str) -> None:
    media_type = _ENCODERS[extension][0]
    suffix = extension.capitalize()

    @router.get(
        f"/trades.{extension}",
        operation_id=f"exportTrades{suffix}",
        summary=f"Trades whose delivery overlaps the period, with their log provenance ({extension})",
        response_class=StreamingResponse,
        responses=_described(media_type),
    )
    def export_trades(
        exports: ExportsDep, reader: ReaderDep, start: FromQuery, end: ToQuery, participant: ParticipantQuery = None
    ) -> StreamingResponse:
        period = ExportPeriod.of(start, end, own_account(reader, Scope.TRADES_READ, participant))
        return _download(exports.trades(period), period, extension)

    @router.get(
        f"/meter-readings.{extension}",
        operation_id=f"exportMeterReadings{suffix}",
        summary=f"Every version of the readings of the period, with batch and commit ({extension})",
        response_class=StreamingResponse,
        responses=_described(media_type),
    )
    def export_meter_readings(
        exports: ExportsDep, reader: ReaderDep, start: FromQuery, end: ToQuery, participant: ParticipantQuery = None
    ) -> StreamingResponse:
        period = ExportPeriod.of(start, end, own_account(reader, Scope.READINGS_READ, participant))
        return _download(exports.meter_readings(period), period, extension)

    @router.get(
        f"/statements.{extension}",
        operation_id=f"exportStatements{suffix}",
        summary=f"Statement lines of a run, or of the committed runs of the period ({extension})",
        response_class=StreamingResponse,
        responses=_described(media_type) | problem_responses(404),
    )
    def export_statements(
        exports: ExportsDep,
        reader: ReaderDep,
        start: FromQuery,
        end: ToQuery,
        participant: ParticipantQuery = None,
        run_id: RunIdQuery = None,
    ) -> StreamingResponse:
        period = ExportPeriod.of(start, end, own_account(reader, Scope.STATEMENTS_READ, participant))
        return _download(exports.statements(period, run_id), period, extension)


for _extension in _ENCODERS:
    _routes(_extension)
