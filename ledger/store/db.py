"""Engines, sessions and schema migrations for the ledger database (SQLite or PostgreSQL)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, event, inspect, make_url
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from ledger.errors import ConfigurationError
from ledger.store import (  # noqa: F401  (their tables join Base.metadata)
    access_models,
    chain_models,
    metering_models,
    registration_models,
    sender_models,
    settlement_models,
)
from ledger.store.models import Base

# How long a SQLite connection waits for another connection's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Pages read through a memory map instead of a read() into the connection's small page cache each:
# a read of a large index touches pages spread all over the file.
SQLITE_MMAP_BYTES = 2**31
# A pooled server connection idle for longer than this is pinged before use (see _ping_when_idle).
POOL_PING_AFTER_IDLE_SECONDS = 10.0
_IDLE_SINCE = "gridledger_idle_since"

_MIGRATIONS = "ledger.store:migrations"


_INSERTS: dict[str, Callable[..., Any]] = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

# Execution option of engines whose transactions only read (see make_session_factory).
_READ_ONLY = "gridledger_read_only"


def dialect_insert(session: Session) -> Callable[..., Any]:
    """The INSERT construct of the session's database, which has ON CONFLICT DO NOTHING."""
    dialect = session.get_bind().dialect.name
    if dialect not in _INSERTS:
        raise ConfigurationError(f"the ledger's store supports SQLite and PostgreSQL, not {dialect}", dialect=dialect)
    return _INSERTS[dialect]


def make_engine(url: str | URL, *, flush_commits: bool = True) -> Engine:
    """An engine configured for the ledger: see `_configure_sqlite` for SQLite.

    `flush_commits=False`: a commit returns once the database has the transaction, without
    waiting for it to reach the disk (SQLite `synchronous=NORMAL` in WAL mode, PostgreSQL
    `synchronous_commit=off`). Its rows survive a crash of this process; a crash of the machine
    (or of the PostgreSQL server) may lose the last commits, never corrupt the database. For
    high-volume records whose commit is on the request path: the access log."""
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        _create_parent_folder(url)
        engine = create_engine(url)
        _configure_sqlite(engine, synchronous="FULL" if flush_commits else "NORMAL")
        return engine
    options = {} if flush_commits else {"connect_args": {"options": "-c synchronous_commit=off"}}
    engine = create_engine(url, **options)
    _ping_when_idle(engine)
    return engine


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions for units of work; `read_only` ones (the API's queries) do not take SQLite's
    write lock, so reads run beside the relayer's and the indexer's writes.

    On PostgreSQL a read-only session runs its statements in autocommit: under READ COMMITTED
    (the default) each statement of a transaction takes its own snapshot anyway, so the BEGIN and
    the ROLLBACK on return would be two round trips for nothing. A reader that needs one snapshot
    for several statements asks for REPEATABLE READ on its connection, which begins a transaction
    (`ledger.services.settlement.inputs._one_snapshot`), and so does a server-side cursor
    (`begin_read_transaction`). On SQLite a read transaction is one snapshot."""
    if read_only:
        options: dict[str, Any] = {_READ_ONLY: True}
        if engine.dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        engine = engine.execution_options(**options)
    # expire_on_commit=False: objects returned by a committed unit of work (an outbox row, a
    # page of trades) stay readable after their session ends.
    return sessionmaker(engine, expire_on_commit=False)


def begin_read_transaction(session: Session) -> None:
    """Reads of `session` from here on run in one transaction, also on a PostgreSQL read session
    (autocommit, see make_session_factory): a server-side cursor (`yield_per`) lives in one."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "READ COMMITTED"})


def migrate(target: str | URL | Engine) -> None:
    """`alembic upgrade head` with the migrations shipped inside this package, then
    `create_missing_indexes` and `refresh_planner_statistics`."""
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), "head")
            create_missing_indexes(connection)
            refresh_planner_statistics(connection)
    finally:
        if engine is not target:
            engine.dispose()


