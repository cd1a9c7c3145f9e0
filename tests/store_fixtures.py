"""Database fixtures: every test that uses them runs once on SQLite and once on PostgreSQL.

PostgreSQL tests get a fresh, uniquely named database (created from GRIDLEDGER_TEST_POSTGRES_URL,
dropped afterwards) and carry the `postgres` mark: `-m "not postgres"` runs without a server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import uuid4

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session, sessionmaker

from ledger.store.db import make_engine, make_session_factory, migrate

__all__ = ["database_url", "store_engine", "store_session_factory"]

POSTGRES_URL = os.environ.get("GRIDLEDGER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an empty database."""
    if request.param == "sqlite":
        # A folder that does not exist yet: make_engine must create it.
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'ledger' / 'gridledger.db'}"
        return
    with postgres_database() as url:
        yield url


@contextmanager
def postgres_database() -> Iterator[str]:
    """The URL of a fresh, uniquely named PostgreSQL database, dropped afterwards."""
    name = f"gl_{uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture
def store_engine(database_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to the latest revision."""
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store_session_factory(store_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(store_engine)
