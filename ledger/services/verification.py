"""Verifies a trade index against the chain: every difference, with both values.

Two parts:

- `compare(chain, index)` is pure: two `IndexSnapshot`s in, the list of `Difference`s out
  (rows missing from the index, extra rows in it, fields that differ, the provenance fields
  block hash / transaction hash / transaction index / log index reported as their own kind).
- `chain_snapshot(...)` is the chain reader: it indexes the chain, from the deployment block up to
  the block the index claims to have reached, into a scratch SQLite database with a fresh Indexer
  and reads that back. The expected rows therefore come from the chain's logs alone through the
  same event-to-row projection the indexer uses (tests/test_indexer_chain.py checks that
  projection against the transactions' receipts); what this catches is any row of the index that
  is not what the chain says: tampered, missing, invented, or left behind by a reorg.

Rows are keyed by what identifies them on chain: trades by trade id, participants by address,
events by (block number, log index), so a changed block hash is a provenance mismatch, not a
missing row plus an extra one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ledger.indexer.decoder import AbiEntry
from ledger.indexer.indexer import Indexer, head_checkpoint_name
from ledger.indexer.ports import BlockHeader, LogSource
from ledger.store.db import make_engine, make_session_factory, migrate
from ledger.store.models import Base, IndexerCheckpoint, Participant, ParticipantEvent, Trade, TradeEvent

PROVENANCE_FIELDS = frozenset({"block_number", "block_hash", "transaction_hash", "transaction_index", "log_index"})

# table -> (model, key columns); the surrogate `id` of event rows is not compared.
TABLES: dict[str, tuple[type[Base], tuple[str, ...]]] = {
    "trades": (Trade, ("trade_id",)),
    "trade_events": (TradeEvent, ("block_number", "log_index")),
    "participants": (Participant, ("address",)),
    "participant_events": (ParticipantEvent, ("block_number", "log_index")),
}

Key = tuple[Any, ...]
Row = dict[str, Any]
IndexSnapshot = dict[str, dict[Key, Row]]  # table -> key -> row


class DifferenceKind(StrEnum):
    MISSING = "missing"  # on chain, not in the index
    EXTRA = "extra"  # in the index, not on chain
    FIELD = "field"
    PROVENANCE = "provenance"


@dataclass(frozen=True, slots=True)
class Difference:
    kind: DifferenceKind
    table: str
    key: Key
    field: str | None = None
    chain_value: Any = None
    index_value: Any = None

    def __str__(self) -> str:
        where = f"{self.table} {'/'.join(str(part) for part in self.key)}"
        if self.kind is DifferenceKind.MISSING:
            return f"missing: {where} is on chain but not in the index"
        if self.kind is DifferenceKind.EXTRA:
            return f"extra: {where} is in the index but not on chain"
        return f"{self.kind}: {where} {self.field}: chain {self.chain_value!r}, index {self.index_value!r}"


def compare(chain: IndexSnapshot, index: IndexSnapshot) -> list[Difference]:
    """Every difference between the rows the chain implies and the index's rows, in a stable order."""
    differences: list[Difference] = []
    for table in TABLES:
        expected, actual = chain.get(table, {}), index.get(table, {})
        for key in sorted(expected.keys() | actual.keys(), key=repr):
            if key not in actual:
                differences.append(Difference(DifferenceKind.MISSING, table, key))
            elif key not in expected:
                differences.append(Difference(DifferenceKind.EXTRA, table, key))
            else:
                differences += _field_differences(table, key, expected[key], actual[key])
    return differences


def _field_differences(table: str, key: Key, expected: Row, actual: Row) -> list[Difference]:
    found = []
    for name in sorted(expected.keys() | actual.keys()):
        if expected.get(name) != actual.get(name):
            kind = DifferenceKind.PROVENANCE if name in PROVENANCE_FIELDS else DifferenceKind.FIELD
            found.append(Difference(kind, table, key, name, expected.get(name), actual.get(name)))
    return found


def read_snapshot(session: Session) -> IndexSnapshot:
    """Every indexed row of the database, keyed as `TABLES` says."""
    snapshot: IndexSnapshot = {}
    for table, (model, key_columns) in TABLES.items():
        columns = [column for column in model.__table__.columns if column.name != "id"]
        rows: dict[Key, Row] = {}
        for values in session.execute(select(*columns)):
            row = dict(zip([column.name for column in columns], values, strict=True))
            rows[tuple(row[name] for name in key_columns)] = row
        snapshot[table] = rows
    return snapshot


def indexed_until(session: Session, name: str) -> int | None:
    """The last block the index named `name` claims (its head checkpoint when it follows the head)."""
    for checkpoint_name in (head_checkpoint_name(name), name):
        row = session.get(IndexerCheckpoint, checkpoint_name)
        if row is not None:
            return row.block_number
    return None


class _CappedSource:
    """A LogSource whose head is at most `last_block`: a fresh indexer stops there."""

    def __init__(self, source: LogSource, last_block: int) -> None:
        self._source, self._last_block = source, last_block

    def head_block_number(self) -> int:
        return min(self._source.head_block_number(), self._last_block)

    def get_logs(self, addresses: Sequence[str], from_block: int, to_block: int) -> list[Mapping[str, Any]]:
        return self._source.get_logs(addresses, from_block, to_block)

    def get_blocks(self, numbers: Sequence[int]) -> list[BlockHeader]:
        return self._source.get_blocks(numbers)


def chain_snapshot(
    source: LogSource,
    *,
    addresses: Sequence[str],
    abi: Sequence[AbiEntry],
    start_block: int,
    last_block: int,
    max_blocks_per_step: int = 500,
) -> IndexSnapshot:
    """The rows the chain implies for blocks start_block..last_block, built in a scratch database."""
    with tempfile.TemporaryDirectory(prefix="gridledger-verify-") as workdir:
        engine = make_engine(f"sqlite:///{Path(workdir) / 'chain.db'}")
        try:
            migrate(engine)
            sessions: sessionmaker[Session] = make_session_factory(engine)
            indexer = Indexer(
                _CappedSource(source, last_block),
                sessions,
                addresses=addresses,
                abi=abi,
                start_block=start_block,
                confirmations=1,
                name="verify",
                max_blocks_per_step=max_blocks_per_step,
            )
            # The capped head is min(chain head, last_block): a chain shorter than the index's
            # checkpoint stops the loop too, and the rows above it show as extra.
            while (result := indexer.step()).to_block < result.head:
                pass
            with sessions() as session:
                return read_snapshot(session)
        finally:
            engine.dispose()


def verify(
    source: LogSource,
    index_sessions: sessionmaker[Session],
    *,
    name: str,
    addresses: Sequence[str],
    abi: Sequence[AbiEntry],
    start_block: int,
) -> list[Difference]:
    """Every difference between the index in `index_sessions` (indexer `name`) and the chain."""
    with index_sessions() as session:
        until = indexed_until(session, name)
        index = read_snapshot(session)
    chain: IndexSnapshot = (
        {}
        if until is None
        else chain_snapshot(source, addresses=addresses, abi=abi, start_block=start_block, last_block=until)
    )
    return compare(chain, index)
