"""The store: migrations match the models, the relayer outbox, and the read-side queries."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from eth_utils import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import CheckConstraint, Engine, MetaData, String, delete, inspect, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ledger.auth import access_chain
from ledger.auth.scopes import PrincipalKind
from ledger.domain.trade import ParticipantKind
from ledger.errors import ConflictError, NotFoundError, ValidationError
from ledger.services.verification import access_log_differences
from ledger.store import (
    access_models,
    chain_models,
    metering_models,
    outbox,
    queries,
    registration_models,
    sender_models,
    settlement_models,
)
from ledger.store.db import _alembic_config, current_revision, make_engine, make_session_factory, migrate
from ledger.store.models import (
    Base,
    Participant,
    ParticipantEvent,
    ParticipantEventKind,
    ParticipantStatus,
    Submission,
    SubmissionStatus,
    Trade,
    TradeEvent,
    TradeEventKind,
    TradeStatus,
)
from tests.store_fixtures import *  # noqa: F403

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b2" * 20
CAROL = "0x" + "c3" * 20


def trade_id(n: int) -> str:
    return f"0x{n:064x}"


def tx_hash(n: int) -> str:
    return f"0x{n + 0xF000:064x}"


# --- migrations ----------------------------------------------------------------------------------


HEAD_REVISION = "0012"


def schema_differences(engine: Engine, metadata: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))


def test_migrated_database_matches_the_models(store_engine: Engine) -> None:
    assert current_revision(store_engine) == HEAD_REVISION
    # Tables of other modules join Base.metadata when imported: the comparison must cover them.
    metering = (
        metering_models.ReadingBatchRow,
        metering_models.MeterReadingRow,
        metering_models.PriceBatchRow,
        metering_models.ReferencePriceRow,
    )
    assert {model.__tablename__ for model in metering} <= set(Base.metadata.tables)
    settlement = (
        settlement_models.SettlementRun,
        settlement_models.RunTrade,
        settlement_models.RunReadingBatch,
        settlement_models.StatementLine,
        settlement_models.Position,
        settlement_models.Dispute,
        settlement_models.RunPriceBatch,
        settlement_models.SettlementJob,
        settlement_models.ParameterChangeRow,
    )
    assert {model.__tablename__ for model in settlement} <= set(Base.metadata.tables)
    access = (access_models.ApiToken, access_models.SiweNonce, access_models.AccessLogEntry)
    assert {model.__tablename__ for model in access} <= set(Base.metadata.tables)
    chain = (chain_models.ChainBatch, chain_models.ChainRun, chain_models.ChainDispute)
    assert {model.__tablename__ for model in chain} <= set(Base.metadata.tables)
    assert registration_models.ParticipantRegistration.__tablename__ in Base.metadata.tables
    senders = (sender_models.SenderNonce, sender_models.WorkerProgress)
    assert {model.__tablename__ for model in senders} <= set(Base.metadata.tables)
    assert schema_differences(store_engine, Base.metadata) == []
    # compare_metadata ignores CHECK constraints: compare them by name.
    inspector = inspect(store_engine)
    for table in Base.metadata.sorted_tables:
        declared = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        assert {c["name"] for c in inspector.get_check_constraints(table.name)} == declared, table.name


def test_the_schema_comparison_sees_a_difference(store_engine: Engine) -> None:
    # Guards the test above against comparing nothing.
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    assert schema_differences(store_engine, changed) == []
    changed.tables["trades"].c.nonce.type = String(80)
    assert schema_differences(store_engine, changed) != []


def test_migrate_is_idempotent(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        migrate(database_url)
        migrate(engine)
        assert current_revision(engine) == HEAD_REVISION
    finally:
        engine.dispose()


def test_sqlite_engine_settings(tmp_path: Any) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'folder' / 'ledger.db'}")
    try:
        with engine.connect() as connection:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA busy_timeout").scalar() == 10_000
        assert (tmp_path / "new" / "folder" / "ledger.db").exists()
    finally:
        engine.dispose()


def test_a_rolled_back_transaction_undoes_its_savepoints(store_session_factory: sessionmaker[Session]) -> None:
    # sqlite3 on its own runs SAVEPOINTs outside the transaction; db.py makes them nest.
    with store_session_factory() as session:
        outbox.add_submission(session, trade_id(1), {})
        session.rollback()
    with store_session_factory() as session:
        assert outbox.get_submission_by_trade(session, trade_id(1)) is None


# --- outbox --------------------------------------------------------------------------------------


def test_add_submission_is_idempotent(store_session_factory: sessionmaker[Session]) -> None:
    with store_session_factory.begin() as session:
        first, created = outbox.add_submission(session, trade_id(1), {"trade": {"nonce": "1"}})
        assert created
    with store_session_factory.begin() as session:
        again, created = outbox.add_submission(session, trade_id(1).upper().replace("0X", "0x"), {"other": 1})
        assert not created
        assert again.id == first.id
        assert again.payload == {"trade": {"nonce": "1"}}
        assert again.status is SubmissionStatus.ACCEPTED
        assert again.attempts == 0
        assert again.created_at.tzinfo is UTC
        assert outbox.get_submission(session, first.id) is again


def test_add_submission_of_a_stored_trade_returns_it_and_keeps_the_transaction_usable(
    store_session_factory: sessionmaker[Session],
) -> None:
    with store_session_factory.begin() as session:
        winner, _ = outbox.add_submission(session, trade_id(1), {"by": "winner"})
    with store_session_factory.begin() as session:
        other, _ = outbox.add_submission(session, trade_id(2), {"by": "loser"})
        submission, created = outbox.add_submission(session, trade_id(1), {"by": "loser"})
        assert (submission.id, created) == (winner.id, False)
    # The conflict aborted nothing: the loser's other work in the transaction committed.
    with store_session_factory() as session:
        assert outbox.get_submission(session, other.id) is not None
        assert session.scalars(select(Submission.payload).where(Submission.trade_id == trade_id(1))).one() == {
            "by": "winner"
        }


def test_concurrent_adds_of_one_trade_create_one_submission(store_session_factory: sessionmaker[Session]) -> None:
    threads, barrier = 6, threading.Barrier(6)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []

    def add() -> None:
        try:
            barrier.wait()
            with store_session_factory.begin() as session:
                submission, created = outbox.add_submission(session, trade_id(7), {"n": 7})
                results.append((submission.id, created))
        except BaseException as exc:  # reported below: a thread's exception would be lost
            errors.append(exc)

    workers = [threading.Thread(target=add) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert sum(created for _, created in results) == 1
    assert len({submission_id for submission_id, _ in results}) == 1


def add_accepted(session_factory: sessionmaker[Session], count: int) -> list[str]:
    with session_factory.begin() as session:
        return [outbox.add_submission(session, trade_id(n), {"n": n})[0].id for n in range(1, count + 1)]


def test_claim_accepted_takes_the_oldest_first(store_session_factory: sessionmaker[Session]) -> None:
    ids = add_accepted(store_session_factory, 5)
    with store_session_factory.begin() as session:
        claimed = outbox.claim_accepted(session, 3)
        assert [s.id for s in claimed] == ids[:3]
        outbox.mark_pending(session, [s.id for s in claimed], tx_hash(1))
    with store_session_factory.begin() as session:
        assert [s.id for s in outbox.claim_accepted(session, 10)] == ids[3:]


# PostgreSQL only: SQLite serialises whole write transactions instead (BEGIN IMMEDIATE).
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_claim_accepted_skips_rows_another_relayer_holds(store_session_factory: sessionmaker[Session]) -> None:
    ids = add_accepted(store_session_factory, 4)
    with store_session_factory.begin() as first, store_session_factory.begin() as second:
        assert [s.id for s in outbox.claim_accepted(first, 2)] == ids[:2]
        assert [s.id for s in outbox.claim_accepted(second, 10)] == ids[2:]


def test_submission_lifecycle(store_session_factory: sessionmaker[Session]) -> None:
    ids = add_accepted(store_session_factory, 3)
    with store_session_factory.begin() as session:
        created_at = outbox.get_submission(session, ids[0]).created_at  # type: ignore[union-attr]
        outbox.mark_pending(session, ids, tx_hash(1))
    with store_session_factory.begin() as session:
        pending = outbox.list_pending(session)
        assert [s.id for s in pending] == ids
        assert {s.transaction_hash for s in pending} == {tx_hash(1)}
        assert all(s.updated_at > created_at for s in pending)
        outbox.mark_recorded(session, [trade_id(1), trade_id(2)], tx_hash(1), 42)
        outbox.mark_rejected(session, trade_id(3), "TradeLedgerGateClosed", "gate closed", tx_hash(1), 42)
    with store_session_factory.begin() as session:
        recorded = outbox.get_submission_by_trade(session, trade_id(1))
        rejected = outbox.get_submission_by_trade(session, trade_id(3))
        assert recorded is not None and rejected is not None
        assert (recorded.status, recorded.block_number, recorded.transaction_hash) == (
            SubmissionStatus.RECORDED,
            42,
            tx_hash(1),
        )
        assert (rejected.status, rejected.error_code, rejected.error_detail) == (
            SubmissionStatus.REJECTED,
            "TradeLedgerGateClosed",
            "gate closed",
        )
        assert outbox.list_pending(session) == []
        # The chain may be observed twice (receipt, then indexer): marking again is a no-op.
        outbox.mark_recorded(session, [trade_id(1)], tx_hash(1), 42)
        outbox.mark_rejected(session, trade_id(3), "TradeLedgerGateClosed", "gate closed", tx_hash(1), 42)


def test_requeue_sends_a_lost_transaction_again(store_session_factory: sessionmaker[Session]) -> None:
    [submission_id] = add_accepted(store_session_factory, 1)
    with store_session_factory.begin() as session:
        outbox.mark_pending(session, [submission_id], tx_hash(1))
        outbox.requeue(session, [submission_id])
    with store_session_factory.begin() as session:
        submission = outbox.get_submission(session, submission_id)
        assert submission is not None
        assert (submission.status, submission.attempts, submission.transaction_hash) == (
            SubmissionStatus.ACCEPTED,
            1,
            None,
        )
        # Rejected before it was ever sent (a pre-flight check).
        outbox.mark_rejected(session, trade_id(1), "TradeLedgerSignatureExpired", None)
        assert submission.status is SubmissionStatus.REJECTED


def test_transitions_apply_to_all_rows_or_none(store_session_factory: sessionmaker[Session]) -> None:
    ids = add_accepted(store_session_factory, 2)
    with store_session_factory.begin() as session:
        outbox.mark_pending(session, ids[:1], tx_hash(1))
    with store_session_factory() as session:
        with pytest.raises(ConflictError) as conflict:
            outbox.mark_pending(session, ids, tx_hash(2))  # ids[0] is pending already
        assert conflict.value.context["current"] == {ids[0]: "pending"}
        with pytest.raises(NotFoundError):
            outbox.mark_pending(session, [ids[1], "no-such-id"], tx_hash(2))
        with pytest.raises(ConflictError):
            outbox.requeue(session, ids[1:])  # accepted, not pending
        outbox.mark_recorded(session, [trade_id(1)], tx_hash(1), 5)
        with pytest.raises(ConflictError):
            outbox.mark_rejected(session, trade_id(1), "late", None)  # recorded is final
        session.commit()
    with store_session_factory() as session:
        statuses = [outbox.get_submission(session, i).status for i in ids]  # type: ignore[union-attr]
        assert statuses == [SubmissionStatus.RECORDED, SubmissionStatus.ACCEPTED]


def test_malformed_hashes_are_validation_errors(store_session_factory: sessionmaker[Session]) -> None:
    with store_session_factory() as session:
        with pytest.raises(ValidationError) as invalid:
            outbox.add_submission(session, "0x1234", {})
        assert invalid.value.field == "trade_id"
        with pytest.raises(ValidationError) as invalid:
            outbox.mark_pending(session, ["x"], "not a hash")
        assert invalid.value.field == "tx_hash"


# --- queries -------------------------------------------------------------------------------------


def origin(block: int, log: int) -> dict[str, Any]:
    return {
        "block_number": block,
        "block_hash": f"0x{block:064x}",
        "transaction_hash": tx_hash(block * 1000 + log),
        "transaction_index": 0,
        "log_index": log,
    }


def a_trade(n: int, seller: str, buyer: str, start: int, end: int, **changes: Any) -> Trade:
    values: dict[str, Any] = {
        "trade_id": trade_id(n),
        "seller": seller,
        "buyer": buyer,
        "delivery_start": start,
        "delivery_end": end,
        "energy_per_interval_wh": 1_000,
        "price_minor_per_mwh": 5_000,
        "nonce": str(2**200 + n),
        "deadline": str(2**64 - 1),
        "replaces": None,
        "status": TradeStatus.RECORDED,
        "replaced_by": None,
        "recorded_at": 1_700_000_000 + n,
        **origin(n, 0),
    }
    values.update(changes)
    return Trade(**values)


def addresses() -> tuple[str, str, str]:
    return to_checksum_address(ALICE), to_checksum_address(BOB), to_checksum_address(CAROL)


@pytest.fixture
def ledger(store_session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Trades 1..6 between Alice, Bob and Carol; delivery windows in units of 900 s."""
    alice, bob, carol = addresses()
    with store_session_factory.begin() as session:
        session.add_all(
            [
                a_trade(1, alice, bob, 0, 900),
                a_trade(2, bob, alice, 900, 2700),
                a_trade(3, alice, carol, 1800, 3600, status=TradeStatus.CANCELLED),
                a_trade(4, carol, bob, 3600, 4500, status=TradeStatus.AMENDED, replaced_by=trade_id(5)),
                a_trade(5, carol, bob, 3600, 5400, replaces=trade_id(4)),
                a_trade(6, bob, carol, 5400, 6300),
            ]
        )
        # Inserted out of chain order on purpose: reads must order them.
        session.add_all(
            [
                TradeEvent(
                    trade_id=trade_id(4), event=TradeEventKind.AMENDED, related_trade_id=trade_id(5), **origin(5, 1)
                ),
                TradeEvent(trade_id=trade_id(4), event=TradeEventKind.RECORDED, **origin(4, 0)),
                TradeEvent(
                    trade_id=trade_id(4),
                    event=TradeEventKind.REJECTED,
                    reason_selector="0x12345678",
                    reason_name="TradeLedgerDuplicateTrade",
                    reason_data="0x12345678" + "00" * 32,
                    **origin(4, 7),
                ),
            ]
        )
    return store_session_factory


