"""Checks the whole index against the chain and lists every difference.

Compares trades, participants and their events, and the MeterData and Settlement chain facts
(batch commitments, settlement runs, disputes) field by field with what the chain's logs imply;
then checks the off-chain content against what the chain committed: the stored readings and
prices of each batch must hash to the batch's root, the statement lines of each run to the run's
root, each dispute's reason to its hash on chain; and the services' own records of batches, runs,
disputes and relayed trades must not contradict the chain (a record a reorg left stale shows as
a `content:` line naming the table, the id and the field). Last, the access log's chain of hashes:
its first broken link (an entry changed, removed or inserted behind the service's back) shows as a
`tampered:` line.

With --repair, stale records are repaired as the running service does after a rollback
(ledger/services/reconcile.py: moved to where their transaction was mined again, unconfirmed
while it is pending, back to their retryable state when it is gone), then the index is verified
again. Repairing sends no transaction except a dispute's relay with its stored signature, and
needs the services' keys in the settings (as scripts/settle.py does).

Exit status 0 when the index equals what the chain says (up to the block the index claims), 1
with the list of differences otherwise (missing rows, extra rows, fields that differ with both
values, provenance mismatches, content that does not match its root, a broken link of the access
log), 2 for bad settings.

    python -m scripts.verify_index --rpc-url http://127.0.0.1:8545 --database-url sqlite:///var/gridledger.db
    python -m scripts.verify_index ... --repair
"""

from __future__ import annotations

import argparse
import logging
import sys

from ledger import logs
from ledger.chain.deployment import Deployment
from ledger.chain.log_source import JsonRpcLogSource
from ledger.config import Settings
from ledger.errors import LedgerError
from ledger.services.context import LedgerContext
from ledger.services.metering import MeteringService
from ledger.services.reconcile import Reconciler
from ledger.services.settlement import SettlementService
from ledger.services.verification import Difference, verify
from ledger.store.db import make_engine, make_session_factory
from scripts.reindex import StepCounts, index_name, index_sources
from scripts.settings_flags import SettingsRefused, add_settings_flags, required_rpc_url, settings_from_flags


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_flags(parser)
    parser.add_argument("--name", help="the indexer's checkpoint name (default: the service's, chain id:address)")
    parser.add_argument(
        "--repair", action="store_true", help="repair the services' records a reorg left stale, then verify again"
    )
    args = parser.parse_args(argv)
    logs.configure(level=logging.WARNING)  # problems only: the script prints its own results
    try:
        settings = settings_from_flags(args)
    except SettingsRefused as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        differences = _differences(settings, args.name)
        if differences and args.repair:
            for difference in differences:
                print(f"before repair: {difference}")
            for repaired in _repair(settings):
                print(f"repaired: {repaired}")
            differences = _differences(settings, args.name)
    except LedgerError as exc:
        print(f"verification failed: {exc}", file=sys.stderr)
        return 2
    for difference in differences:
        print(difference)
    if differences:
        print(f"{len(differences)} difference(s) between the index and the chain", file=sys.stderr)
        return 1
    print("the index equals the chain")
    return 0


def _differences(settings: Settings, name: str | None) -> list[Difference]:
    deployment = Deployment.load(settings.deployment_file)
    engine = make_engine(settings.database_url)
    addresses, abi = index_sources(deployment)
    try:
        with JsonRpcLogSource(required_rpc_url(settings)) as source:
            return verify(
                source,
                make_session_factory(engine, read_only=True),
                name=name or index_name(deployment),
                addresses=addresses,
                abi=abi,
                start_block=deployment.start_block,
                # The chain is read up to the index's checkpoint, the head as the steps see it.
                on_step=StepCounts("reading the chain", lambda head: head),
            )
    finally:
        engine.dispose()


def _repair(settings: Settings) -> list[str]:
    """Every record checked, not only the recent blocks': a repair on demand may come late."""
    context = LedgerContext.open(settings)
    try:
        reconciler = Reconciler(context, MeteringService(context), SettlementService(context))
        return [str(repaired) for repaired in reconciler.reconcile(-1).repaired]
    finally:
        context.close()


if __name__ == "__main__":
    sys.exit(main())
