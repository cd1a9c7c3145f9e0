"""Pooled PostgreSQL connections: one the server closed while it sat idle is replaced, not handed
to a request."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from ledger.store import db
from ledger.store.db import make_engine


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