def ids_of(trades: Sequence[Any]) -> list[int]:
    return [int(trade.trade_id, 16) for trade in trades]


def test_get_trade_with_its_events_in_chain_order(ledger: sessionmaker[Session]) -> None:
    with ledger() as session:
        trade = queries.get_trade(session, trade_id(4).upper().replace("0X", "0x"))
        assert trade is not None
        assert trade.nonce == str(2**200 + 4) and trade.deadline == str(2**64 - 1)
        assert [(e.block_number, e.log_index, e.event) for e in trade.events] == [
            (4, 0, TradeEventKind.RECORDED),
            (4, 7, TradeEventKind.REJECTED),
            (5, 1, TradeEventKind.AMENDED),
        ]
        assert queries.get_trade(session, trade_id(99)) is None
        with pytest.raises(ValidationError) as invalid:
            queries.get_trade(session, "0xabc")
        assert invalid.value.field == "trade_id"


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, [1, 2, 3, 4, 5, 6]),
        ({"participant": ALICE}, [1, 2, 3]),
        ({"participant": ALICE, "side": "seller"}, [1, 3]),
        ({"participant": ALICE, "side": "buyer"}, [2]),
        ({"participant": BOB.upper().replace("0X", "0x"), "side": "buyer"}, [1, 4, 5]),
        ({"status": TradeStatus.RECORDED}, [1, 2, 5, 6]),
        ({"status": "amended"}, [4]),
        # Overlap with [from, to): a window ending at `from` or starting at `to` does not count.
        ({"delivery_from": 900, "delivery_to": 1800}, [2]),
        ({"delivery_from": 899, "delivery_to": 1801}, [1, 2, 3]),
        ({"delivery_from": 3600}, [4, 5, 6]),
        ({"delivery_to": 900}, [1]),
        ({"delivery_from": 5400, "delivery_to": 5401, "participant": CAROL}, [6]),
        ({"participant": CAROL, "side": "seller", "delivery_from": 4500, "status": "recorded"}, [5]),
    ],
)
def test_list_trades_filters(ledger: sessionmaker[Session], filters: dict[str, Any], expected: list[int]) -> None:
    with ledger() as session:
        page = queries.list_trade_rows(session, **filters)
        assert ids_of(page.items) == expected
        assert page.next_cursor is None


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"participant": "0x1234"}, "participant"),
        ({"side": "both"}, "side"),
        ({"status": "settled"}, "status"),
        ({"delivery_from": 900, "delivery_to": 900}, "delivery_to"),
        ({"limit": 0}, "limit"),
        ({"limit": queries.MAX_PAGE_SIZE + 1}, "limit"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": "not a cursor!"}, "cursor"),
        ({"cursor": "MTI6Mw!!"}, "cursor"),  # "12:3" with junk the lenient decoder would skip
        ({"cursor": "eDp5"}, "cursor"),  # "x:y"
        ({"cursor": "OTk5OTk5OTk5OTk5OTk5OTk5OTo1"}, "cursor"),  # a block number beyond BIGINT
    ],
)
def test_list_trades_rejects_bad_input(ledger: sessionmaker[Session], filters: dict[str, Any], field: str) -> None:
    with ledger() as session, pytest.raises(ValidationError) as invalid:
        queries.list_trade_rows(session, **filters)
    assert invalid.value.field == field


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 6, 7])
def test_pages_cover_every_trade_once(ledger: sessionmaker[Session], limit: int) -> None:
    seen: list[int] = []
    cursor = None
    with ledger() as session:
        for _ in range(10):
            page = queries.list_trade_rows(session, limit=limit, cursor=cursor)
            assert len(page.items) <= limit
            seen += ids_of(page.items)
            cursor = page.next_cursor
            if cursor is None:
                break
    assert seen == [1, 2, 3, 4, 5, 6]


