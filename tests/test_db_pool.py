"""The engines' connections: a pooled PostgreSQL connection that the server closed while it sat idle
is replaced, not handed to a request; commits wait for the disk unless the engine is told not to."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ledger.store import db
from ledger.store.db import make_engine, make_session_factory


# PostgreSQL only: SQLite has no server to close a connection.
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_connection_closed_while_idle_is_replaced(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            first = connection.scalar(text("SELECT pg_backend_pid()"))
        with engine.connect() as connection:  # in steady use: the same connection
            assert connection.scalar(text("SELECT pg_backend_pid()")) == first
        with make_engine(database_url).connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
            admin.commit()
        monkeypatch.setattr(db, "POOL_PING_AFTER_IDLE_SECONDS", 0.0)
        with engine.connect() as connection:
            second = connection.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        engine.dispose()


@pytest.mark.parametrize("flush_commits", [True, False])
def test_an_engine_flushes_commits_unless_told_not_to(database_url: str, flush_commits: bool) -> None:
    engine = make_engine(database_url, flush_commits=flush_commits)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                # 2 = FULL: the log is synced at every commit; 1 = NORMAL: at checkpoints only.
                assert connection.scalar(text("PRAGMA synchronous")) == (2 if flush_commits else 1)
            else:
                assert connection.scalar(text("SHOW synchronous_commit")) == ("on" if flush_commits else "off")
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgres_read_sessions_run_each_statement_on_its_own_unless_asked_for_one_snapshot(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    reads = make_session_factory(engine, read_only=True)
    # now() is the start of the statement's transaction: equal within one, apart across two.
    later = text("SELECT now(), pg_sleep(0.01)")
    try:
        with reads() as session:
            first = session.execute(later).scalar_one()
            assert session.execute(later).scalar_one() > first
        with reads() as session:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            first = session.execute(later).scalar_one()
            assert session.execute(later).scalar_one() == first
        with make_session_factory(engine)() as session:  # sessions that write keep their transaction
            first = session.execute(later).scalar_one()
            assert session.execute(later).scalar_one() == first
    finally:
        engine.dispose()
