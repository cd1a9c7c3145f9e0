"""Submissions and cancellations: where a submitted trade or cancellation is on its way to the chain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import SessionDep
from api.problems import problem_responses
from api.schemas import CancellationOut, SubmissionOut
from ledger import errors
from ledger.store import outbox

router = APIRouter(tags=["submissions"], responses=problem_responses(404, 422))

_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

SubmissionIdPath = Annotated[
    str,
    Path(
        alias="submissionId",
        pattern=_UUID,
        description="as POST /trades answered it",
    ),
]
CancellationIdPath = Annotated[
    str, Path(alias="cancellationId", pattern=_UUID, description="as POST /trades/{tradeId}/cancel answered it")
]


@router.get("/submissions/{submissionId}", operation_id="getSubmission", summary="The status of a submitted trade")
def get_submission(submission_id: SubmissionIdPath, session: SessionDep) -> SubmissionOut:
    """`accepted` (queued), `pending` (sent in `transactionHash`), `recorded` (mined in
    `blockNumber`) or `rejected` (`errorCode`/`errorDetail` say why)."""
    row = outbox.get_submission(session, submission_id)
    if row is None:
        raise errors.NotFoundError("no such submission", submission_id=submission_id)
    return SubmissionOut.from_row(row)


@router.get("/cancellations/{cancellationId}", operation_id="getCancellation", summary="The status of a cancellation")
def get_cancellation(cancellation_id: CancellationIdPath, session: SessionDep) -> CancellationOut:
    """`accepted` (queued), `pending` (sent in `transactionHash`), `recorded` (the trade is
    cancelled, in `blockNumber`) or `rejected` (`errorCode`/`errorDetail` say why)."""
    row = outbox.get_cancellation(session, cancellation_id)
    if row is None:
        raise errors.NotFoundError("no such cancellation", cancellation_id=cancellation_id)
    return CancellationOut.from_row(row)
