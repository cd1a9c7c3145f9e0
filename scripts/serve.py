"""Runs the GridLedger service.

Without GRIDLEDGER_RPC_URL it starts a local chain (Hardhat node by default, or anvil with
--node anvil), deploys the contracts to it and serves a SQLite index beside it: the quick start.
With GRIDLEDGER_RPC_URL it connects to that chain and needs the deployment file of
scripts/deploy.py.

This process supervises: it owns the local chain and the listening socket, and runs the API in
`--api-processes N` child processes that all accept on that socket, and the relayer and the
indexer in one more child (`--workers process`, the default), so that their polling does not
compete with the API's requests for the interpreter. A child that dies is started again, with a
growing pause; after repeated quick deaths the service stops and exits with 1, for the layer
above (systemd) to restart it. `--workers threads` runs the relayer and indexer as threads of
the one API process instead. Whatever a process keeps in memory (caches, rate-limit counters,
sign-in nonces) is per process. SIGTERM or Ctrl-C stops every child and the chain.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import multiprocessing
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from ledger import logs
from ledger.chain.node import LocalNode
from ledger.config import LOCAL_OPERATOR_TOKEN, PROJECT_ROOT, Settings
from ledger.errors import LedgerError
from ledger.services.supervisor import Slot, Supervisor
from ledger.services.worker_process import WorkerProcess

log = logging.getLogger("gridledger")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--node", choices=["hardhat", "anvil"], help="kind of local chain to start")
    # Off by default: a log line per request costs about a tenth of a cheap read's time.
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request")
    parser.add_argument(
        "--log-format", choices=logs.LOG_FORMATS, default="text", help="text for people, json (one object a line)"
    )
    parser.add_argument(
        "--workers",
        choices=["process", "threads"],
        default="process",
        help="run the relayer and indexer in a child process (default) or as threads of the API's process",
    )
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        help="processes serving the API on one socket: state kept in memory is per process",
    )
    args = parser.parse_args(argv)
    logs.configure(args.log_format)
    if args.api_processes < 1 or (args.api_processes > 1 and args.workers != "process"):
        print("--api-processes must be at least 1, and more than 1 needs --workers process", file=sys.stderr)
        return 2

    overrides = {"node_kind": args.node} if args.node else {}
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    with _stop_on_signals(stop), tempfile.TemporaryDirectory(prefix="gridledger-") as tmp:
        node: LocalNode | None = None
        listener: socket.socket | None = None
        try:
            rpc_url = settings.rpc_url
            if rpc_url is None:
                node = start_local_chain(settings)
                rpc_url = node.rpc_url
            listener = _listen(args.host, args.port)
            slots: list[Slot] = []
            status_path: Path | None = None
            if args.workers == "process":
                status_path = Path(tmp) / "workers.json"
                slots.append(
                    _worker_slot(WorkerProcess(settings, rpc_url, status_path=status_path, log_format=args.log_format))
                )
            for number in range(1, args.api_processes + 1):
                api = ApiProcess(settings, rpc_url, listener, status_path, args.access_log, args.log_format)
                slots.append(Slot(f"api-{number}", api.start, api.stop))
            supervisor = Supervisor(slots)
            supervisor.start()
            block, where = endpoints(settings, args, rpc_url, node)
            log.info(block, extra={"event": "started", **where})
            return supervisor.wait(stop)
        except LedgerError as exc:
            print(f"cannot start: {exc}", file=sys.stderr)
            return 1
        finally:
            if listener is not None:
                listener.close()
            if node is not None:
                node.stop()


def start_local_chain(settings: Settings) -> LocalNode:
    from ledger.services.devstack import start_local_chain

    return start_local_chain(settings, log_path=PROJECT_ROOT / "var" / f"{settings.node_kind}.log")


def endpoints(
    settings: Settings, args: argparse.Namespace, rpc_url: str, node: LocalNode | None
) -> tuple[str, dict[str, str]]:
    """The block printed once at start (where everything is), and the same as fields for JSON."""
    base = f"http://{args.host}:{args.port}"
    database = make_url(settings.database_url).render_as_string(hide_password=True)
    # A hosted node's URL often carries its API key (in the path, query or user part): a remote
    # one is shown by its origin only.
    shown_rpc = rpc_url if node else _origin(rpc_url)
    chain = f"{rpc_url} (local {node.kind}, chain id {settings.chain_id})" if node else shown_rpc
    processes = f"{args.api_processes} API process{'es' if args.api_processes > 1 else ''}"
    workers = "a process of their own" if args.workers == "process" else "threads of the API process"
    lines = [
        "GridLedger is serving",
        f"  API       {base}  ({processes}; relayer, indexer, registrar and settlement jobs in {workers})",
        f"  docs      {base}/docs",
        f"  explorer  {base}/explorer/",
        f"  chain     {chain}",
        f"  database  {database}",
    ]
    # Only the well-known placeholder is ever printed, never a token someone chose.
    if settings.operator_token.get_secret_value() == LOCAL_OPERATOR_TOKEN:
        lines.append(
            f"  operator  token {LOCAL_OPERATOR_TOKEN!r} reads and does everything; for a named one: "
            "python -m scripts.tokens issue --name me --scopes auditor"
        )
    where = {"apiUrl": base, "docsUrl": f"{base}/docs", "rpcUrl": shown_rpc, "database": database}
    return "\n".join(lines), where


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _worker_slot(workers: WorkerProcess) -> Slot:
    def start(restarts: int, cancel: threading.Event) -> BaseProcess:
        workers.restarts = restarts
        workers.start(cancel)
        assert workers.process is not None
        return workers.process

    def on_death(restarts: int, why: str) -> None:
        workers.restarts = restarts
        workers.mark_restarting(why)

    return Slot("workers", start, workers.stop, on_death)


class ApiProcess:
    """How the supervisor starts and stops one API process (spawned: a fresh interpreter)."""

    def __init__(
        self,
        settings: Settings,
        rpc_url: str,
        listener: socket.socket,
        status_path: Path | None,
        access_log: bool,
        log_format: logs.LogFormat,
    ) -> None:
        self._args = (settings, rpc_url, listener, status_path, access_log, log_format)
        self._spawn = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._pipe: Connection | None = None

    def start(self, restarts: int, cancel: threading.Event) -> BaseProcess:
        keep, given = self._spawn.Pipe()
        process = self._spawn.Process(target=serve_api, args=(*self._args, given), name="gridledger-api", daemon=True)
        process.start()
        given.close()
        self._process, self._pipe = process, keep
        return process

    def stop(self, timeout: float) -> None:
        process, pipe = self._process, self._pipe
        if process is None or pipe is None:
            return
        pipe.close()  # the API process sees its pipe close and stops gracefully
        process.join(timeout)
        if process.is_alive():
            log.warning("API process %d did not stop in %g s: killing it", process.pid, timeout)
            process.kill()
            process.join(5)
        self._process = self._pipe = None


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: it re-raises the signal after its shutdown, which
    ends the process before its own clean-up; the API process stops through `should_exit`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve_api(
    settings: Settings,
    rpc_url: str,
    listener: socket.socket,
    status_path: Path | None,
    access_log: bool,
    log_format: logs.LogFormat,
    parent: Connection,
) -> None:
    """One API process (spawned by main): its own ledger context and app on the shared socket, the
    workers' liveness from their status file (or, without one, the workers as threads here).
    Stops when the parent closes its pipe or goes away, or on SIGTERM."""
    from api.app import create_app
    from ledger.services.context import LedgerContext
    from ledger.services.runtime import LedgerService
    from ledger.services.worker_process import WorkerStatusFile

    logs.configure(log_format)
    # Stopping is the parent's business: a Ctrl-C reaches the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    context = LedgerContext.open(settings, rpc_url=rpc_url)
    try:
        service = LedgerService(context, workers=None if status_path is None else WorkerStatusFile(status_path))
        server = _server(create_app(settings, service=service), access_log)

        def stop_with_parent() -> None:
            with contextlib.suppress(EOFError, OSError):
                parent.recv()
            server.should_exit = True

        signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
        threading.Thread(target=stop_with_parent, name="gridledger-parent-watch", daemon=True).start()
        # What start-up created (modules, the app, the schema models) lives as long as the
        # process: keep it out of the collector's full passes, which otherwise walk it all again.
        gc.collect()
        gc.freeze()
        server.run(sockets=[listener])
    finally:
        context.close()


def _server(app: FastAPI, access_log: bool) -> uvicorn.Server:
    # uvicorn's start and stop lines are routine: the supervisor reports the processes' lives.
    # Proxy headers are the app's to believe or not (GRIDLEDGER_TRUSTED_PROXIES): uvicorn would trust 127.0.0.1.
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=access_log,
        timeout_graceful_shutdown=10,
        proxy_headers=False,
    )
    if access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    return _Server(config)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, opened once here and shared by every API process, so connections
    wait in its backlog while an API process is restarted."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(2048)
    return listener


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set `stop`; a second one while stopping is ignored (the stop is bounded)."""
    handler = lambda signum, frame: stop.set()  # noqa: E731
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


if __name__ == "__main__":
    sys.exit(main())
