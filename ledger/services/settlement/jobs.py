"""Settlement jobs: a requested run, stored before the request is answered and executed by the
workers' settlement thread, with its progress and outcome kept in `settlement_jobs`.

- `submit` stores a job `queued`, or returns the period's job that is queued or running already
  (the same request twice runs once);
- the worker (`run`, a thread of `LedgerService`) takes the oldest job, marks it `running`,
  executes the run (`SettlementService.execute`) and records each step it reports, then
  `succeeded` with the run's id and version, or `failed` with the refusal as a problem;
- a job found `running` when the worker starts was interrupted (the process died): it is executed
  again, and `execute` finishes the run the interrupted one left (as `scripts/settle.py` does);
- a refusal that may pass by itself (the node or the database unreachable) puts the job back to
  `queued`, tried again after RETRY_SECONDS.

One worker thread executes the jobs in order, so runs never race each other here; a run the CLI
executes at the same time is kept apart by the run's primary key and the contract
(`RunInProgress`, a failed job).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from ledger import errors
from ledger.domain.settlement import run_id
from ledger.services.context import LedgerContext
from ledger.services.settlement.progress import ProgressEvent, Step
from ledger.services.settlement.service import SettlementService
from ledger.store.models import utc_now
from ledger.store.settlement_models import JobStatus, SettlementJob

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
RETRY_SECONDS = 5.0

# Key of the PostgreSQL advisory lock that makes "find the period's active job, else add one" atomic.
_SUBMIT_LOCK = 0x736574746C65  # "settle"
_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class JobView:
    job_id: str
    period_start: int
    period_end: int
    status: JobStatus
    requested_by: str
    attempts: int
    step: str | None
    step_detail: str | None
    step_done: int | None
    step_total: int | None
    run_id: str | None
    version: int | None
    action: str | None
    problem: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    created: bool = False  # by this request (False: the period's job that was queued or running)

    @classmethod
    def of(cls, row: SettlementJob, *, created: bool = False) -> JobView:
        return cls(
            job_id=row.job_id,
            period_start=row.period_start,
            period_end=row.period_end,
            status=row.status,
            requested_by=row.requested_by,
            attempts=row.attempts,
            step=row.step,
            step_detail=row.step_detail,
            step_done=row.step_done,
            step_total=row.step_total,
            run_id=row.run_id,
            version=row.version,
            action=row.action,
            problem=None if row.problem is None else json.loads(row.problem),
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            created=created,
        )


class SettlementJobs:
    """Stores jobs (`submit`, `get`) and, in the workers' process, executes them (`run`)."""

    def __init__(self, context: LedgerContext, settlement: SettlementService | None = None) -> None:
        self._context = context
        self._sessions = context.sessions
        self._read_sessions = context.read_sessions
        self._settlement = settlement

    def submit(self, period_start: int, period_end: int, requested_by: str) -> JobView:
        """The period's queued or running job, else a new queued one (stored before returning)."""
        run_id(period_start, period_end, 1)  # validates the period (ValidationError)
        with self._sessions.begin() as session:
            _lock_submissions(session)
            active = session.scalars(
                select(SettlementJob)
                .where(
                    SettlementJob.period_start == period_start,
                    SettlementJob.period_end == period_end,
                    SettlementJob.status.in_(_ACTIVE),
                )
                .order_by(SettlementJob.created_at)
            ).first()
            if active is not None:
                return JobView.of(active)
            row = SettlementJob(
                job_id=str(uuid.uuid4()),
                period_start=period_start,
                period_end=period_end,
                status=JobStatus.QUEUED,
                requested_by=requested_by[:255],
                attempts=0,
            )
            session.add(row)
            session.flush()
            return JobView.of(row, created=True)

    def get(self, job_id: str) -> JobView:
        with self._read_sessions() as session:
            row = session.get(SettlementJob, _job_key(job_id))
            if row is None:
                raise errors.NotFoundError("no such settlement job", job_id=job_id)
            return JobView.of(row)

    # --- the worker ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Executes jobs until `stop` is set: those left running by a dead process first."""
        while not stop.is_set():
            try:
                job = self._take()
            except OperationalError as exc:  # the database is down: wait, as for an empty queue
                log.warning("reading the settlement jobs failed, retrying: %s", exc)
                job = None
            if job is None:
                stop.wait(POLL_SECONDS)
                continue
            self.execute(job)

    def execute(self, job: JobView) -> JobView:
        """Executes one taken job and records its outcome."""
        assert self._settlement is not None, "executing jobs needs the settlement service"
        progress = _StepRecorder(self, job.job_id)
        try:
            outcome = self._settlement.execute(job.period_start, job.period_end, progress=progress)
        except (errors.LedgerError, OperationalError) as exc:
            if isinstance(exc, OperationalError) or exc.retryable:
                log.warning("settlement job %s: %s; trying again in %.0f s", job.job_id, exc, RETRY_SECONDS)
                self._finish(job.job_id, JobStatus.QUEUED, problem=_problem(exc))
                return self.get(job.job_id)
            log.info("settlement job %s refused: %s (%s)", job.job_id, exc, exc.code)
            return self._finish(job.job_id, JobStatus.FAILED, problem=_problem(exc))
        except Exception as exc:  # a bug: the job says so, the worker goes on with the next one
            log.exception("settlement job %s failed", job.job_id)
            return self._finish(job.job_id, JobStatus.FAILED, problem=_problem(exc))
        run = outcome.run
        log.info("settlement job %s: run %s version %s %s", job.job_id, run.run_id, run.version, outcome.action.value)
        return self._finish(
            job.job_id,
            JobStatus.SUCCEEDED,
            run_id=run.run_id,
            version=run.version,
            action=outcome.action.value,
            problem=None,
        )

    def _take(self) -> JobView | None:
        """Marks the next job running: one left running (its process died) first, else the
        oldest queued one whose retry time has come."""
        retry_before = utc_now().timestamp() - RETRY_SECONDS
        with self._sessions.begin() as session:
            candidates = session.scalars(
                select(SettlementJob)
                .where(SettlementJob.status.in_(_ACTIVE))
                .order_by(SettlementJob.status.desc(), SettlementJob.created_at)  # running before queued
            )
            for row in candidates:
                waited = row.problem is None or row.updated_at.timestamp() <= retry_before
                if row.status is JobStatus.RUNNING or waited:
                    row.status = JobStatus.RUNNING
                    row.attempts += 1
                    row.started_at = row.started_at or utc_now()
                    session.flush()
                    return JobView.of(row)
        return None

    def _finish(self, job_id: str, status: JobStatus, **values: Any) -> JobView:
        if "problem" in values and values["problem"] is not None:
            values["problem"] = json.dumps(values["problem"])
        if status is not JobStatus.QUEUED:
            values["finished_at"] = utc_now()
        with self._sessions.begin() as session:
            session.execute(update(SettlementJob).where(SettlementJob.job_id == job_id).values(status=status, **values))
        return self.get(job_id)

    def record_step(self, job_id: str, event: ProgressEvent) -> None:
        with self._sessions.begin() as session:
            session.execute(
                update(SettlementJob)
                .where(SettlementJob.job_id == job_id)
                .values(
                    step=event.step.value,
                    step_detail=event.detail or None,
                    step_done=event.done,
                    step_total=event.total,
                )
            )


