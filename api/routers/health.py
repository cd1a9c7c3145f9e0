"""Health: the chain head, how far the index is, and whether the workers run."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import ReadsDep, ServiceDep, chain_head
from api.schemas import HealthOut, RelayerOut, WorkerOut
from ledger.errors import LedgerError
from ledger.store import queries, senders
from ledger.store.models import utc_now

router = APIRouter(prefix="/health", tags=["health"])


@router.get(
    "",
    operation_id="getHealth",
    summary="Liveness of the node, the index and the relayer/indexer workers",
    responses={
        503: {
            "model": HealthOut,
            "description": "a worker stopped or is being restarted, the node cannot be reached,"
            " or the relayer stalled (`degraded`)",
        }
    },
)
async def get_health(service: ServiceDep, reads: ReadsDep) -> JSONResponse:
    head, checkpoint, waiting_since = await reads(
        lambda session: (
            chain_head(service),
            queries.indexer_checkpoint(session, service.indexer.name),
            senders.relayer_waiting_since(session),
        )
    )
    indexed = None if checkpoint is None else checkpoint.block_number
    if head is not None and indexed is not None:
        head = max(head, indexed)  # the head is cached for a second; the index proves it got this far
    workers = service.worker_statuses
    failure = service.failure
    healthy = head is not None and failure is None and bool(workers) and all(w.alive for w in workers.values())
    stall_limit = timedelta(seconds=service.context.settings.relayer_stall_seconds)
    stalled = waiting_since is not None and utc_now() - waiting_since > stall_limit
    report = HealthOut(
        status=("degraded" if stalled else "ok") if healthy else "unhealthy",
        chain_id=service.context.deployment.chain_id,
        head=head,
        index_checkpoint=indexed,
        index_lag=None if head is None or indexed is None else head - indexed,
        workers={
            name: RelayerOut(
                alive=worker.alive,
                state=worker.state,
                restarts=worker.restarts,
                stalled=stalled,
                waiting_since=waiting_since,
            )
            if name == "relayer"
            else WorkerOut(alive=worker.alive, state=worker.state, restarts=worker.restarts)
            for name, worker in workers.items()
        },
        error=None
        if failure is None
        else {
            "code": failure.code if isinstance(failure, LedgerError) else type(failure).__name__,
            "detail": str(failure),
        },
    )
    return JSONResponse(
        report.model_dump(mode="json", by_alias=True), status_code=200 if report.status == "ok" else 503
    )
