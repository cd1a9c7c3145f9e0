"""Public market data: volume and volume-weighted price per delivery interval, no counterparties;
the market's parameters, and the operator's scheduled changes of the settlement parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.access_schemas import IntervalAggregateOut, MarketIntervalsOut
from api.auth import OperatorDep
from api.deps import ServiceDep, SessionDep
from api.problems import problem_responses
from api.settlement_schemas import MarketParametersOut, ParameterChangeIn, ParameterChangeOut, ParameterChangePage
from api.types import IsoTime
from ledger.domain.market import interval_aggregates
from ledger.domain.units import INTERVAL_SECONDS
from ledger.errors import ValidationError
from ledger.services.settlement.parameters import ParameterDesk
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


@router.get(
    "/parameters",
    operation_id="getMarketParameters",
    summary="The market's parameters: settlement parameters, balancing account, trade limits, dispute window (public)",
    responses=problem_responses(503),
)
def get_market_parameters(service: ServiceDep) -> MarketParametersOut:
    """The trade limits and the dispute window are read from the contracts; the settlement
    parameters are those in effect for a period starting now, with the changes scheduled after it."""
    return MarketParametersOut.of(ParameterDesk(service.context).published())


@router.get(
    "/parameter-changes",
    operation_id="listParameterChanges",
    summary="Every scheduled change of the settlement parameters, who scheduled it and when (public)",
)
def list_parameter_changes(service: ServiceDep) -> ParameterChangePage:
    return ParameterChangePage(items=[ParameterChangeOut.of(c) for c in ParameterDesk(service.context).changes()])


@router.post(
    "/parameter-changes",
    operation_id="scheduleParameterChange",
    status_code=status.HTTP_201_CREATED,
    summary="Schedule settlement parameters from a period start on (operator)",
    responses=problem_responses(401, 403),
)
def schedule_parameter_change(
    body: ParameterChangeIn, operator: OperatorDep, service: ServiceDep, response: Response
) -> ParameterChangeOut:
    """Runs of periods starting at or after `effectiveFrom` use these parameters (recorded in each
    run's inputs), without a restart. Kept as scheduled: a change is undone by scheduling another."""
    change = ParameterDesk(service.context).schedule(
        body.effective_from, body.tolerance_bps, body.penalty_bps, operator.name
    )
    response.headers["Location"] = "/market/parameter-changes"
    return ParameterChangeOut.of(change)
