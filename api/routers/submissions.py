"""Submissions: where a submitted trade is on its way to the chain."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import SessionDep
from api.problems import problem_responses
from api.schemas import SubmissionOut
from ledger import errors
from ledger.store import outbox

router = APIRouter(prefix="/submissions", tags=["submissions"], responses=problem_responses(404, 422))

SubmissionIdPath = Annotated[
    str,
    Path(
        alias="submissionId",
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="as POST /trades answered it",
    ),
]


@router.get("/{submissionId}", operation_id="getSubmission", summary="The status of a submitted trade")
def get_submission(submission_id: SubmissionIdPath, session: SessionDep) -> SubmissionOut:
    """`accepted` (queued), `pending` (sent in `transactionHash`), `recorded` (mined in
    `blockNumber`) or `rejected` (`errorCode`/`errorDetail` say why)."""
    row = outbox.get_submission(session, submission_id)
    if row is None:
        raise errors.NotFoundError("no such submission", submission_id=submission_id)
    return SubmissionOut.from_row(row)
