"""Deploys the GridLedger contracts to a chain and writes the deployment file.

The deployment file (chain id, contract addresses, deployment block, transaction hashes, ABI
hashes, role holders) is what the service and the other scripts read to find the contracts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ledger.config import Settings
from ledger.errors import LedgerError
from ledger.services.devstack import deploy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rpc-url", help="JSON-RPC URL (default: GRIDLEDGER_RPC_URL)")
    parser.add_argument("--chain-id", type=int, help="expected chain id (default: GRIDLEDGER_CHAIN_ID)")
    parser.add_argument("--deployment-file", type=Path, help="where to write (default: GRIDLEDGER_DEPLOYMENT_FILE)")
    args = parser.parse_args(argv)
    overrides = {
        key: value
        for key, value in (
            ("rpc_url", args.rpc_url),
            ("chain_id", args.chain_id),
            ("deployment_file", args.deployment_file),
        )
        if value is not None
    }
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.rpc_url is None:
        print("--rpc-url (or GRIDLEDGER_RPC_URL) is required", file=sys.stderr)
        return 2
    try:
        deployment = deploy(settings, settings.rpc_url)
    except LedgerError as exc:
        print(f"deployment failed: {exc}", file=sys.stderr)
        return 1
    for name, contract in deployment.contracts.items():
        print(f"{name}: {contract.address} (block {contract.block_number}, tx {contract.transaction_hash})")
    print(f"deployment file: {settings.deployment_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
