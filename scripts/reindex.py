"""Rebuilds the index from the chain alone, from the contracts' deployment block.

Indexes the events of TradeLedger, MeterData and Settlement into a fresh or an existing database
(migrated first) through the service's indexer, under the service's checkpoint name, so the
result is the index the service itself would build. It is resumable: every step commits its rows
with the checkpoint, so a run that is killed continues from its checkpoint when started again.
Into empty tables (a fresh database, or `--reset`) the rows are loaded without the tables'
secondary indexes, which are built once at the end (ledger/indexer/bulk_load.py); a run killed
before that leaves them to the next migration, which this script and the service run first.

`--reset` first deletes, in one transaction, what the chain alone determines, and only that:

- cleared: `trades`, `trade_events`, `participants`, `participant_events` (TradeLedger),
  `chain_batches` (reading and price batch commitments and supersessions), `chain_runs`
  (settlement run commitments and supersessions), `chain_disputes` (disputes opened and
  resolved), `indexed_blocks` and this indexer's checkpoints;
- kept: the OFF-CHAIN content whose Merkle roots are on chain and the services' own records,
  which no chain can give back: meter readings and reference prices with their batches
  (`reading_batches`, `meter_readings`, `price_batches`, `reference_prices`), settlement runs as
  computed (`settlement_runs`, `statement_lines`, `positions`, `run_trades`,
  `run_reading_batches`), disputes with their reasons and signatures (`disputes`), and the
  relayer's outbox (`submissions`). `python -m scripts.verify_index` then checks that this
  content still hashes to the roots the rebuilt index holds.

Shows its progress on stderr (a bar on a terminal, a line a second in a log: blocks, events,
events/s, time left) and prints the final events/s.

    python -m scripts.reindex --rpc-url http://127.0.0.1:8545 --database-url sqlite:///var/reindex.db
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from ledger import logs
from ledger.chain.compiler import compile_contracts
from ledger.chain.deployment import Deployment
from ledger.chain.log_source import JsonRpcLogSource
from ledger.errors import LedgerError
from ledger.indexer.decoder import AbiEntry
from ledger.indexer.indexer import Indexer, StepResult, head_checkpoint_name, indexed_sources
from ledger.store.chain_models import ChainBatch, ChainDispute, ChainRun
from ledger.store.db import make_engine, make_session_factory, migrate
from ledger.store.models import (
    IndexedBlock,
    IndexerCheckpoint,
    Participant,
    ParticipantEvent,
    Trade,
    TradeEvent,
)
from scripts.progress import Progress
from scripts.settings_flags import (
    INDEX_FLAGS,
    SettingsRefused,
    add_settings_flags,
    required_rpc_url,
    settings_from_flags,
)

DEFAULT_BLOCKS_PER_STEP = 200


@dataclass(frozen=True)
class ReindexFigures:
    blocks: int
    events: int
    seconds: float
    last_block: int

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def index_name(deployment: Deployment) -> str:
    """The checkpoint name the service's indexer uses (ledger/services/runtime.py)."""
    return f"{deployment.chain_id}:{deployment.contracts['TradeLedger'].address}"


def index_sources(deployment: Deployment) -> tuple[list[str], list[AbiEntry]]:
    """The addresses and the ABI the service's indexer follows (ledger/services/runtime.py)."""
    return indexed_sources(
        {contract_name: contract.address for contract_name, contract in deployment.contracts.items()},
        {contract_name: artifact.abi for contract_name, artifact in compile_contracts().items()},
    )


def reset_index(sessions: sessionmaker[Session], name: str) -> None:
    """Deletes what the chain alone determines (see the module docstring), in one transaction."""
    with sessions.begin() as session:
        for model in (
            TradeEvent,
            ParticipantEvent,
            Trade,
            Participant,
            ChainDispute,
            ChainRun,
            ChainBatch,
            IndexedBlock,
        ):
            session.execute(delete(model))
        session.execute(delete(IndexerCheckpoint).where(IndexerCheckpoint.name.in_([name, head_checkpoint_name(name)])))


class StepCounts:
    """Counts the blocks and events of an indexer's steps and shows them on a Progress (a bar on
    stderr by default) against the blocks there were to index, a total that grows with the chain.
    Called with each StepResult; returns True once the steps have caught up with the chain."""

    def __init__(self, label: str, target_block: Callable[[int], int], progress: Progress | None = None) -> None:
        self._label, self._target_block, self._progress = label, target_block, progress
        self._started = time.monotonic()
        self._first: int | None = None
        self.blocks = self.events = 0
        self.last_block = -1

    def __call__(self, result: StepResult) -> bool:
        if self._first is None:
            self._first = result.from_block
        self.blocks += result.to_block - result.from_block + 1
        self.events += result.events
        self.last_block = max(self.last_block, result.to_block)
        target = self._target_block(result.head)
        total = target - self._first + 1
        if self._progress is None:
            self._progress = Progress(self._label, total, unit="blocks")
        elapsed = time.monotonic() - self._started
        note = f"{self.events:,} events" + (f", {self.events / elapsed:,.0f} events/s" if elapsed > 0 else "")
        self._progress.update(self.last_block - self._first + 1, note, total=total)
        return self.last_block >= target

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._started


def reindex(indexer: Indexer, progress: Progress | None = None) -> ReindexFigures:
    """Indexes every final block (`Indexer.catch_up`, pipelined), then steps until caught up with
    the blocks that became final meanwhile, showing the counts on `progress`."""
    counts = StepCounts("reindex", indexer.target_block, progress)
    indexer.catch_up(counts)
    while not counts(indexer.step()):
        pass
    return ReindexFigures(counts.blocks, counts.events, counts.seconds, counts.last_block)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_flags(parser, (*INDEX_FLAGS, "confirmations"))
    parser.add_argument("--blocks-per-step", type=int, default=DEFAULT_BLOCKS_PER_STEP)
    parser.add_argument("--reset", action="store_true", help="delete the existing index first")
    args = parser.parse_args(argv)
    logs.configure(level=logging.WARNING)  # problems only: the script prints its own results
    try:
        settings = settings_from_flags(args)
    except SettingsRefused as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        deployment = Deployment.load(settings.deployment_file)
        if deployment.chain_id != settings.chain_id:
            print(f"the deployment is on chain {deployment.chain_id}, not {settings.chain_id}", file=sys.stderr)
            return 2
        engine = make_engine(settings.database_url)
        migrate(engine)
        sessions = make_session_factory(engine)
        name = index_name(deployment)
        if args.reset:
            reset_index(sessions, name)
        addresses, abi = index_sources(deployment)
        with JsonRpcLogSource(required_rpc_url(settings)) as source:
            indexer = Indexer(
                source,
                sessions,
                addresses=addresses,
                abi=abi,
                start_block=deployment.start_block,
                confirmations=settings.confirmations,
                name=name,
                max_blocks_per_step=args.blocks_per_step,
            )
            figures = reindex(indexer)
        engine.dispose()
    except LedgerError as exc:
        print(f"reindex failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"indexed {figures.blocks:,} blocks, {figures.events:,} events in {figures.seconds:.1f} s: "
        f"{figures.events_per_second:,.0f} events/s (up to block {figures.last_block:,})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
