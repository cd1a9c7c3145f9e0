"""The relayer and indexer in a process of their own, beside the API (the indexer thread with its
reorg repairs of the services' records, `ledger.services.reconcile`: see `LedgerService`).

In the API's process, the workers' polling loops (outbox claims, log reads, their JSON-RPC and
database calls) compete with request handling for the GIL: every switch to a request thread
waits for the interpreter's switch interval, and the tails of cheap reads grow with it. A child
process has its own interpreter, and on a machine with two cores or more its own core.

`WorkerProcess` starts `run_workers` in a child (multiprocessing, spawn: nothing of the parent's
state, threads or connections is inherited), and follows it through a pipe: the child reports its
workers' liveness and the error that stopped one, the parent reads the latest report without
blocking when asked (`alive`, `failure`). The child stops when asked, and on its own when the
parent goes away (the pipe closes), so no orphan keeps relaying with the recorder's key.
Given a status file, the child also writes its reports there, for the API processes
(`WorkerStatusFile`). Under `scripts.serve` the supervising process owns the child
(`ledger.services.supervisor`): it restarts a dead one and marks it `restarting` in that file
meanwhile, and each start tells the child how many restarts came before, which it reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Literal

from ledger import logs
from ledger.config import Settings
from ledger.errors import LedgerError

log = logging.getLogger(__name__)

WORKER_NAMES = ("relayer", "indexer", "registrar", "settlement")
# How often the child reports while nothing changes, and how long the parent waits for it to start.
REPORT_INTERVAL = 1.0
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0

_STOP = "stop"

WorkerState = Literal["running", "restarting", "stopped"]


@dataclass(frozen=True)
class WorkerStatus:
    """What health reports of a worker: alive, the state of its process (`restarting` while the
    supervisor brings a dead one back), and how often that process was restarted."""

    alive: bool
    state: WorkerState
    restarts: int = 0


def _statuses(report: dict[str, Any]) -> dict[str, WorkerStatus]:
    restarts = int(report.get("restarts", 0))
    state = report.get("state", "running")
    return {
        name: WorkerStatus(alive, state if state == "restarting" or alive else "stopped", restarts)
        for name, alive in report["alive"].items()
    }


class WorkerProcessError(LedgerError):
    """The workers' process could not start, or ended without being asked to."""

    code = "worker_process_failed"


def remote_failure(report: dict[str, Any]) -> BaseException:
    """An exception that answers like the child's: the same class name and, for a LedgerError, the
    same `code` and message (exceptions do not all survive pickling, their reports do)."""
    if report["code"] is None:
        return type(report["type"], (Exception,), {})(report["detail"])
    cls = type(report["type"], (LedgerError,), {"code": report["code"]})
    return cls(report["detail"])


def _failure_report(failure: BaseException | None) -> dict[str, Any] | None:
    if failure is None:
        return None
    code = failure.code if isinstance(failure, LedgerError) else None
    return {"type": type(failure).__name__, "code": code, "detail": str(failure)}


class WorkerProcess:
    """The parent's handle on the child that runs the relayer and the indexer."""

    def __init__(
        self,
        settings: Settings,
        rpc_url: str,
        *,
        status_path: Path | None = None,
        log_format: logs.LogFormat = "text",
    ) -> None:
        self._settings = settings
        self._rpc_url = rpc_url
        self._status_path = status_path  # where the child also writes its reports, for other readers
        self._log_format = log_format
        self.restarts = 0  # set by the supervisor before a restart; the child reports it
        self._restarting = False
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._lock = threading.Lock()
        self._alive: dict[str, bool] = {}
        self._failure: BaseException | None = None

    @property
    def process(self) -> BaseProcess | None:
        """The child while it runs (or until `stop` after its death): what a supervisor waits on."""
        return self._process

    def start(self, cancel: threading.Event | None = None) -> None:
        """Starts the child and waits until it reports its workers running; `cancel` set meanwhile
        stops it again (WorkerProcessError)."""
        if self._process is not None:
            raise RuntimeError("the workers' process runs already: two relayers would share one key's nonces")
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=run_workers,
            args=(self._settings, self._rpc_url, child, self._status_path, self.restarts, self._log_format),
            name="gridledger-workers",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._connection = process, parent
        self._alive, self._failure, self._restarting = {}, None, False
        deadline = time.monotonic() + START_TIMEOUT
        while not self._alive:
            if not process.is_alive() or time.monotonic() > deadline or (cancel is not None and cancel.is_set()):
                self.stop()
                raise WorkerProcessError("the workers' process did not start: see its log above")
            self._receive(timeout=0.2)
        log.info("workers (%s) running in process %d", ", ".join(WORKER_NAMES), process.pid)
        # The child reports every REPORT_INTERVAL: read them as they come, or the pipe fills up
        # and blocks the child when nobody asks `alive` for a few minutes (a supervisor).
        threading.Thread(target=self._follow, args=(process,), name="gridledger-worker-reports", daemon=True).start()

    def _follow(self, process: BaseProcess) -> None:
        connection = self._connection
        while connection is not None and self._process is process and process.is_alive():
            try:
                wait([connection, process.sentinel], timeout=REPORT_INTERVAL)  # not holding the lock
            except (OSError, ValueError):  # closed by stop()
                return
            self._receive()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Asks the child to stop and waits `timeout` seconds for it, then terminates it."""
        process, connection = self._process, self._connection
        if process is None or connection is None:
            return
        with contextlib.suppress(OSError):  # it is gone already
            connection.send(_STOP)
        process.join(timeout)
        if process.is_alive():
            log.warning("the workers' process did not stop in %g s: killing it", timeout)
            process.kill()
            process.join(5)
        connection.close()
        self._process = self._connection = None
        self._alive = {name: False for name in self._alive or dict.fromkeys(WORKER_NAMES)}

    def mark_restarting(self, why: str) -> None:
        """Says, here and in the status file, that the supervisor is bringing the dead child back."""
        self._restarting = True
        self._alive = dict.fromkeys(self._alive or WORKER_NAMES, False)
        self._failure = WorkerProcessError(why)
        if self._status_path is not None:
            report = {
                "alive": self._alive,
                "state": "restarting",
                "restarts": self.restarts,
                "failure": _failure_report(self._failure),
            }
            _write_status(self._status_path, report)

    @property
    def statuses(self) -> dict[str, WorkerStatus]:
        alive = self.alive
        report = {"alive": alive, "restarts": self.restarts, "state": "restarting" if self._restarting else "running"}
        return _statuses(report)

    @property
    def alive(self) -> dict[str, bool]:
        """Each worker's liveness as last reported; all False once the process is gone."""
        self._receive()
        return dict(self._alive)

    @property
    def failure(self) -> BaseException | None:
        self._receive()
        return self._failure

    def _receive(self, timeout: float = 0.0) -> None:
        """Takes in the child's reports so far (the latest counts), without waiting by default."""
        with self._lock:
            connection, process = self._connection, self._process
            if connection is None or process is None:
                return
            try:
                while connection.poll(timeout):
                    report = connection.recv()
                    self._alive = dict(report["alive"])
                    failure = report["failure"]
                    self._failure = None if failure is None else remote_failure(failure)
                    timeout = 0.0
            except (EOFError, OSError):
                pass
            if not process.is_alive():
                self._alive = {name: False for name in self._alive or dict.fromkeys(WORKER_NAMES)}
                if self._failure is None:
                    self._failure = WorkerProcessError(f"the workers' process exited (code {process.exitcode})")


