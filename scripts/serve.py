"""Runs the GridLedger service.

Without GRIDLEDGER_RPC_URL it starts a local chain (Hardhat node by default, or anvil with
--node anvil), deploys the contracts to it and serves a SQLite index beside it: the quick start.
With GRIDLEDGER_RPC_URL it connects to that chain and needs the deployment file of
scripts/deploy.py.

The relayer and the indexer run in a child process (`--workers process`, the default), so that
their polling does not compete with the API's requests for the interpreter; `--workers threads`
runs them as threads inside the API's process, as tests do. Either way one command serves
everything, and stopping it stops the workers.
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys

import uvicorn

from api.app import create_app
from ledger.chain.node import LocalNode
from ledger.config import PROJECT_ROOT, Settings
from ledger.errors import LedgerError
from ledger.services.context import LedgerContext
from ledger.services.devstack import start_local_chain
from ledger.services.runtime import LedgerService
from ledger.services.worker_process import WorkerProcess


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    overrides = {"node_kind": args.node} if args.node else {}
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    node: LocalNode | None = None
    try:
        rpc_url = settings.rpc_url
        if rpc_url is None:
            node = start_local_chain(settings, log_path=PROJECT_ROOT / "var" / f"{settings.node_kind}.log")
            rpc_url = node.rpc_url
            logging.info("local %s chain at %s (chain id %d)", settings.node_kind, rpc_url, settings.chain_id)
        workers = WorkerProcess(settings, rpc_url) if args.workers == "process" else None
        service = LedgerService(LedgerContext.open(settings, rpc_url=rpc_url), workers=workers)
        logging.info("serving on http://%s:%d (interactive docs at /docs)", args.host, args.port)
        app = create_app(settings, service=service)
        # What start-up created (modules, the app, the schema models) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise walk it all again and again.
        gc.collect()
        gc.freeze()
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=args.access_log)
    except LedgerError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    finally:
        if node is not None:
            node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
