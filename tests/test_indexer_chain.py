"""The indexer against a real chain: what the index holds equals what the chain says."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from eth_account import Account
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from ledger.chain.log_source import JsonRpcLogSource
from ledger.domain.trade import SignedTrade
from ledger.indexer import indexer as indexer_module
from ledger.indexer.indexer import Indexer
from ledger.signing.trader import countersigned
from ledger.store import queries
from ledger.store.db import make_engine, make_session_factory, migrate
from tests.support.market import Market


def make_indexer(market: Market, sessions: sessionmaker[Session], confirmations: int = 1) -> Indexer:
    return Indexer(
        JsonRpcLogSource(market.rpc.url),
        sessions,
        addresses=[market.address],
        abi=market.abi,
        start_block=market.deployment.start_block,
        confirmations=confirmations,
    )


def catch_up(indexer: Indexer) -> None:
    while True:
        result = indexer.step()
        if result.to_block >= result.head - indexer._confirmations + 1:
            return


def record_batch(market: Market, trades: list[SignedTrade]) -> dict:
    ledger = market.ledger("recorder")
    tx = ledger.sign_record_trades(trades)
    ledger.sender.broadcast([tx])
    receipt = ledger.sender.wait([tx.hash])[tx.hash]
    return {log["topics"][1]: log for log in receipt.logs}


def test_index_matches_the_chain_for_trades_rejections_cancellations_and_amendments(
    anvil_market: Market, store_session_factory: sessionmaker[Session]
) -> None:
    market, sessions = anvil_market, store_session_factory
    seller, buyer = market.participant(), market.participant()
    stranger = Account.create()
    trades = [market.signed(seller, buyer) for _ in range(3)]
    rejected = countersigned(seller, stranger, market.domain, market.trade(seller, stranger))
    logs = record_batch(market, [*trades, rejected])
    recorder = market.ledger("recorder")

    cancelled_id = market.trade_id(trades[1].trade)
    market.cancel(seller, buyer, cancelled_id)
    amended_id = market.trade_id(trades[2].trade)
    amendment = market.signed(seller, buyer, replaces=amended_id, energy_per_interval_wh=1)
    recorder.record_trade(amendment)
    market.ledger("operator").suspend_participant(buyer.address)

    catch_up(make_indexer(market, sessions))

    with sessions() as session:
        for signed in trades:
            trade_id = market.trade_id(signed.trade)
            row = queries.get_trade(session, trade_id)
            log = logs[trade_id]
            assert (row.seller, row.buyer) == (signed.trade.seller, signed.trade.buyer)
            assert (row.delivery_start, row.delivery_end) == (signed.trade.delivery_start, signed.trade.delivery_end)
            assert row.energy_per_interval_wh == signed.trade.energy_per_interval_wh
            assert row.price_minor_per_mwh == signed.trade.price_minor_per_mwh
            assert int(row.nonce) == signed.trade.nonce
            assert (row.block_number, row.log_index) == (int(log["blockNumber"], 16), int(log["logIndex"], 16))
            assert (row.block_hash, row.transaction_hash) == (log["blockHash"], log["transactionHash"])
        assert queries.get_trade(session, market.trade_id(trades[0].trade)).status.value == "recorded"
        assert queries.get_trade(session, cancelled_id).status.value == "cancelled"
        old = queries.get_trade(session, amended_id)
        assert (old.status.value, old.replaced_by) == ("amended", market.trade_id(amendment.trade))
        new = queries.get_trade(session, market.trade_id(amendment.trade))
        assert (new.replaces, new.energy_per_interval_wh) == (amended_id, 1)
        assert queries.get_trade(session, market.trade_id(rejected.trade)) is None
        assert queries.get_participant(session, buyer.address).status.value == "suspended"
        assert queries.get_participant(session, seller.address).status.value == "active"
        events = [e.event.value for e in queries.get_trade(session, cancelled_id).events]
        assert events == ["recorded", "cancelled"]


def test_a_block_is_indexed_only_once_it_has_the_configured_confirmations(
    anvil_market: Market, store_session_factory: sessionmaker[Session]
) -> None:
    market, sessions = anvil_market, store_session_factory
    seller, buyer = market.participant(), market.participant()
    signed = market.signed(seller, buyer)
    market.ledger("recorder").record_trade(signed)
    indexer = make_indexer(market, sessions, confirmations=3)
    trade_id = market.trade_id(signed.trade)

    indexer.step()
    with sessions() as session:
        assert queries.get_trade(session, trade_id) is None

    market.rpc.call("anvil_mine", "0x2")
    indexer.step()
    with sessions() as session:
        assert queries.get_trade(session, trade_id) is not None


def test_reindexing_from_scratch_gives_the_same_rows(
    anvil_market: Market, store_session_factory: sessionmaker[Session]
) -> None:
    market, sessions = anvil_market, store_session_factory
    seller, buyer = market.participant(), market.participant()
    record_batch(market, [market.signed(seller, buyer) for _ in range(4)])
    first = make_indexer(market, sessions)
    catch_up(first)
    catch_up(make_indexer(market, sessions))  # a second process on the same checkpoint: no duplicates

    with sessions() as session:
        page = queries.list_trade_rows(session, participant=seller.address, limit=100)
    assert len(page.items) == 4


def test_the_running_indexer_refreshes_sqlite_planner_statistics_as_the_tables_grow(
    anvil_market: Market, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite only: PostgreSQL's autovacuum keeps its own statistics."""
    engine = make_engine(f"sqlite:///{tmp_path / 'statistics.db'}")
    migrate(engine)
    market, sessions = anvil_market, make_session_factory(engine)
    seller, buyer = market.participant(), market.participant()
    record_batch(market, [market.signed(seller, buyer) for _ in range(3)])

    def trades_counted() -> str | None:
        # sqlite_stat1: "rows, rows per key" of each index, as of the last ANALYZE.
        with sessions() as session:
            return session.scalar(text("SELECT stat FROM sqlite_stat1 WHERE idx = 'ix_trades_status'"))

    assert trades_counted() is None  # analysed when migrated, with no trade yet
    monkeypatch.setattr(indexer_module, "STATISTICS_SECONDS", 0.0)
    stop = threading.Event()
    running = threading.Thread(target=make_indexer(market, sessions).run, args=(stop,), kwargs={"poll_interval": 0.05})
    running.start()
    try:
        deadline = time.monotonic() + 10
        while trades_counted() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        running.join(timeout=10)
    assert (trades_counted() or "").split()[0] == "3"
    engine.dispose()
