"""Auditor traceability: histories of trades and participants from the index, and verification
of the index against the chain (read by id, without trusting the index's pointers)."""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from api.audit_schemas import ParticipantHistoryOut, TradeHistoryOut, VerificationOut
from api.deps import ServiceDep
from api.problems import problem_responses
from api.types import Address, Bytes32, IsoTime
from ledger.services.audit import AuditService

router = APIRouter(tags=["audit"], responses=problem_responses(404, 422, 503))

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
def get_trade_history(trade_id: TradeIdPath, audit: AuditDep) -> TradeHistoryOut:
    """From the index. Follows the amendment chain both ways: the history of an amended trade
    goes on with its amendment, up to the statement lines that settled it."""
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
) -> ParticipantHistoryOut:
    return ParticipantHistoryOut.of(audit.participant_history(address, period_from, period_to))


@router.get(
    "/verify/trades/{tradeId}",
    operation_id="verifyTrade",
    summary="Check the indexed trade field by field against the chain's logs and tradeStatus",
)
def verify_trade(trade_id: TradeIdPath, audit: AuditDep) -> VerificationOut:
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
) -> VerificationOut:
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
) -> VerificationOut:
    return VerificationOut.of(audit.verify_line(run_id, account, kind, ref))
