"""Settlement: runs (the operator starts them), statements with deltas, line proofs, disputes."""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from pydantic import BaseModel

from api.auth import OperatorDep, ReaderDep, visible
from api.deps import ServiceDep
from api.problems import problem_responses
from api.settlement_schemas import (
    DisputeIn,
    DisputeOut,
    DisputeTypedDataIn,
    DisputeTypedDataOut,
    ProofOut,
    ResolveIn,
    RunIn,
    RunOut,
    RunPage,
    RunStatusName,
    RunSummaryOut,
    SettlementJobOut,
    StatementOut,
)
from api.types import Address, Bytes32, IsoTime
from ledger.auth.scopes import Scope
from ledger.services.settlement import SettlementService
from ledger.services.settlement.jobs import SettlementJobs
from ledger.store.queries import MAX_PAGE_SIZE
from ledger.store.settlement_models import RunStatus

router = APIRouter(tags=["settlement"], responses=problem_responses(422, 503))

_service_lock = threading.Lock()


def get_settlement(request: Request, service: ServiceDep) -> SettlementService:
    """One SettlementService per application (it serialises runs and caches Merkle trees)."""
    with _service_lock:
        settlement: SettlementService | None = getattr(request.app.state, "settlement", None)
        if settlement is None:
            settlement = request.app.state.settlement = SettlementService(service.context)
        return settlement


SettlementDep = Annotated[SettlementService, Depends(get_settlement)]


def get_settlement_jobs(service: ServiceDep) -> SettlementJobs:
    return SettlementJobs(service.context)


SettlementJobsDep = Annotated[SettlementJobs, Depends(get_settlement_jobs)]
JobIdPath = Annotated[str, Path(alias="jobId", max_length=36, description="the job's id (a UUID)")]
RunIdPath = Annotated[
    Bytes32, Path(alias="runId", description="keccak256(abi.encode(periodStart, periodEnd, version))")
]
AccountPath = Annotated[Address, Path(description="a participant, or the balancing account")]
KindPath = Annotated[int, Path(description="1 trade, 2 imbalance, 3 penalty, 9 total")]
RefPath = Annotated[Bytes32, Path(description="trade id, interval start as a 32-byte integer, or zero")]
DisputeIdPath = Annotated[Bytes32, Path(alias="disputeId", description="keccak256(abi.encode(runId, leafHash))")]
_operator_only = problem_responses(401, 403, 404, 409)
# A statement, a line or a dispute is its account's: `statements:read`, or the account signed in.
_account_only = problem_responses(401, 403, 404)


