"""Benchmark: rebuilding the index from the chain (scripts/reindex.py) into a fresh SQLite file.

Starts its own automining anvil node, deploys, registers participants, records `--trades` signed
trades through the ledger layer (`recordTrades` batches, several transactions in flight), then
rebuilds the index from the deployment block with the reindex loop and prints events/s (each
recorded trade is one TradeRecorded event; registrations count too). Then verifies the rebuilt
index against the chain as scripts/verify_index.py does (the chain read into a scratch index,
compared row by row) and prints its events/s too.

    python -m scripts.bench_reindex --trades 50000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from ledger.chain.log_source import JsonRpcLogSource
from ledger.chain.node import LocalNode
from ledger.chain.rpc import JsonRpc
from ledger.indexer.indexer import Indexer
from ledger.services.verification import verify
from ledger.store.db import make_engine, make_session_factory, migrate
from ledger.store.models import Trade
from scripts.bench_env import print_header
from scripts.bench_record import CHAIN_ID, deploy_market, make_trades, record_batches
from scripts.reindex import index_name, index_sources, reindex


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=50_000)
    parser.add_argument("--participants", type=int, default=50)
    # A recordTrades transaction of 200 trades stays under the node's 128 KiB transaction size limit.
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=8)
    # ~400 events a block here: 10 blocks make ranges of ~4,000 events, enough of them to pipeline.
    parser.add_argument("--blocks-per-step", type=int, default=10)
    args = parser.parse_args(argv)
    print_header("scripts.bench_reindex", argv)

    with LocalNode("anvil", chain_id=CHAIN_ID) as node, tempfile.TemporaryDirectory() as workdir:
        rpc = JsonRpc(node.rpc_url)
        deployment, recorder, accounts, now = deploy_market(rpc, args.participants)
        trades = make_trades(recorder.domain, accounts, args.trades, now)
        recorded = record_batches(recorder, trades, args.batch_size, args.in_flight)
        print(f"  recorded {recorded.trades:,} trades at {recorded.rate:,.0f} trades/s", file=sys.stderr)

        engine = make_engine(f"sqlite:///{Path(workdir) / 'reindex.db'}")
        migrate(engine)
        sessions = make_session_factory(engine)
        with JsonRpcLogSource(node.rpc_url) as source:
            # The service's indexer follows TradeLedger, MeterData and Settlement together.
            addresses, abi = index_sources(deployment)
            indexer = Indexer(
                source,
                sessions,
                addresses=addresses,
                abi=abi,
                start_block=deployment.start_block,
                confirmations=1,
                name=index_name(deployment),
                max_blocks_per_step=args.blocks_per_step,
            )
            started = time.monotonic()
            figures = reindex(indexer)
            seconds = time.monotonic() - started
            started = time.monotonic()
            differences = verify(
                source,
                sessions,
                name=index_name(deployment),
                addresses=addresses,
                abi=abi,
                start_block=deployment.start_block,
            )
            verify_seconds = time.monotonic() - started
        with sessions() as session:
            indexed_trades = session.scalar(select(func.count()).select_from(Trade))
        engine.dispose()
        rpc.close()

    assert indexed_trades == args.trades, (indexed_trades, args.trades)
    assert differences == [], differences[:5]
    print()
    print(f"reindex into SQLite: {figures.blocks:,} blocks, {figures.events:,} events in {seconds:.2f} s")
    print(f"{figures.events / seconds:,.0f} events/s ({indexed_trades:,} trades indexed)")
    print(f"verify against the chain: {verify_seconds:.2f} s, {figures.events / verify_seconds:,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
