"""Public market data: volume and volume-weighted price per delivery interval, no counterparties."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.access_schemas import IntervalAggregateOut, MarketIntervalsOut
from api.deps import SessionDep
from api.problems import problem_responses
from api.types import IsoTime
from ledger.domain.market import interval_aggregates
from ledger.domain.units import INTERVAL_SECONDS
from ledger.errors import ValidationError
from ledger.store import queries

router = APIRouter(prefix="/market", tags=["market"], responses=problem_responses(422))

MAX_SPAN_SECONDS = 7 * 86_400


@router.get(
    "/intervals",
    operation_id="getMarketIntervals",
    summary="Volume and volume-weighted price per 15-minute delivery interval (public)",
)
def get_market_intervals(
    session: SessionDep,
    start: Annotated[IsoTime, Query(alias="from", description="first interval's start, on a 15-minute boundary")],
    end: Annotated[IsoTime, Query(alias="to", description="end (exclusive), at most 7 days after from")],
) -> MarketIntervalsOut:
    """Counts every recorded trade in force (not cancelled, not amended) in each interval it
    delivers in. Every interval of the span is listed, empty ones with a null price."""
    for name, value in (("from", start), ("to", end)):
        if value % INTERVAL_SECONDS:
            raise ValidationError(f"{name} must be on a 15-minute boundary", field=name, value=value)
    if not 0 < end - start <= MAX_SPAN_SECONDS:
        raise ValidationError("to must be after from, by at most 7 days", field="to", value=end)
    aggregates = interval_aggregates(queries.trades_in_force(session, start, end), start, end)
    return MarketIntervalsOut(start=start, end=end, intervals=[IntervalAggregateOut.of(a) for a in aggregates])
