"""The indexer following the head of a real chain through reorgs (anvil_reorg), on both databases.

A reorg within the confirmation depth is rolled back to the fork point and the new chain indexed:
the index then equals a fresh index of the new chain. A reorg deeper than the confirmations halts
with ReorgBeyondFinalityError and changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ledger.chain.log_source import JsonRpcLogSource
from ledger.errors import ConfigurationError
from ledger.indexer.indexer import (
    ChainReorganizedError,
    Indexer,
    ReorgBeyondFinalityError,
    final_block_number,
    head_checkpoint_name,
)
from ledger.store import queries
from ledger.store.db import make_engine, make_session_factory, migrate
from ledger.store.models import IndexedBlock, IndexerCheckpoint, Participant, ParticipantEvent, Trade, TradeEvent
from tests import test_indexer as fake
from tests.support.market import Market
from tests.test_indexer_chain import record_batch

INDEXED_MODELS = (Trade, TradeEvent, Participant, ParticipantEvent, IndexedBlock)


def following_indexer(market: Market, sessions: sessionmaker[Session], confirmations: int) -> Indexer:
    return Indexer(
        JsonRpcLogSource(market.rpc.url),
        sessions,
        addresses=[market.address],
        abi=market.abi,
        start_block=market.deployment.start_block,
        confirmations=confirmations,
        follow_head=True,
    )


def catch_up(indexer: Indexer) -> list[int]:
    """Steps until the head is indexed; returns the fork points of the reorgs rolled back."""
    forks = []
    while True:
        result = indexer.step()
        if result.rolled_back_to is not None:
            forks.append(result.rolled_back_to)
        if result.to_block >= result.head:
            return forks


def snapshot(sessions: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every indexed row, without surrogate ids, in a stable order."""
    tables: dict[str, list[tuple[Any, ...]]] = {}
    with sessions() as session:
        for model in INDEXED_MODELS:
            columns = [c for c in model.__table__.columns if c.name != "id"]
            rows = session.execute(select(*columns)).all()
            tables[model.__tablename__] = sorted((tuple(str(v) for v in row) for row in rows), key=repr)
    return tables


def fresh_index(market: Market, tmp_path: Path, confirmations: int) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    migrate(engine)
    sessions = make_session_factory(engine)
    catch_up(following_indexer(market, sessions, confirmations))
    return sessions


def head_checkpoint(sessions: sessionmaker[Session]) -> tuple[int, str]:
    with sessions() as session:
        row = session.get(IndexerCheckpoint, head_checkpoint_name("main"))
        assert row is not None
        return row.block_number, row.block_hash


