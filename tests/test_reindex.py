"""scripts/reindex.py: a rebuild from the chain alone, resumable, equal to what the chain says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from ledger.chain.log_source import JsonRpcLogSource
from ledger.errors import ChainError
from ledger.indexer.indexer import Indexer
from ledger.services.verification import verify
from ledger.store.models import IndexerCheckpoint, Trade
from scripts import reindex
from tests.support.market import Market
from tests.test_bulk_load import MODEL_INDEXES, secondary_indexes
from tests.test_indexer_chain import record_batch


def run_reindex(market: Market, database_url: str, tmp_path: Path, *extra: str) -> int:
    deployment_file = tmp_path / "deployment.json"
    market.deployment.save(deployment_file)
    return reindex.main(
        [
            "--rpc-url",
            market.rpc.url,
            "--chain-id",
            str(market.chain_id),
            "--deployment-file",
            str(deployment_file),
            "--database-url",
            database_url,
            "--confirmations",
            "1",
            "--blocks-per-step",
            "2",
            *extra,
        ]
    )


def differences(market: Market, sessions: sessionmaker[Session]) -> list[object]:
    return list(
        verify(
            JsonRpcLogSource(market.rpc.url),
            sessions,
            name=reindex.index_name(market.deployment),
            addresses=[market.address],
            abi=market.abi,
            start_block=market.deployment.start_block,
        )
    )


def trade_count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(Trade)) or 0)


def test_a_rebuild_equals_the_chain_and_resumes_from_its_checkpoint(
    anvil_market: Market,
    store_engine: Engine,
    store_session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    market, sessions = anvil_market, store_session_factory
    seller, buyer = market.participant(), market.participant()
    for _ in range(4):
        record_batch(market, [market.signed(seller, buyer) for _ in range(3)])

    # A run that dies half-way (the node fails on the range of the last batch) keeps what it committed.
    real_get_logs = JsonRpcLogSource.get_logs
    last_block = int(market.rpc.call("eth_blockNumber"), 16)

    def failing_get_logs(self: JsonRpcLogSource, addresses: list[str], from_block: int, to_block: int) -> object:
        if to_block >= last_block:
            raise ChainError("the node went away")
        return real_get_logs(self, addresses, from_block, to_block)

    monkeypatch.setattr(JsonRpcLogSource, "get_logs", failing_get_logs)
    assert run_reindex(market, database_url, tmp_path) == 1
    with sessions() as session:
        checkpoint = session.get(IndexerCheckpoint, reindex.index_name(market.deployment))
        assert checkpoint is not None
        interrupted_at = checkpoint.block_number
    indexed_before = trade_count(sessions)
    assert 0 < indexed_before < 12
    assert secondary_indexes(store_engine) == MODEL_INDEXES  # built again when the bulk load failed
    monkeypatch.setattr(JsonRpcLogSource, "get_logs", real_get_logs)
    capsys.readouterr()

    assert run_reindex(market, database_url, tmp_path) == 0
    printed = capsys.readouterr()
    assert "events/s" in printed.out
    # The progress ends on the blocks it had to index, all of them, the resumed run's only.
    (done, total, events) = re.findall(r"reindex: ([\d,]+)/([\d,]+) blocks, ([\d,]+) events", printed.err)[-1]
    assert done == total == str(last_block - interrupted_at)
    assert int(events) == 12 - indexed_before
    assert trade_count(sessions) == 12
    assert differences(market, sessions) == []
    assert secondary_indexes(store_engine) == MODEL_INDEXES
    with sessions() as session:
        checkpoint = session.get(IndexerCheckpoint, reindex.index_name(market.deployment))
        assert checkpoint is not None and checkpoint.block_number > interrupted_at

    # --reset rebuilds from nothing, into the same rows.
    assert run_reindex(market, database_url, tmp_path, "--reset") == 0
    assert trade_count(sessions) == 12
    assert differences(market, sessions) == []
    assert secondary_indexes(store_engine) == MODEL_INDEXES


def test_catch_up_is_for_final_mode_only(anvil_market: Market, store_session_factory: sessionmaker[Session]) -> None:
    indexer = Indexer(
        JsonRpcLogSource(anvil_market.rpc.url),
        store_session_factory,
        addresses=[anvil_market.address],
        abi=anvil_market.abi,
        start_block=anvil_market.deployment.start_block,
        confirmations=1,
        follow_head=True,
    )
    with pytest.raises(Exception, match="final blocks only"):
        indexer.catch_up()