def test_a_page_does_not_shift_when_trades_are_appended(ledger: sessionmaker[Session]) -> None:
    alice, bob, _ = addresses()
    with ledger() as session:
        first = queries.list_trade_rows(session, limit=4)
    with ledger.begin() as session:
        session.add(a_trade(7, alice, bob, 0, 900))
    with ledger() as session:
        rest = queries.list_trade_rows(session, limit=4, cursor=first.next_cursor)
    assert ids_of(first.items) + ids_of(rest.items) == [1, 2, 3, 4, 5, 6, 7]


@given(st.text(max_size=40))
def test_any_cursor_string_is_a_key_or_a_validation_error(cursor: str) -> None:
    try:
        block_number, log_index = queries._decode_cursor(cursor)
    except ValidationError as invalid:
        assert invalid.field == "cursor"
    else:
        assert queries._decode_cursor(queries._encode_cursor(block_number, log_index)) == (block_number, log_index)


@pytest.fixture
def participants(store_session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    alice, bob, carol = addresses()
    kinds = {alice: ParticipantKind.GENERATOR, bob: ParticipantKind.CONSUMER, carol: ParticipantKind.PROSUMER}
    with store_session_factory.begin() as session:
        for n, (address, kind) in enumerate(kinds.items(), start=1):
            session.add(
                Participant(
                    address=address,
                    kind=kind,
                    status=ParticipantStatus.SUSPENDED if address == bob else ParticipantStatus.ACTIVE,
                    identifier_hash=trade_id(100 + n),
                    registered_at=1_700_000_000 + n,
                    **origin(n, 0),
                )
            )
            session.add(
                ParticipantEvent(
                    event=ParticipantEventKind.REGISTERED,
                    address=address,
                    kind=kind,
                    identifier_hash=trade_id(100 + n),
                    **origin(n, 0),
                )
            )
        session.add(ParticipantEvent(event=ParticipantEventKind.SUSPENDED, address=bob, **origin(9, 0)))
    return store_session_factory


def test_participants(participants: sessionmaker[Session]) -> None:
    alice, bob, carol = addresses()
    with participants() as session:
        assert [p.address for p in queries.list_participants(session).items] == [alice, bob, carol]
        assert [p.address for p in queries.list_participants(session, status="active").items] == [alice, carol]
        assert [p.address for p in queries.list_participants(session, kind=ParticipantKind.PROSUMER).items] == [carol]
        first = queries.list_participants(session, limit=2)
        rest = queries.list_participants(session, limit=2, cursor=first.next_cursor)
        assert [p.address for p in first.items + rest.items] == [alice, bob, carol]
        assert rest.next_cursor is None

        participant = queries.get_participant(session, BOB)
        assert participant is not None
        assert participant.status is ParticipantStatus.SUSPENDED
        assert [e.event for e in participant.events] == [
            ParticipantEventKind.REGISTERED,
            ParticipantEventKind.SUSPENDED,
        ]
        assert queries.get_participant(session, "0x" + "00" * 20) is None
        with pytest.raises(ValidationError):
            queries.list_participants(session, kind="utility")


def test_session_factory_keeps_objects_readable_after_commit(store_engine: Engine) -> None:
    factory = make_session_factory(store_engine)
    with factory.begin() as session:
        submission, _ = outbox.add_submission(session, trade_id(1), {"a": 1})
    assert submission.trade_id == trade_id(1)


def test_sqlite_read_sessions_do_not_wait_for_a_writer(tmp_path: Path) -> None:
    """A read-only session reads while another connection holds the write lock."""
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    migrate(engine)
    writes, reads = make_session_factory(engine), make_session_factory(engine, read_only=True)
    with writes.begin() as writer:
        outbox.add_submission(writer, "0x" + "11" * 32, {"trade": {}})
        writer.flush()
        with reads() as reader:  # would block for busy_timeout, then fail, under BEGIN IMMEDIATE
            assert outbox.get_submission_by_trade(reader, "0x" + "11" * 32) is None
    with reads() as reader:
        assert outbox.get_submission_by_trade(reader, "0x" + "11" * 32) is not None
    engine.dispose()


def test_the_access_log_is_append_only(store_session_factory: sessionmaker[Session]) -> None:
    fields: dict[str, Any] = {
        "at": datetime.now(UTC),
        "principal_kind": PrincipalKind.TOKEN,
        "principal": "auditor-1",
        "token_id": "0123456789abcdef",
        "method": "GET",
        "path": "/trades",
        "query": "",
        "status": 200,
        "client": "127.0.0.1",
    }
    chained = {**fields, "prev_hash": access_chain.GENESIS, "hash": access_chain.link(access_chain.GENESIS, fields)}
    with store_session_factory() as session:
        session.add(access_models.AccessLogEntry(**chained))
        session.commit()
        entry_id = session.scalars(select(access_models.AccessLogEntry.id)).one()
    table = access_models.AccessLogEntry
    replacement = {**chained, "id": entry_id, "status": 404}
    dialect = store_session_factory.kw["bind"].dialect.name
    upsert: Any = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[dialect]
    changes = [
        update(access_models.AccessLogEntry).values(status=404),
        delete(access_models.AccessLogEntry),
        upsert(table).values(replacement).on_conflict_do_update(index_elements=["id"], set_={"status": 404}),
    ]
    if dialect == "sqlite":
        # INSERT OR REPLACE deletes the row it replaces without firing SQLite's DELETE trigger.
        changes.append(sqlite_insert(table).prefix_with("OR REPLACE").values(replacement))
    for change in changes:
        with store_session_factory() as session, pytest.raises(DBAPIError, match="append-only"):
            session.execute(change)
            session.flush()
    with store_session_factory() as session:
        assert session.scalars(select(access_models.AccessLogEntry.status)).all() == [200]


def test_migration_0008_chains_the_entries_already_logged(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), "0007")
        fields = {"principal_kind": "token", "principal": "auditor-1", "token_id": None, "method": "GET"}
        rows = [
            {**fields, "at": datetime(2026, 12, 1, tzinfo=UTC), "path": f"/trades/{n}", "query": "", "status": 200}
            for n in range(3)
        ]
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO access_log (at, principal_kind, principal, token_id, method, path, "
                    "query, status, client) VALUES (:at, :principal_kind, :principal, :token_id, "
                    ":method, :path, :query, :status, NULL)"
                ),
                [{**row, "client": None} for row in rows],
            )
        migrate(engine)
        with make_session_factory(engine)() as session:
            assert access_log_differences(session) == []
            assert len(set(session.scalars(select(access_models.AccessLogEntry.hash)))) == 3
    finally:
        engine.dispose()
