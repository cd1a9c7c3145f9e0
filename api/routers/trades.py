"""Trades: submit signed trades (one or a batch), read them from the index, cancel them (one or a batch)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from sqlalchemy import Row
from sqlalchemy.orm import Session

from api.auth import ReaderDep, own_account, visible
from api.deps import ReadsDep, ServiceDep, chain_head
from api.problems import problem_responses
from api.schemas import (
    AcceptedOut,
    BatchIn,
    BatchOut,
    CancelBatchIn,
    CancelBatchOut,
    CancelIn,
    CancellationAcceptedOut,
    SignedTradeIn,
    TradeOut,
    TradePage,
    TradeStatusName,
    parse_batch,
    parse_cancel_batch,
)
from api.types import Address, Bytes32, IsoTime
from ledger import errors
from ledger.auth.scopes import Scope
from ledger.domain.trade import SignedTrade
from ledger.services.trading import CancelRequest
from ledger.store import queries
from ledger.store.models import TradeStatus

router = APIRouter(prefix="/trades", tags=["trades"], responses=problem_responses(422, 503))

_RESUBMITTED: dict[int | str, dict[str, Any]] = {
    200: {"model": AcceptedOut, "description": "submitted before: the first submission, unchanged"}
}
_CANCELLED_BEFORE: dict[int | str, dict[str, Any]] = {
    200: {"model": CancellationAcceptedOut, "description": "sent before: the first cancellation, unchanged"}
}
TradeIdPath = Annotated[Bytes32, Path(alias="tradeId", description="the trade's id: its EIP-712 digest")]


@router.post(
    "",
    operation_id="submitTrade",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Submit one trade signed by both parties",
    response_description="Accepted for recording (202); the same submission again for a resubmission (200)",
    responses=_RESUBMITTED | problem_responses(409),
)
def submit_trade(body: SignedTradeIn, service: ServiceDep, response: Response) -> AcceptedOut:
    """Checks the trade as the contract will and queues it for the relayer. A trade that fails
    a check gets its problem (422, or 409 for `duplicate_trade` and `paused`) and nothing is
    written. Poll `links.submission` until `recorded` or `rejected`."""
    accepted = service.trading.submit(body.to_domain())
    if not accepted.created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/submissions/{accepted.submission_id}"
    return AcceptedOut.of(accepted.submission_id, accepted.trade_id, accepted.status)


@router.post(
    "/batch",
    operation_id="submitTradeBatch",
    summary="Submit up to 1000 signed trades",
    response_description="One result per trade, in order: accepted with its ids, or refused with its problem",
)
def submit_trade_batch(body: BatchIn, service: ServiceDep, request: Request) -> BatchOut:
    """Every item is judged on its own: a malformed or failing item is refused in its place
    (its problem as POST /trades would answer it) and does not hold back the others. 200 whenever
    the envelope is valid; an empty batch or one of more than 1000 items is a 422."""
    parsed = parse_batch(body.trades, request.url.path)
    signed = [item for item in parsed if isinstance(item, SignedTrade)]
    outcomes = service.trading.submit_many(signed) if signed else []
    return BatchOut.of(parsed, outcomes, request.url.path)


@router.post(
    "/cancel/batch",
    operation_id="cancelTradeBatch",
    summary="Cancel up to 1000 recorded trades, each with both parties' signatures",
    response_description="One result per cancellation, in order: accepted with its ids, or refused with its problem",
)
def cancel_trade_batch(body: CancelBatchIn, service: ServiceDep, request: Request) -> CancelBatchOut:
    """Every item is judged on its own, as POST /trades/{tradeId}/cancel would judge it; the
    accepted ones are cancelled on chain in batches (`cancelTrades`, one transaction per batch).
    200 whenever the envelope is valid; an empty batch or one of more than 1000 items is a 422."""
    parsed = parse_cancel_batch(body.cancellations, request.url.path)
    wanted = [item for item in parsed if isinstance(item, CancelRequest)]
    outcomes = service.trading.cancel_many(wanted) if wanted else []
    return CancelBatchOut.of(parsed, outcomes, request.url.path)


@router.get(
    "",
    operation_id="listTrades",
    summary="List recorded trades, in chain order",
    responses=problem_responses(401, 403),
)
async def list_trades(
    reads: ReadsDep,
    service: ServiceDep,
    reader: ReaderDep,
    participant: Annotated[Address | None, Query(description="trades where this address is a party")] = None,
    side: Annotated[Literal["seller", "buyer", "any"], Query(description="the participant's side")] = "any",
    delivery_from: Annotated[IsoTime | None, Query(alias="deliveryFrom")] = None,
    delivery_to: Annotated[
        IsoTime | None, Query(alias="deliveryTo", description="with deliveryFrom: windows that overlap")
    ] = None,
    trade_status: Annotated[TradeStatusName | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=queries.MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(max_length=64, description="nextCursor of the previous page")] = None,
) -> TradePage:
    """Every trade for a token with `trades:read`; a signed-in trader's own trades only (403 for
    `participant` other than itself). The public sees aggregates only: GET /market/intervals."""
    account = own_account(reader, Scope.TRADES_READ, participant)

    def read(session: Session) -> tuple[queries.Page[Row[Any]], int | None]:
        page = queries.list_trade_rows(
            session,
            participant=account,
            side=side,
            delivery_from=delivery_from,
            delivery_to=delivery_to,
            status=None if trade_status is None else TradeStatus(trade_status),
            limit=limit,
            cursor=cursor,
        )
        return page, chain_head(service) if page.items else None

    page, head = await reads(read)
    return TradePage.of(page.items, page.next_cursor, head)


@router.api_route("/batch", methods=["GET", "HEAD"], include_in_schema=False)
def batch_is_post_only() -> None:
    """Declared before /{tradeId}, which would otherwise take `batch` for a trade id."""
    raise HTTPException(status.HTTP_405_METHOD_NOT_ALLOWED, "/trades/batch takes POST only", {"Allow": "POST"})


@router.get(
    "/{tradeId}",
    operation_id="getTrade",
    summary="A recorded trade: terms, status, provenance and events",
    responses=problem_responses(401, 403, 404),
)
async def get_trade(trade_id: TradeIdPath, reads: ReadsDep, service: ServiceDep, reader: ReaderDep) -> TradeOut:
    """From the index, which follows the head: a trade appears once its block is indexed, with
    fewer `confirmations` than the service requires until it is final (a reorg may remove it).
    A trader sees its own trades only (404 for others')."""
    record, head = await reads(lambda session: (queries.get_trade_record(session, trade_id), chain_head(service)))
    if record is None:
        raise errors.NotFoundError("no such trade in the index", trade_id=trade_id)
    trade = record.trade
    visible(reader, Scope.TRADES_READ, trade.seller, trade.buyer, what="trade in the index", trade_id=trade_id)
    return TradeOut.from_record(record, head)


@router.post(
    "/{tradeId}/cancel",
    operation_id="cancelTrade",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel a recorded trade with both parties' signatures",
    response_description="Accepted for cancelling on chain (202); the same cancellation again (200)",
    responses=_CANCELLED_BEFORE | problem_responses(404, 409),
)
def cancel_trade(
    trade_id: TradeIdPath, body: CancelIn, service: ServiceDep, response: Response
) -> CancellationAcceptedOut:
    """Both parties sign EIP-712 `CancelTrade(bytes32 tradeId, uint64 deadline)` (see
    POST /eip712/cancel). Checked as the contract will (`trade_not_active`, `gate_closed`,
    `signature_expired`, `invalid_signature`, `participant_suspended`, ...), then queued for the
    relayer, which cancels on chain in batches. Poll `links.cancellation` until `recorded`
    (cancelled) or `rejected`."""
    accepted = service.trading.cancel(
        CancelRequest(trade_id, body.deadline, body.seller_signature, body.buyer_signature)
    )
    if not accepted.created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/cancellations/{accepted.cancellation_id}"
    return CancellationAcceptedOut.of(accepted)