class _StepRecorder:
    """The job's progress callback: each step the run reports is stored for `GET`, but for the
    counts of the lines written: the run reports them from inside the transaction that writes
    them, and on SQLite another write would wait for that transaction to end."""

    def __init__(self, jobs: SettlementJobs, job_id: str) -> None:
        self._jobs = jobs
        self._job_id = job_id

    def __call__(self, event: ProgressEvent) -> None:
        if event.step is Step.WRITING:
            return
        try:
            self._jobs.record_step(self._job_id, event)
        except OperationalError as exc:  # progress is for people: never fail a run for it
            log.warning("recording the progress of settlement job %s failed: %s", self._job_id, exc)


def _lock_submissions(session: Session) -> None:
    """SQLite write transactions are serial already (BEGIN IMMEDIATE); PostgreSQL's are not."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_SUBMIT_LOCK)))


def _job_key(job_id: str) -> str:
    try:
        return str(uuid.UUID(job_id))
    except (ValueError, TypeError, AttributeError):
        raise errors.NotFoundError("no such settlement job", job_id=job_id) from None


def _problem(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, errors.LedgerError):
        context = {key: value for key, value in exc.context.items() if value is not None}
        return {"code": exc.code, "detail": exc.message, "context": _plain(context)}
    if isinstance(exc, OperationalError):
        return {"code": "database_unavailable", "detail": "the database is unavailable", "context": {}}
    return {"code": "internal_error", "detail": "the run failed unexpectedly", "context": {}}


def _plain(value: Mapping[str, Any]) -> Any:
    """Context as JSON values (what json.dumps cannot take, as text)."""
    return json.loads(json.dumps(value, default=str))
