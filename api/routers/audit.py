"""Auditor traceability: histories of trades and participants from the index, and verification
of the index against the chain (read by id, without trusting the index's pointers)."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy.orm import Session

from api.audit_schemas import ParticipantHistoryOut, TradeHistoryOut, VerificationOut
from api.auth import ReaderDep, own_account, visible
from api.deps import ServiceDep, SessionDep
from api.problems import problem_responses
from api.types import Address, Bytes32, IsoTime
from ledger.auth.scopes import Principal, Scope
from ledger.services.audit import AuditService
from ledger.store import queries

# Every answer here is about individual participants: a token, or a trader for its own data.
router = APIRouter(tags=["audit"], responses=problem_responses(401, 403, 404, 422, 503))

_service_lock = threading.Lock()


def get_audit(request: Request, service: ServiceDep) -> AuditService:
    with _service_lock:
        audit: AuditService | None = getattr(request.app.state, "audit", None)
        if audit is None:
            audit = request.app.state.audit = AuditService(service.context)
        return audit


AuditDep = Annotated[AuditService, Depends(get_audit)]
TradeIdPath = Annotated[Bytes32, Path(alias="tradeId", description="the trade's id: its EIP-712 digest")]
RunIdPath = Annotated[
    Bytes32, Path(alias="runId", description="keccak256(abi.encode(periodStart, periodEnd, version))")
]


@router.get(
    "/trades/{tradeId}/history",
    operation_id="getTradeHistory",
    summary="A trade's history: recorded, amended, cancelled, and the settlement runs that included it",
)
def get_trade_history(
    trade_id: TradeIdPath, audit: AuditDep, reader: ReaderDep, session: SessionDep
) -> TradeHistoryOut:
    """From the index. Follows the amendment chain both ways: the history of an amended trade
    goes on with its amendment, up to the statement lines that settled it."""
    _trade_visible(reader, session, trade_id)
    return TradeHistoryOut.of(audit.trade_history(trade_id))


@router.get(
    "/participants/{address}/history",
    operation_id="getParticipantHistory",
    summary="A participant's trades, positions and statements per run and version over a span",
)
def get_participant_history(
    address: Annotated[Address, Path(description="a participant, or the balancing account")],
    period_from: Annotated[IsoTime, Query(alias="from", description="start of the span (delivery time)")],
    period_to: Annotated[IsoTime, Query(alias="to", description="end of the span (exclusive), at most 31 days on")],
    audit: AuditDep,
    reader: ReaderDep,
) -> ParticipantHistoryOut:
    """Needs `trades:read` and `statements:read`, or the participant's own sign-in."""
    own_account(reader, Scope.TRADES_READ, address)
    own_account(reader, Scope.STATEMENTS_READ, address)
    return ParticipantHistoryOut.of(audit.participant_history(address, period_from, period_to))


@router.get(
    "/verify/trades/{tradeId}",
    operation_id="verifyTrade",
    summary="Check the indexed trade field by field against the chain's logs and tradeStatus",
)
def verify_trade(trade_id: TradeIdPath, audit: AuditDep, reader: ReaderDep, session: SessionDep) -> VerificationOut:
    _trade_visible(reader, session, trade_id)
    return VerificationOut.of(audit.verify_trade(trade_id))


@router.get(
    "/verify/settlement-runs/{runId}",
    operation_id="verifySettlementRun",
    summary="Check the indexed run against Settlement.run(), runStatus and its RunCommitted log",
)
def verify_settlement_run(
    run_id: RunIdPath,
    audit: AuditDep,
    lines: Annotated[
        bool, Query(description="also rebuild the tree of the stored lines and compare its root (one pass)")
    ] = True,
    *,
    reader: ReaderDep,
) -> VerificationOut:
    """Any credential: a run's header is public, but rebuilding its tree is not work we do for
    anonymous callers."""
    return VerificationOut.of(audit.verify_run(run_id, lines=lines))


@router.get(
    "/verify/settlement-runs/{runId}/lines/{account}/{kind}/{ref}",
    operation_id="verifySettlementLine",
    summary="Check an indexed line's leaf and proof against the on-chain root (verifyLine)",
)
def verify_settlement_line(
    run_id: RunIdPath,
    account: Annotated[Address, Path(description="a participant, or the balancing account")],
    kind: Annotated[int, Path(description="1 trade, 2 imbalance, 3 penalty, 9 total")],
    ref: Annotated[Bytes32, Path(description="trade id, interval start as a 32-byte integer, or zero")],
    audit: AuditDep,
    reader: ReaderDep,
) -> VerificationOut:
    visible(reader, Scope.STATEMENTS_READ, account, what="statement line", run_id=run_id, account=account)
    return VerificationOut.of(audit.verify_line(run_id, account, kind, ref))


def _trade_visible(reader: Principal, session: Session, trade_id: str) -> None:
    if not reader.holds(Scope.TRADES_READ):
        parties = queries.trade_parties(session, trade_id)
        visible(reader, Scope.TRADES_READ, *(parties or ()), what="trade in the index", trade_id=trade_id)