class WorkerStatusFile:
    """The workers' liveness for an API process other than the one that started them: the child's
    latest report, read from the file it rewrites every REPORT_INTERVAL; a report older than
    STALE_AFTER means the child is gone. Starting and stopping the workers is not its business."""

    STALE_AFTER = 5 * REPORT_INTERVAL

    def __init__(self, path: Path) -> None:
        self._path = path

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    @property
    def alive(self) -> dict[str, bool]:
        return {name: status.alive for name, status in self.statuses.items()}

    @property
    def statuses(self) -> dict[str, WorkerStatus]:
        return _statuses(self._read()[0])

    @property
    def failure(self) -> BaseException | None:
        return self._read()[1]

    def _read(self) -> tuple[dict[str, Any], BaseException | None]:
        try:
            report = json.loads(self._path.read_text())
        except (OSError, ValueError):
            report = {"alive": dict.fromkeys(WORKER_NAMES, False)}
            return report, WorkerProcessError("no report from the workers' process")
        # The supervisor writes `restarting` once and starts the child again, which can take longer
        # than STALE_AFTER: that report holds until the new child's first.
        if report.get("state") != "restarting" and time.time() - report["at"] > self.STALE_AFTER:
            error = WorkerProcessError(f"no report from the workers' process for {self.STALE_AFTER:g} s")
            return {**report, "alive": dict.fromkeys(report["alive"], False)}, error
        failure = report["failure"]
        return report, None if failure is None else remote_failure(failure)


def _write_status(path: Path, report: dict[str, Any]) -> None:
    """Replaces the status file in one step: a reader sees the previous report or this one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({**report, "at": time.time()}))
    os.replace(partial, path)


def run_workers(
    settings: Settings,
    rpc_url: str,
    connection: Connection,
    status_path: Path | None = None,
    restarts: int = 0,
    log_format: logs.LogFormat = "text",
) -> None:
    """The child: opens the ledger, runs its relayer and indexer threads and reports on them
    until the parent says stop, goes away, or a SIGTERM comes."""
    # Imported here: the parent needs none of this to start the child.
    from ledger.services.context import LedgerContext
    from ledger.services.runtime import LedgerService

    logs.configure(log_format)
    # Stopping is the parent's business: a Ctrl-C reaches the whole process group, the parent
    # stops its children in order. A SIGTERM sent to this process alone stops it cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    service = LedgerService(LedgerContext.open(settings, rpc_url=rpc_url))
    service.start()
    try:
        last: dict[str, Any] | None = None
        reported = 0.0
        while not terminated.is_set():
            report = {
                "alive": service.workers,
                "state": "running",
                "restarts": restarts,
                "pid": os.getpid(),
                "failure": _failure_report(service.failure),
            }
            if report != last or time.monotonic() - reported >= REPORT_INTERVAL:
                if status_path is not None:  # first: when the parent hears of a start, the file tells it too
                    _write_status(status_path, report)
                connection.send(report)
                last, reported = report, time.monotonic()
            if connection.poll(0.1) and connection.recv() == _STOP:
                break
    except (EOFError, OSError):
        log.warning("the parent process went away: stopping the relayer and indexer")
    finally:
        service.stop()
        if status_path is not None:
            stopped = {
                "alive": dict.fromkeys(WORKER_NAMES, False),
                "state": "stopped",
                "restarts": restarts,
                "failure": _failure_report(service.failure),
            }
            _write_status(status_path, stopped)
        service.context.close()
        connection.close()
