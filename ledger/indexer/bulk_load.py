"""Filling an empty index: the secondary indexes of the event tables are built once, at the end.

Keeping eight B-trees of `trades` up to date row by row, keys arriving in random order (trade
ids, addresses), costs more than the rows themselves: 50,000 trades took 1.9 s to insert with
their indexes and 0.7 s without, and building the indexes afterwards from the stored rows takes
well under a second. So a rebuild into empty tables (`scripts/reindex.py --reset`, or a fresh
database) drops those indexes first and creates them again when it stops, however it stops.

What is dropped and created is `Table.indexes` of the SQLAlchemy models, the indexes the
migrations create too, so nothing lists them twice. Primary keys and unique constraints stay:
they are the keys of the indexer's idempotent inserts (ON CONFLICT DO NOTHING).

A process killed during the load leaves complete ranges with their checkpoint (each range is one
transaction) but no secondary indexes. `ledger.store.db.migrate`, which the service and every
reindex run call before anything else, creates any index of the models that is missing, so no
reader or writer ever works without them; a resumed rebuild then goes on with its indexes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Table, literal, select
from sqlalchemy.orm import Session, sessionmaker

from ledger.store.db import create_missing_indexes, refresh_planner_statistics
from ledger.store.models import Participant, ParticipantEvent, Trade, TradeEvent

logger = logging.getLogger(__name__)

# The tables of TradeLedger's events, a row or two per event; the chain facts of MeterData and
# Settlement are a row per commitment, too few to matter.
BULK_LOADED: tuple[Table, ...] = tuple(
    model.__table__  # type: ignore[misc]
    for model in (Trade, TradeEvent, Participant, ParticipantEvent)
)


@contextmanager
def bulk_load(sessions: sessionmaker[Session]) -> Iterator[bool]:
    """Within the block, the BULK_LOADED tables lack their secondary indexes if they were all
    empty when it began (yields whether they were); the indexes exist again when it ends."""
    with sessions.begin() as session:
        connection = session.connection()
        empty = all(connection.scalar(select(literal(1)).select_from(table).limit(1)) is None for table in BULK_LOADED)
        if empty:
            for table in BULK_LOADED:
                for index in table.indexes:
                    index.drop(connection, checkfirst=True)
    try:
        yield empty
    finally:
        if empty:
            with sessions.begin() as session:
                created = create_missing_indexes(session.connection())
                refresh_planner_statistics(session.connection())
            logger.info("bulk load: created the indexes %s", ", ".join(created))
