"""Deploys the GridLedger contracts to a chain and writes the deployment file.

The deployment file (chain id, contract addresses, deployment block, transaction hashes, ABI
hashes, role holders) is what the service and the other scripts read to find the contracts.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ledger import logs
from ledger.errors import LedgerError
from ledger.services.devstack import deploy
from scripts.settings_flags import (
    CHAIN_FLAGS,
    SettingsRefused,
    add_settings_flags,
    required_rpc_url,
    settings_from_flags,
)


def main(argv: list[str] | None = None) -> int:
    logs.configure(level=logging.WARNING)  # problems only: the script prints its own results
    parser = argparse.ArgumentParser(description=__doc__)
    add_settings_flags(parser, CHAIN_FLAGS)
    try:
        settings = settings_from_flags(parser.parse_args(argv))
    except SettingsRefused as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        deployment = deploy(settings, required_rpc_url(settings))
    except LedgerError as exc:
        print(f"deployment failed: {exc}", file=sys.stderr)
        return 1
    for name, contract in deployment.contracts.items():
        print(f"{name}: {contract.address} (block {contract.block_number}, tx {contract.transaction_hash})")
    print(f"deployment file: {settings.deployment_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
