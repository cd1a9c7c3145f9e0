"""Runs the GridLedger service.

Without GRIDLEDGER_RPC_URL it starts a local chain (Hardhat node by default, or anvil with
--node anvil), deploys the contracts to it and serves a SQLite index beside it: the quick start.
With GRIDLEDGER_RPC_URL it connects to that chain and needs the deployment file of
scripts/deploy.py.

The relayer and the indexer run in a child process (`--workers process`, the default), so that
their polling does not compete with the API's requests for the interpreter; `--workers threads`
runs them as threads inside the API's process, as tests do. Either way one command serves
everything, and stopping it stops the workers.

`--api-processes N` serves the API from N processes on one port (SO_REUSEPORT, so Linux): more
requests in parallel than one interpreter allows. Whatever a process keeps in memory (caches,
rate-limit counters, sign-in nonces) is then per process.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from ledger.chain.node import LocalNode
from ledger.config import LOCAL_OPERATOR_TOKEN, PROJECT_ROOT, Settings
from ledger.errors import LedgerError
from ledger.services.context import LedgerContext
from ledger.services.devstack import start_local_chain
from ledger.services.runtime import LedgerService
from ledger.services.worker_process import WorkerProcess, WorkerStatusFile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--node", choices=["hardhat", "anvil"], help="kind of local chain to start")
    # Off by default: a log line per request costs about a tenth of a cheap read's time.
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request")
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
        help="processes serving the API on one port (SO_REUSEPORT; Linux): state kept in memory is per process",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.api_processes < 1 or (args.api_processes > 1 and args.workers != "process"):
        print("--api-processes must be at least 1, and more than 1 needs --workers process", file=sys.stderr)
        return 2

    overrides = {"node_kind": args.node} if args.node else {}
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    node: LocalNode | None = None
    others: list[tuple[BaseProcess, Connection]] = []
    with tempfile.TemporaryDirectory(prefix="gridledger-") as tmp:
        try:
            rpc_url = settings.rpc_url
            if rpc_url is None:
                node = start_local_chain(settings, log_path=PROJECT_ROOT / "var" / f"{settings.node_kind}.log")
                rpc_url = node.rpc_url
                logging.info("local %s chain at %s (chain id %d)", settings.node_kind, rpc_url, settings.chain_id)
            status_path = Path(tmp) / "workers.json" if args.api_processes > 1 else None
            workers = WorkerProcess(settings, rpc_url, status_path=status_path) if args.workers == "process" else None
            service = LedgerService(LedgerContext.open(settings, rpc_url=rpc_url), workers=workers)
            listener = _listen(args.host, args.port, reuse_port=args.api_processes > 1)
            if status_path is not None:
                spawn = multiprocessing.get_context("spawn")
                for _ in range(args.api_processes - 1):
                    keep, given = spawn.Pipe()
                    process = spawn.Process(
                        target=serve_api,
                        args=(settings, rpc_url, args.host, args.port, status_path, args.access_log, given),
                        name="gridledger-api",
                    )
                    process.start()
                    given.close()
                    others.append((process, keep))
            logging.info(
                "serving on http://%s:%d (interactive docs at /docs), %d API process(es)",
                args.host,
                args.port,
                args.api_processes,
            )
            # Only the well-known placeholder is ever logged, never a token someone chose.
            if settings.operator_token.get_secret_value() == LOCAL_OPERATOR_TOKEN:
                logging.info(
                    "explorer at http://%s:%d/explorer/; the local operator token %r reads everything "
                    "(or issue an auditor token: python -m scripts.tokens issue --name me --scopes auditor)",
                    args.host,
                    args.port,
                    LOCAL_OPERATOR_TOKEN,
                )
            _serve(create_app(settings, service=service), listener, args.access_log)
        except LedgerError as exc:
            print(f"cannot start: {exc}", file=sys.stderr)
            return 1
        finally:
            for _, keep in others:
                keep.close()  # the API process sees its pipe close and stops
            for api_process, _ in others:
                api_process.join(30)
                if api_process.is_alive():
                    api_process.terminate()
            if node is not None:
                node.stop()
    return 0


def serve_api(
    settings: Settings,
    rpc_url: str,
    host: str,
    port: int,
    status_path: Path,
    access_log: bool,
    parent: Connection,
) -> None:
    """One more API process (spawned by main): its own ledger context and app on the shared port,
    the workers' liveness from their status file. Stops when the parent process goes away."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def stop_with_parent() -> None:
        with contextlib.suppress(EOFError, OSError):
            parent.recv()
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's graceful shutdown

    threading.Thread(target=stop_with_parent, name="gridledger-parent-watch", daemon=True).start()
    context = LedgerContext.open(settings, rpc_url=rpc_url)
    try:
        service = LedgerService(context, workers=WorkerStatusFile(status_path))
        _serve(create_app(settings, service=service), _listen(host, port, reuse_port=True), access_log)
    finally:
        context.close()


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The listening socket; with `reuse_port`, several processes listen on the same port and the
    kernel spreads the connections over them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


def _serve(app: FastAPI, listener: socket.socket, access_log: bool) -> None:
    # What start-up created (modules, the app, the schema models) lives as long as the process:
    # keep it out of the collector's full passes, which otherwise walk it all again and again.
    gc.collect()
    gc.freeze()
    # Proxy headers are the app's to believe or not (GRIDLEDGER_TRUSTED_PROXIES): uvicorn would trust 127.0.0.1.
    config = uvicorn.Config(app, log_level="info", access_log=access_log, proxy_headers=False)
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    sys.exit(main())