def test_a_reorg_within_the_confirmations_is_rolled_back_and_reindexed(
    anvil_market: Market, store_session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    market, sessions = anvil_market, store_session_factory
    seller, buyer = market.participant(), market.participant()
    trades = [market.signed(seller, buyer) for _ in range(3)]
    record_batch(market, trades)
    indexer = following_indexer(market, sessions, confirmations=4)
    catch_up(indexer)

    recorder = market.ledger("recorder")
    cancelled_id = market.trade_id(trades[1].trade)
    market.cancel(seller, buyer, cancelled_id)
    amended_id = market.trade_id(trades[2].trade)
    amendment = market.signed(seller, buyer, replaces=amended_id, energy_per_interval_wh=1)
    recorder.record_trade(amendment)
    catch_up(indexer)
    with sessions() as session:
        assert queries.get_trade(session, cancelled_id).status.value == "cancelled"
        assert queries.get_trade(session, amended_id).status.value == "amended"
        new = queries.get_trade(session, market.trade_id(amendment.trade))
        final = final_block_number(session)
        assert final is not None and new.block_number > final  # indexed, and known to be unconfirmed

    # The last two blocks (the cancellation and the amendment) are replaced by one block that
    # suspends the buyer, and one empty block.
    operator = market.ledger("operator")
    suspension = operator.sender.sign(operator.address, operator.encode("suspendParticipant", [buyer.address]), 200_000)
    fork = market.rpc.call("eth_blockNumber")
    market.rpc.call("anvil_reorg", 2, [[suspension.raw, 0]])

    forks = catch_up(indexer)

    assert forks == [int(fork, 16) - 2]
    with sessions() as session:
        assert queries.get_trade(session, cancelled_id).status.value == "recorded"
        restored = queries.get_trade(session, amended_id)
        assert (restored.status.value, restored.replaced_by) == ("recorded", None)
        assert queries.get_trade(session, market.trade_id(amendment.trade)) is None
        assert [e.event.value for e in queries.get_trade(session, cancelled_id).events] == ["recorded"]
        assert queries.get_participant(session, buyer.address).status.value == "suspended"
    reference = fresh_index(market, tmp_path, confirmations=4)
    assert snapshot(sessions) == snapshot(reference)
    assert head_checkpoint(sessions) == head_checkpoint(reference)


def test_a_reorg_deeper_than_the_confirmations_halts_and_changes_nothing(
    anvil_market: Market, store_session_factory: sessionmaker[Session]
) -> None:
    market, sessions = anvil_market, store_session_factory
    seller, buyer = market.participant(), market.participant()
    record_batch(market, [market.signed(seller, buyer) for _ in range(2)])
    market.rpc.call("anvil_mine", "0x3")
    indexer = following_indexer(market, sessions, confirmations=2)
    catch_up(indexer)
    before = snapshot(sessions), head_checkpoint(sessions)

    market.rpc.call("anvil_reorg", 5, [])  # replaces the batch's block, which had 4 confirmations

    with pytest.raises(ReorgBeyondFinalityError):
        indexer.step()
    assert (snapshot(sessions), head_checkpoint(sessions)) == before


def test_a_reorg_of_unconfirmed_empty_blocks_onto_a_longer_chain(
    anvil_market: Market, store_session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    market, sessions = anvil_market, store_session_factory
    seller, buyer = market.participant(), market.participant()
    record_batch(market, [market.signed(seller, buyer) for _ in range(2)])
    market.rpc.call("anvil_mine", "0x2")
    indexer = following_indexer(market, sessions, confirmations=3)
    catch_up(indexer)

    # Two empty blocks are replaced by a block registering a participant and an empty one (a
    # transaction, so the new blocks cannot hash like the old ones), and the new chain is longer.
    operator = market.ledger("operator")
    registration = operator.sender.sign(
        operator.address,
        operator.encode("registerParticipant", [Account.create().address, 0, b"\x01" * 32]),
        200_000,
    )
    market.rpc.call("anvil_reorg", 2, [[registration.raw, 0]])
    market.rpc.call("anvil_mine", "0x1")
    assert len(catch_up(indexer)) == 1

    reference = fresh_index(market, tmp_path, confirmations=3)
    assert snapshot(sessions) == snapshot(reference)
    assert head_checkpoint(sessions) == head_checkpoint(reference)


def test_a_chain_that_got_shorter_is_rolled_back_to_its_head(
    anvil_market: Market, store_session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    market, sessions = anvil_market, store_session_factory
    seller, buyer = market.participant(), market.participant()
    record_batch(market, [market.signed(seller, buyer)])
    orphaned = market.signed(seller, buyer)
    record_batch(market, [orphaned])
    indexer = following_indexer(market, sessions, confirmations=3)
    catch_up(indexer)
    head = int(market.rpc.call("eth_blockNumber"), 16)

    market.rpc.call("anvil_rollback", 1)  # the last block (the second batch) is gone, no new one yet

    assert catch_up(indexer) == [head - 1]
    with sessions() as session:
        assert queries.get_trade(session, market.trade_id(orphaned.trade)) is None
    reference = fresh_index(market, tmp_path, confirmations=3)
    assert snapshot(sessions) == snapshot(reference)
    assert head_checkpoint(sessions) == head_checkpoint(reference)


# --- the same against an in-memory chain (tests/test_indexer.py's FakeChain) ----------------------


@pytest.fixture(scope="module")
def abi() -> list[dict[str, Any]]:
    return fake.contract_abi("TradeLedger")


def fake_snapshot(sessions: sessionmaker[Session]) -> tuple[dict[str, list[tuple[Any, ...]]], Any, Any]:
    """The rows (without surrogate ids: PostgreSQL does not reuse them) and both checkpoints."""
    return snapshot(sessions), fake.checkpoint(sessions), fake.checkpoint(sessions, head_checkpoint_name("main"))


def fresh_fake_index(chain: fake.FakeChain, abi: list[dict[str, Any]], tmp_path: Path, **options: Any) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path / 'fresh-fake.db'}")
    migrate(engine)
    sessions = make_session_factory(engine)
    indexer = fake.make_indexer(chain, sessions, abi, follow_head=True, **options)
    while (result := indexer.step()).to_block < result.head:
        pass
    return sessions


def test_fake_chain_reorg_with_other_content_restores_statuses_from_the_remaining_events(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]], tmp_path: Path
) -> None:
    chain = fake.market(fake.FakeChain())  # block 4 amends trade 2, block 5 suspends BOB and CAROL
    indexer = fake.make_indexer(chain, store_session_factory, abi, confirmations=3, follow_head=True)
    indexer.step()
    with store_session_factory() as session:
        assert final_block_number(session) == 3  # head 5, 3 confirmations: blocks 4 and 5 are unconfirmed

    chain.transactions[4:] = [[(fake.reinstated(fake.CAROL),)], []]
    chain.reorg(from_block=4)
    result = indexer.step()

    assert result.rolled_back_to == 3
    with store_session_factory() as session:
        assert queries.get_participant(session, fake.BOB).status.value == "active"
        assert queries.get_participant(session, fake.CAROL).status.value == "active"
    assert fake_snapshot(store_session_factory) == fake_snapshot(
        fresh_fake_index(chain, abi, tmp_path, confirmations=3)
    )


