"""scripts/verify_index.py and ledger/services/verification.py: an index checked against the chain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from ledger.chain.log_source import JsonRpcLogSource
from ledger.indexer.indexer import Indexer
from ledger.services.access import OPERATOR, AccessLog, AccessRecord
from ledger.services.verification import Difference, DifferenceKind, compare
from ledger.store.access_models import AccessLogEntry
from ledger.store.models import (
    IndexerCheckpoint,
    Participant,
    ParticipantEvent,
    Trade,
    TradeEvent,
    TradeEventKind,
    TradeStatus,
)
from scripts import verify_index
from scripts.reindex import index_name
from tests.support.market import Market
from tests.test_indexer_chain import record_batch

FAKE_TRADE_ID = "0x" + "ab" * 32


def indexed_market(market: Market, sessions: sessionmaker[Session]) -> list[str]:
    seller, buyer = market.participant(), market.participant()
    trades = [market.signed(seller, buyer) for _ in range(3)]
    record_batch(market, trades)
    market.ledger("operator").suspend_participant(buyer.address)
    indexer = Indexer(
        JsonRpcLogSource(market.rpc.url),
        sessions,
        addresses=[market.address],
        abi=market.abi,
        start_block=market.deployment.start_block,
        confirmations=1,
        name=index_name(market.deployment),
    )
    while (result := indexer.step()).to_block < result.head:
        pass
    return [market.trade_id(signed.trade) for signed in trades]


def run_verify(
    market: Market, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """(exit status, stdout, stderr)."""
    deployment_file = tmp_path / "deployment.json"
    market.deployment.save(deployment_file)
    status = verify_index.main(
        [
            "--rpc-url",
            market.rpc.url,
            "--chain-id",
            str(market.chain_id),
            "--deployment-file",
            str(deployment_file),
            "--database-url",
            database_url,
        ]
    )
    printed = capsys.readouterr()
    return status, printed.out, printed.err


def test_an_untampered_index_verifies_clean(
    anvil_market: Market,
    store_session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    indexed_market(anvil_market, store_session_factory)
    with store_session_factory() as session:
        checkpoint = session.get(IndexerCheckpoint, index_name(anvil_market.deployment))
        assert checkpoint is not None
    blocks = checkpoint.block_number - anvil_market.deployment.start_block + 1

    status, out, err = run_verify(anvil_market, database_url, tmp_path, capsys)

    assert (status, out.strip()) == (0, "the index equals the chain")
    # The chain was read up to the index's checkpoint, with its progress shown.
    assert f"reading the chain: {blocks:,}/{blocks:,} blocks, " in err


def test_every_tampering_is_listed(
    anvil_market: Market,
    store_session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    market, sessions = anvil_market, store_session_factory
    trade_ids = indexed_market(market, sessions)
    with sessions.begin() as session:
        session.execute(update(Trade).where(Trade.trade_id == trade_ids[0]).values(energy_per_interval_wh=1))
        deleted = session.execute(
            select(TradeEvent.block_number, TradeEvent.log_index).where(TradeEvent.trade_id == trade_ids[1])
        ).one()
        session.execute(delete(TradeEvent).where(TradeEvent.trade_id == trade_ids[1]))
        real = session.get(Trade, trade_ids[2])
        assert real is not None
        session.add(
            Trade(
                trade_id=FAKE_TRADE_ID,
                seller=real.seller,
                buyer=real.buyer,
                delivery_start=real.delivery_start,
                delivery_end=real.delivery_end,
                energy_per_interval_wh=5,
                price_minor_per_mwh=5,
                nonce="1",
                deadline="1",
                replaces=None,
                status=TradeStatus.RECORDED,
                replaced_by=None,
                recorded_at=real.recorded_at,
                block_number=real.block_number,
                block_hash=real.block_hash,
                transaction_hash=real.transaction_hash,
                transaction_index=real.transaction_index,
                log_index=real.log_index + 100,
            )
        )
        suspension = session.scalars(select(ParticipantEvent).where(ParticipantEvent.event == "suspended")).one()
        chain_hash = suspension.block_hash
        suspension.block_hash = "0x" + "cd" * 32
        suspension_key = (suspension.block_number, suspension.log_index)

    status, out, _ = run_verify(market, database_url, tmp_path, capsys)

    assert status == 1
    lines = out.strip().splitlines()
    assert f"field: trades {trade_ids[0]} energy_per_interval_wh: chain 250000, index 1" in lines
    assert f"missing: trade_events {deleted[0]}/{deleted[1]} is on chain but not in the index" in lines
    assert f"extra: trades {FAKE_TRADE_ID} is in the index but not on chain" in lines
    assert (
        f"provenance: participant_events {suspension_key[0]}/{suspension_key[1]} block_hash: "
        f"chain {chain_hash!r}, index {'0x' + 'cd' * 32!r}"
    ) in lines
    assert len(lines) == 4


def test_compare_reports_missing_extra_field_and_provenance_differences() -> None:
    row = {"trade_id": "t", "energy_per_interval_wh": 10, "status": TradeStatus.RECORDED, "block_hash": "0x1"}
    event = {"event": TradeEventKind.RECORDED, "block_number": 7, "log_index": 0}
    chain = {"trades": {("t",): row}, "trade_events": {(7, 0): event}, "participants": {}, "participant_events": {}}
    index = {
        "trades": {("t",): row | {"energy_per_interval_wh": 11, "block_hash": "0x2"}, ("u",): row},
        "trade_events": {},
    }

    assert compare(chain, index) == [
        Difference(DifferenceKind.PROVENANCE, "trades", ("t",), "block_hash", "0x1", "0x2"),
        Difference(DifferenceKind.FIELD, "trades", ("t",), "energy_per_interval_wh", 10, 11),
        Difference(DifferenceKind.EXTRA, "trades", ("u",)),
        Difference(DifferenceKind.MISSING, "trade_events", (7, 0)),
    ]
    assert compare(chain, chain) == []


def test_participants_table_is_compared_too(
    anvil_market: Market,
    store_session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    indexed_market(anvil_market, store_session_factory)
    with store_session_factory.begin() as session:
        session.execute(update(Participant).values(status="active"))

    status, out, _ = run_verify(anvil_market, database_url, tmp_path, capsys)

    assert status == 1
    assert "participants" in out and "status: chain <ParticipantStatus.SUSPENDED" in out


def test_a_rewritten_access_log_entry_is_reported(
    anvil_market: Market,
    store_engine: Engine,
    store_session_factory: sessionmaker[Session],
    database_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    indexed_market(anvil_market, store_session_factory)
    log = AccessLog(store_engine)
    try:
        for index in range(5):
            at = datetime(2026, 12, 6, tzinfo=UTC) + timedelta(seconds=index)
            log.append(AccessRecord(OPERATOR, "GET", f"/trades/{index}", "", 200, "127.0.0.1", at)).result(timeout=30)
    finally:
        log.close()
    assert run_verify(anvil_market, database_url, tmp_path, capsys)[0] == 0

    with store_engine.begin() as connection:
        ids = connection.execute(select(AccessLogEntry.id).order_by(AccessLogEntry.id)).scalars().all()
        # Somebody with the database's owner rights: the append-only triggers go first.
        if connection.dialect.name == "postgresql":
            connection.execute(text("ALTER TABLE access_log DISABLE TRIGGER access_log_no_change"))
        else:
            connection.execute(text("DROP TRIGGER access_log_no_update"))
            connection.execute(text("DROP TRIGGER access_log_no_delete"))
        connection.execute(update(AccessLogEntry).where(AccessLogEntry.id == ids[2]).values(status=404))

    status, out, _ = run_verify(anvil_market, database_url, tmp_path, capsys)
    assert status == 1
    assert (
        out.strip()
        .splitlines()[0]
        .startswith(f"tampered: access_log {ids[2]} hash: not the hash of its fields (the entry was changed)")
    )

    with store_engine.begin() as connection:  # the fields put back, the entry removed instead
        connection.execute(update(AccessLogEntry).where(AccessLogEntry.id == ids[2]).values(status=200))
        connection.execute(delete(AccessLogEntry).where(AccessLogEntry.id == ids[1]))
    status, out, _ = run_verify(anvil_market, database_url, tmp_path, capsys)
    assert status == 1
    assert f"tampered: access_log {ids[2]} prev_hash: not the hash of the entry before it" in out