def create_missing_indexes(connection: Connection) -> list[str]:
    """Creates each index of the models that the database lacks; returns their names.

    A bulk load (ledger/indexer/bulk_load.py) drops the indexes of the tables it fills and builds
    them again at its end: a load killed before that leaves them missing, and every process that
    opens the database migrates it first, so none runs without them.
    """
    inspector = inspect(connection)
    created = []
    for table in Base.metadata.sorted_tables:
        present = {index["name"] for index in inspector.get_indexes(table.name)}
        for index in sorted(table.indexes, key=lambda index: str(index.name)):
            if index.name not in present:
                index.create(connection)
                created.append(str(index.name))
    return created


STATISTICS_ROWS = 1000  # index entries SQLite's ANALYZE samples: ~60 ms with 1,000,000 trades


def refresh_planner_statistics(connection: Connection) -> None:
    """SQLite: ANALYZE, sampling STATISTICS_ROWS entries per index, so that its query planner knows
    the tables' sizes and the indexes' selectivity. SQLite keeps no statistics unless asked; without
    them it read a participant's 30-day window list through (seller, delivery_start), 4x slower
    than through the chain-order index holding the window. PostgreSQL's autovacuum keeps its own.

    Run by `migrate` (every process start), at the end of a bulk load, and hourly by the indexer
    (`Indexer.run`) while the tables grow."""
    if connection.dialect.name != "sqlite":
        return
    connection.exec_driver_sql(f"PRAGMA analysis_limit={STATISTICS_ROWS}")
    connection.exec_driver_sql("ANALYZE")


def current_revision(engine: Engine) -> str | None:
    """The migration revision the database is at; None before the first migration."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _alembic_config(connection: Connection) -> Config:
    # No alembic.ini: the script location is a package resource, so migrations work from an
    # installed wheel as well as from the source tree.
    config = Config()
    config.set_main_option("script_location", _MIGRATIONS)
    config.attributes["connection"] = connection
    return config


def _create_parent_folder(url: URL) -> None:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _ping_when_idle(engine: Engine) -> None:
    """A pooled connection may have been closed by the server or a proxy while idle: one that sat
    in the pool for more than POOL_PING_AFTER_IDLE_SECONDS is pinged at checkout and replaced when
    it does not answer. Unlike pool_pre_ping, a connection in steady use is not pinged: that was a
    round trip more on every API read."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since <= POOL_PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out another (a new one if need be).
            raise DisconnectionError("a pooled connection did not answer a ping") from exc


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    """WAL, foreign keys, a busy timeout, and transactions that SQLAlchemy (not sqlite3) begins.

    Python's sqlite3 module delays BEGIN until the first write, so SELECTs and SAVEPOINTs run
    outside the transaction (SQLAlchemy docs, "Transactions with SQLite and the sqlite3 driver").
    We emit BEGIN ourselves, and make it IMMEDIATE: a transaction that reads and then writes (the
    outbox claim, the indexer's checkpoint) would otherwise fail with SQLITE_BUSY at once, without
    waiting, when another connection committed in between. The cost is that SQLite transactions
    run one at a time; PostgreSQL is the database for concurrent production use.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # sqlite3 must not emit BEGIN itself
        cursor = dbapi_connection.cursor()
        try:
            # WAL: a backup or the sqlite3 shell can read while the ledger writes, and commits
            # append to the log instead of rewriting pages.
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL (SQLite's default) syncs the log on every commit; see make_engine.
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA foreign_keys=ON")  # off by default in SQLite
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(_READ_ONLY, False):
            # Straight on the driver's connection: SQLAlchemy's execution path costs more than
            # BEGIN itself, and every API read pays it. A deferred BEGIN takes no lock, so it
            # does not wait or fail on one (BEGIN IMMEDIATE does, with an error SQLAlchemy wraps).
            connection.connection.dbapi_connection.execute("BEGIN")  # type: ignore[union-attr]
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
