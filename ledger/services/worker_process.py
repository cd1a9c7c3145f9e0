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
Given a status file, the child also writes its reports there, for the other API processes
(`WorkerStatusFile`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ledger.config import Settings
from ledger.errors import LedgerError

log = logging.getLogger(__name__)

WORKER_NAMES = ("relayer", "indexer", "registrar")
# How often the child reports while nothing changes, and how long the parent waits for it to start.
REPORT_INTERVAL = 1.0
START_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0

_STOP = "stop"


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

    def __init__(self, settings: Settings, rpc_url: str, *, status_path: Path | None = None) -> None:
        self._settings = settings
        self._rpc_url = rpc_url
        self._status_path = status_path  # where the child also writes its reports, for other readers
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._connection: Connection | None = None
        self._lock = threading.Lock()
        self._alive: dict[str, bool] = {}
        self._failure: BaseException | None = None

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("the workers' process runs already: two relayers would share one key's nonces")
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=run_workers,
            args=(self._settings, self._rpc_url, child, self._status_path),
            name="gridledger-workers",
            daemon=True,
        )
        process.start()
        child.close()
        self._process, self._connection = process, parent
        self._alive, self._failure = {}, None
        deadline = time.monotonic() + START_TIMEOUT
        while not self._alive:
            if not process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise WorkerProcessError("the relayer and indexer process did not start: see its log above")
            self._receive(timeout=0.2)
        log.info("relayer and indexer running in process %d", process.pid)

    def stop(self) -> None:
        process, connection = self._process, self._connection
        if process is None or connection is None:
            return
        with contextlib.suppress(OSError):  # it is gone already
            connection.send(_STOP)
        process.join(STOP_TIMEOUT)
        if process.is_alive():
            log.warning("the workers' process did not stop in %g s: terminating it", STOP_TIMEOUT)
            process.terminate()
            process.join(STOP_TIMEOUT)
        connection.close()
        self._process = self._connection = None
        self._alive = {name: False for name in self._alive}

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
                    self._failure = WorkerProcessError(
                        f"the relayer and indexer process exited (code {process.exitcode})"
                    )


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
        return self._read()[0]

    @property
    def failure(self) -> BaseException | None:
        return self._read()[1]

    def _read(self) -> tuple[dict[str, bool], BaseException | None]:
        try:
            report = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return dict.fromkeys(WORKER_NAMES, False), WorkerProcessError("no report from the workers' process")
        if time.time() - report["at"] > self.STALE_AFTER:
            error = WorkerProcessError(f"no report from the workers' process for {self.STALE_AFTER:g} s")
            return dict.fromkeys(report["alive"], False), error
        failure = report["failure"]
        return dict(report["alive"]), None if failure is None else remote_failure(failure)


def _write_status(path: Path, report: dict[str, Any]) -> None:
    """Replaces the status file in one step: a reader sees the previous report or this one."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({**report, "at": time.time()}))
    os.replace(partial, path)


def run_workers(settings: Settings, rpc_url: str, connection: Connection, status_path: Path | None = None) -> None:
    """The child: opens the ledger, runs its relayer and indexer threads and reports on them
    until the parent says stop or goes away."""
    # Imported here: the parent needs none of this to start the child.
    from ledger.services.context import LedgerContext
    from ledger.services.runtime import LedgerService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = LedgerService(LedgerContext.open(settings, rpc_url=rpc_url))
    service.start()
    try:
        last: dict[str, Any] | None = None
        reported = 0.0
        while True:
            report = {"alive": service.workers, "failure": _failure_report(service.failure)}
            if report != last or time.monotonic() - reported >= REPORT_INTERVAL:
                if status_path is not None:  # first: when the parent hears of a start, the file tells it too
                    _write_status(status_path, report)
                connection.send(report)
                last, reported = report, time.monotonic()
            if connection.poll(0.1) and connection.recv() == _STOP:
                break
    except (EOFError, OSError):
        log.warning("the API process went away: stopping the relayer and indexer")
    finally:
        service.stop()
        if status_path is not None:
            stopped = {"alive": dict.fromkeys(WORKER_NAMES, False), "failure": _failure_report(service.failure)}
            _write_status(status_path, stopped)
        service.context.close()
        connection.close()
