"""The market's parameters: the settlement parameters in effect for a period (the settings'
initial values, then the changes the operator scheduled), and everything a participant needs to
know about the market, each read where it lives (the chain for the trade limits and the dispute
window, the database for the scheduled changes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from ledger import errors
from ledger.domain.settlement import (
    SETTLEMENT_RULES_VERSION,
    ParameterChange,
    SettlementParameters,
    parameters_in_effect,
)
from ledger.domain.trade import TradeLimits
from ledger.domain.units import INTERVAL_SECONDS
from ledger.services.context import LedgerContext
from ledger.store.settlement_models import ParameterChangeRow

_UINT32_MAX = 2**32 - 1


@dataclass(frozen=True)
class ScheduledChange:
    change_id: int
    effective_from: int
    parameters: SettlementParameters
    scheduled_by: str
    scheduled_at: datetime

    @classmethod
    def of(cls, row: ParameterChangeRow) -> ScheduledChange:
        parameters = SettlementParameters(row.tolerance_bps, row.penalty_bps)
        return cls(row.change_id, row.effective_from, parameters, row.scheduled_by, row.scheduled_at)


@dataclass(frozen=True)
class MarketParameters:
    balancing_account: str
    parameters: SettlementParameters  # in effect for the period starting now
    parameter_change_id: int | None  # the change that set them (None: the settings)
    initial: SettlementParameters  # the settings' (GRIDLEDGER_TOLERANCE_BPS, _PENALTY_BPS)
    upcoming: list[ScheduledChange]  # effective after now
    trade_limits: TradeLimits  # TradeLedger's
    dispute_window_seconds: int  # Settlement's
    rules_version: int
    as_of: int  # chain time the answer refers to


class ParameterDesk:
    """Schedules parameter changes and answers which parameters are in effect."""

    def __init__(self, context: LedgerContext) -> None:
        self._context = context
        settings = context.settings
        self.initial = SettlementParameters(settings.tolerance_bps, settings.penalty_bps)
        self.balancing_account = context.settlement_operator.sender.address

    def in_effect(self, session: Session, period_start: int) -> tuple[SettlementParameters, int | None]:
        """The parameters of a run of the period starting at `period_start`, and the change id."""
        changes = [
            ParameterChange(row.change_id, row.effective_from, SettlementParameters(row.tolerance_bps, row.penalty_bps))
            for row in session.scalars(
                select(ParameterChangeRow).where(ParameterChangeRow.effective_from <= period_start)
            )
        ]
        parameters, change = parameters_in_effect(self.initial, changes, period_start)
        return parameters, None if change is None else change.change_id

    def schedule(self, effective_from: int, tolerance_bps: int, penalty_bps: int, scheduled_by: str) -> ScheduledChange:
        """Stores a change for periods starting at or after `effective_from`, which must be an
        interval start after the chain's time: a period that has begun keeps its parameters, so
        a run never changes version because of a change scheduled after its period started."""
        if effective_from % INTERVAL_SECONDS:
            raise errors.ValidationError(
                f"effectiveFrom must start a 15-minute interval (a multiple of {INTERVAL_SECONDS} s)",
                field="effective_from",
                value=effective_from,
            )
        now = self._context.clock.now()
        if effective_from <= now:
            raise errors.ValidationError(
                "effectiveFrom must be after the chain's current time: periods begun keep their parameters",
                field="effective_from",
                value=effective_from,
                now=now,
            )
        for name, value in (("tolerance_bps", tolerance_bps), ("penalty_bps", penalty_bps)):
            if not 0 <= value <= _UINT32_MAX:
                raise errors.ValidationError(f"{name} must be a uint32", field=name, value=value)
        with self._context.sessions.begin() as session:
            row = ParameterChangeRow(
                effective_from=effective_from,
                tolerance_bps=tolerance_bps,
                penalty_bps=penalty_bps,
                scheduled_by=scheduled_by[:255],
            )
            session.add(row)
            session.flush()
            return ScheduledChange.of(row)

    def changes(self) -> list[ScheduledChange]:
        """Every scheduled change, in the order they were scheduled."""
        with self._context.read_sessions() as session:
            rows = session.scalars(select(ParameterChangeRow).order_by(ParameterChangeRow.change_id))
            return [ScheduledChange.of(row) for row in rows]

    def published(self) -> MarketParameters:
        now = self._context.clock.now()
        current_period = now // INTERVAL_SECONDS * INTERVAL_SECONDS
        with self._context.read_sessions() as session:
            parameters, change_id = self.in_effect(session, current_period)
        upcoming = [change for change in self.changes() if change.effective_from > current_period]
        return MarketParameters(
            balancing_account=self.balancing_account,
            parameters=parameters,
            parameter_change_id=change_id,
            initial=self.initial,
            upcoming=sorted(upcoming, key=lambda change: (change.effective_from, change.change_id)),
            trade_limits=self._context.recorder.trade_limits(),
            dispute_window_seconds=self._context.settler.dispute_window(),
            rules_version=SETTLEMENT_RULES_VERSION,
            as_of=now,
        )