def _answered(model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entry of a 200 answer beside the 201 of a creation."""
    return {200: {"model": model, "description": description}}


@router.post(
    "/settlement-runs",
    operation_id="runSettlement",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Settle a period (operator): a job, executed by the workers",
    response_description="A new job, stored before this answer (202); the period's job already queued or running (200)",
    responses=_answered(SettlementJobOut, "the period's queued or running job") | _operator_only,
)
def run_settlement(body: RunIn, operator: OperatorDep, jobs: SettlementJobsDep, response: Response) -> SettlementJobOut:
    """Stores a job and answers at once; the workers' settlement thread gathers the inputs,
    computes the statement, writes it and commits its Merkle root, reporting each step in
    `GET /settlement-jobs/{jobId}` (the `Location`). The job ends `succeeded` with the run's id and
    version, or `failed` with the refusal: `missing_reference_price` (naming the intervals),
    `index_behind_period` (the period is not over or not indexed yet), `nothing_to_settle`. A job
    interrupted by a crash is finished when the workers start again."""
    job = jobs.submit(body.period_start, body.period_end, operator.name)
    if not job.created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/settlement-jobs/{job.job_id}"
    return SettlementJobOut.of(job)


@router.get(
    "/settlement-jobs/{jobId}",
    operation_id="getSettlementJob",
    summary="A settlement job: queued, running (its step), succeeded (the run) or failed (why) (operator)",
    responses=_operator_only,
)
def get_settlement_job(job_id: JobIdPath, _operator: OperatorDep, jobs: SettlementJobsDep) -> SettlementJobOut:
    return SettlementJobOut.of(jobs.get(job_id))


@router.get("/settlement-runs", operation_id="listSettlementRuns", summary="List settlement runs, newest first")
def list_settlement_runs(
    settlement: SettlementDep,
    period_start: Annotated[
        IsoTime | None, Query(alias="periodStart", description="periods starting at or after")
    ] = None,
    period_end: Annotated[IsoTime | None, Query(alias="periodEnd", description="periods ending at or before")] = None,
    run_status: Annotated[RunStatusName | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 100,
) -> RunPage:
    runs = settlement.list_runs(
        period_start=period_start,
        period_end=period_end,
        status=None if run_status is None else RunStatus(run_status),
        limit=limit,
    )
    return RunPage(items=[RunSummaryOut.of(run) for run in runs])


@router.get(
    "/settlement-runs/{runId}",
    operation_id="getSettlementRun",
    summary="A run: version, status and finality, root, totals, commit and the inputs it used",
    responses=problem_responses(404),
)
def get_settlement_run(run_id: RunIdPath, settlement: SettlementDep) -> RunOut:
    return RunOut.of_detail(settlement.get_run(run_id))


@router.get(
    "/settlement-runs/{runId}/statements/{account}",
    operation_id="getStatement",
    summary="An account's statement: lines, positions per interval, and deltas against the previous version",
    responses=_account_only,
)
def get_statement(
    run_id: RunIdPath, account: AccountPath, settlement: SettlementDep, reader: ReaderDep
) -> StatementOut:
    visible(reader, Scope.STATEMENTS_READ, account, what="statement", run_id=run_id, account=account)
    return StatementOut.of(settlement.statement(run_id, account))


@router.get(
    "/settlement-runs/{runId}/lines/{account}/{kind}/{ref}/proof",
    operation_id="getLineProof",
    summary="The Merkle proof of one statement line",
    responses=_account_only,
)
def get_line_proof(
    run_id: RunIdPath, account: AccountPath, kind: KindPath, ref: RefPath, settlement: SettlementDep, reader: ReaderDep
) -> ProofOut:
    visible(reader, Scope.STATEMENTS_READ, account, what="statement line", run_id=run_id, account=account)
    return ProofOut.of(settlement.line_proof(run_id, account, kind, ref))


@router.post(
    "/settlement-runs/{runId}/disputes/typed-data",
    operation_id="buildDisputeTypedData",
    summary="The typed-data document a line's account signs to dispute it",
    responses=_account_only,
)
def build_dispute_typed_data(
    run_id: RunIdPath, body: DisputeTypedDataIn, settlement: SettlementDep, reader: ReaderDep
) -> DisputeTypedDataOut:
    """It carries the line's amounts: for the account itself (or `statements:read`)."""
    visible(reader, Scope.STATEMENTS_READ, body.account, what="statement line", run_id=run_id, account=body.account)
    typed = settlement.dispute_typed_data(run_id, body.account, body.kind, body.ref, body.reason, body.deadline)
    return DisputeTypedDataOut.model_validate({"typed_data": typed, "reason_hash": typed["message"]["reasonHash"]})


@router.post(
    "/settlement-runs/{runId}/disputes",
    operation_id="openDispute",
    status_code=status.HTTP_201_CREATED,
    summary="Relay a dispute of a line, signed by the line's account",
    responses=_answered(DisputeOut, "relayed before: the recorded dispute") | problem_responses(404, 409),
)
def open_dispute(run_id: RunIdPath, body: DisputeIn, settlement: SettlementDep, response: Response) -> DisputeOut:
    """The account signs EIP-712 `Dispute` (POST .../disputes/typed-data builds it) with
    `reasonHash` = keccak-256 of the UTF-8 reason. Synchronous: answers once mined, or with the
    contract's reason (`dispute_window_closed`, `run_superseded`, `invalid_dispute_signature`, ...)."""
    dispute = settlement.open_dispute(
        run_id, body.account, body.kind, body.ref, body.reason, body.deadline, body.signature
    )
    if not dispute.created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/disputes/{dispute.dispute_id}"
    return DisputeOut.of(dispute)


@router.post(
    "/disputes/{disputeId}/resolve",
    operation_id="resolveDispute",
    summary="Accept or reject an open dispute (operator)",
    responses=_operator_only,
)
def resolve_dispute(
    dispute_id: DisputeIdPath, body: ResolveIn, _operator: OperatorDep, settlement: SettlementDep
) -> DisputeOut:
    """An accepted dispute keeps the run open until a corrected version supersedes it."""
    return DisputeOut.of(settlement.resolve_dispute(dispute_id, body.accepted, body.resolution))


@router.get(
    "/disputes/{disputeId}",
    operation_id="getDispute",
    summary="A dispute and its resolution",
    responses=_account_only,
)
def get_dispute(dispute_id: DisputeIdPath, settlement: SettlementDep, reader: ReaderDep) -> DisputeOut:
    dispute = settlement.get_dispute(dispute_id)
    visible(reader, Scope.STATEMENTS_READ, dispute.account, what="dispute", dispute_id=dispute_id)
    return DisputeOut.of(dispute)
