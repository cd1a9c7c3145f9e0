"""A rebuild into empty tables loads them without their secondary indexes, writes the rows `step`
writes, and never leaves the database without its indexes: not when it ends, not when it fails,
not when it is killed (the next `migrate`, which every process runs first, creates them)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.orm import Session, sessionmaker

from ledger.errors import ChainError
from ledger.indexer.bulk_load import BULK_LOADED, bulk_load
from ledger.indexer.indexer import _insert_new, _project
from ledger.store.db import migrate
from ledger.store.models import IndexedBlock, IndexerCheckpoint, Participant, ParticipantEvent, Trade, TradeEvent
from scripts.reindex import reset_index
from tests.test_indexer import CONTRACT, FakeChain, contract_abi, make_indexer, market


@pytest.fixture(scope="module")
def abi() -> list[dict[str, Any]]:
    return contract_abi("TradeLedger")


MODEL_INDEXES = {str(index.name) for table in BULK_LOADED for index in table.indexes}


def secondary_indexes(engine: Engine) -> set[str]:
    inspector = inspect(engine)
    return {str(index["name"]) for table in BULK_LOADED for index in inspector.get_indexes(table.name)} & (
        MODEL_INDEXES
    )


def rows(sessions: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the indexer writes, but the event tables' row ids (PostgreSQL sequences do not
    start again after a reset)."""
    with sessions() as session:
        return {
            model.__tablename__: sorted(
                (
                    tuple(row)
                    for row in session.execute(select(*(c for c in model.__table__.columns if c.name != "id")))
                ),
                key=repr,
            )
            for model in (Trade, TradeEvent, Participant, ParticipantEvent, IndexedBlock, IndexerCheckpoint)
        }


def test_a_load_into_empty_tables_builds_their_indexes_at_its_end(
    store_engine: Engine, store_session_factory: sessionmaker[Session]
) -> None:
    assert MODEL_INDEXES and secondary_indexes(store_engine) == MODEL_INDEXES
    with bulk_load(store_session_factory) as bulk:
        assert bulk
        assert secondary_indexes(store_engine) == set()
    assert secondary_indexes(store_engine) == MODEL_INDEXES


def test_a_failed_load_builds_them_too(store_engine: Engine, store_session_factory: sessionmaker[Session]) -> None:
    with pytest.raises(ChainError), bulk_load(store_session_factory):
        raise ChainError("the node went away")
    assert secondary_indexes(store_engine) == MODEL_INDEXES


def test_a_killed_load_leaves_them_to_the_next_migrate(
    store_engine: Engine, store_session_factory: sessionmaker[Session]
) -> None:
    load = bulk_load(store_session_factory)
    load.__enter__()  # the process dies inside the block: no __exit__
    assert secondary_indexes(store_engine) == set()
    migrate(store_engine)
    assert secondary_indexes(store_engine) == MODEL_INDEXES
    del load


def test_tables_with_rows_keep_their_indexes(
    store_engine: Engine, store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    make_indexer(market(FakeChain()), store_session_factory, abi).step()
    with bulk_load(store_session_factory) as bulk:
        assert not bulk
        assert secondary_indexes(store_engine) == MODEL_INDEXES


def test_catch_up_into_empty_tables_writes_the_rows_step_writes(
    store_engine: Engine, store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = market(FakeChain())
    chain.mine_empty(3)
    stepping = make_indexer(chain, store_session_factory, abi, max_blocks_per_step=2)
    while stepping.step().to_block < chain.head_block_number():
        pass
    stepped = rows(store_session_factory)
    assert all(stepped.values())

    reset_index(store_session_factory, "main")
    loaded: list[bool] = []

    def during_the_load(_result: object) -> None:
        loaded.append(secondary_indexes(store_engine) == set())

    make_indexer(chain, store_session_factory, abi, max_blocks_per_step=2).catch_up(during_the_load)
    assert loaded and all(loaded)
    assert rows(store_session_factory) == stepped
    assert secondary_indexes(store_engine) == MODEL_INDEXES


# SQLite only: its inserts go through the driver's executemany; PostgreSQL's through SQLAlchemy.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_driver_inserts_store_what_sqlalchemy_stores(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = market(FakeChain())
    indexer = make_indexer(chain, store_session_factory, abi)
    blocks = {header.number: header for header in chain.headers}
    logs = chain.get_logs([CONTRACT], 0, chain.head_block_number())
    projected = _project(indexer._decode(logs, blocks), blocks, indexer._decoder)
    tables = (
        (Trade, projected.trades),
        (TradeEvent, projected.trade_events),
        (Participant, projected.participants),
        (ParticipantEvent, projected.participant_events),
    )

    def through_sqlalchemy(session: Session, model: Any, table_rows: list[dict[str, Any]]) -> None:
        session.execute(sqlite.insert(model.__table__).on_conflict_do_nothing(), table_rows)

    stored = []
    for insert in (_insert_new, through_sqlalchemy):
        with store_session_factory.begin() as session:
            for model, table_rows in tables:
                insert(session, model, table_rows)
                insert(session, model, table_rows)  # and again: every row is skipped
        stored.append(rows(store_session_factory))
        reset_index(store_session_factory, "main")
    assert all(stored[0][model.__tablename__] for model, _ in tables)
    assert stored[0] == stored[1]