def test_fake_chain_reorg_undoing_a_cancellation_and_an_amendment(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]], tmp_path: Path
) -> None:
    chain = fake.market(fake.FakeChain())
    indexer = fake.make_indexer(chain, store_session_factory, abi, confirmations=5, follow_head=True)
    indexer.step()

    chain.transactions[3:5] = [[], []]  # neither the cancellation of 1 nor the amendment of 2 happened
    chain.reorg(from_block=3)
    indexer.step()

    with store_session_factory() as session:
        one, two = queries.get_trade(session, fake.tid(1)), queries.get_trade(session, fake.tid(2))
        assert (one.status.value, two.status.value, two.replaced_by) == ("recorded", "recorded", None)
        assert queries.get_trade(session, fake.tid(3)) is None
    assert fake_snapshot(store_session_factory) == fake_snapshot(
        fresh_fake_index(chain, abi, tmp_path, confirmations=5)
    )


def test_fake_chain_reorg_below_the_final_checkpoint_halts(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = fake.market(fake.FakeChain())
    indexer = fake.make_indexer(chain, store_session_factory, abi, confirmations=2, follow_head=True)
    indexer.step()  # final up to block 4
    before = fake_snapshot(store_session_factory)

    chain.reorg(from_block=4)

    with pytest.raises(ReorgBeyondFinalityError) as halted:
        indexer.step()
    assert halted.value.block_number == 4
    assert fake_snapshot(store_session_factory) == before


def test_a_chain_that_changes_during_a_step_is_retried_not_halted(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = fake.market(fake.FakeChain())
    indexer = fake.make_indexer(chain, store_session_factory, abi, confirmations=3, follow_head=True)
    indexer.step()
    chain.mine(fake.suspended(fake.ALICE))
    real_get_logs = chain.get_logs

    def reorg_while_reading(addresses: Any, from_block: int, to_block: int) -> Any:
        chain.reorg(from_block=5)  # the headers read a moment ago are stale now
        return real_get_logs(addresses, from_block, to_block)

    chain.get_logs = reorg_while_reading  # type: ignore[method-assign]
    with pytest.raises(ChainReorganizedError) as moved:
        indexer.step()
    assert moved.value.retryable
    chain.get_logs = real_get_logs  # type: ignore[method-assign]
    assert indexer.step().rolled_back_to == 4


def test_follow_head_needs_the_window_to_cover_the_confirmations(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    with pytest.raises(ConfigurationError):
        fake.make_indexer(fake.FakeChain(), store_session_factory, abi, confirmations=256, follow_head=True)
