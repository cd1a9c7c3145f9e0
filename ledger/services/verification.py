"""Verifies the index against the chain: every difference, with both values.

Three parts:

- `compare(chain, index)` is pure: two `IndexSnapshot`s in, the list of `Difference`s out
  (rows missing from the index, extra rows in it, fields that differ, the provenance fields
  block hash / transaction hash / transaction index / log index reported as their own kind).
- `chain_snapshot(...)` is the chain reader: it indexes the chain, from the deployment block up to
  the block the index claims to have reached, into a scratch SQLite database with a fresh Indexer
  and reads that back. The expected rows therefore come from the chain's logs alone through the
  same event-to-row projection the indexer uses (tests/test_indexer_chain.py checks that
  projection against the transactions' receipts); what this catches is any row of the index that
  is not what the chain says: tampered, missing, invented, or left behind by a reorg.

- `content_differences(chain, session)` checks the OFF-CHAIN content against the roots and hashes
  the chain committed: the stored readings (or prices) of each batch must rebuild the batch's root,
  the statement lines of each run the run's root, and each dispute's reason and resolution the
  hashes on chain; the services' own records of batches, runs, disputes and relayed trades must
  not contradict the chain (committed there, by the same transaction in the same block, same
  root, same supersession and resolution). A record a reorg left stale shows here;
  `ledger.services.reconcile` repairs it (the service does after each rollback, and
  `scripts/verify_index.py --repair` on demand).

- `access_log_differences(session)` checks the access log's chain of hashes
  (`ledger.auth.access_chain`): the first entry changed, removed or inserted behind the service's
  back (the database refuses it unless its triggers were dropped) is reported.

Rows are keyed by what identifies them on chain: trades by trade id, participants by address,
events by (block number, log index), batches, runs and disputes by their ids, so a changed block
hash is a provenance mismatch, not a missing row plus an extra one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from eth_utils import keccak
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ledger.auth import access_chain
from ledger.domain.merkle import StandardMerkleTree
from ledger.domain.settlement import LEAF_ENCODING
from ledger.indexer.decoder import AbiEntry
from ledger.indexer.indexer import Indexer, StepResult, head_checkpoint_name
from ledger.indexer.ports import BlockHeader, LogSource
from ledger.store.access_models import AccessLogEntry
from ledger.store.chain_models import ChainBatch, ChainDispute, ChainRun
from ledger.store.db import make_engine, make_session_factory, migrate
from ledger.store.metering_models import BatchStatus, PriceBatchRow, ReadingBatchRow
from ledger.store.metering_queries import AnyBatch, BatchModel, content_root
from ledger.store.models import (
    Base,
    IndexerCheckpoint,
    Participant,
    ParticipantEvent,
    Submission,
    SubmissionStatus,
    Trade,
    TradeEvent,
    TradeEventKind,
)
from ledger.store.settlement_models import Dispute, DisputeStatus, RunStatus, SettlementRun, StatementLine

PROVENANCE_FIELDS = frozenset(
    {
        "block_number",
        "block_hash",
        "transaction_hash",
        "transaction_index",
        "log_index",
        # of the later event that changed the row
        "superseded_block_number",
        "superseded_transaction_hash",
        "superseded_log_index",
        "resolved_block_number",
        "resolved_block_hash",
        "resolved_transaction_hash",
        "resolved_log_index",
    }
)

# table -> (model, key columns); the surrogate `id` of event rows is not compared.
TABLES: dict[str, tuple[type[Base], tuple[str, ...]]] = {
    "trades": (Trade, ("trade_id",)),
    "trade_events": (TradeEvent, ("block_number", "log_index")),
    "participants": (Participant, ("address",)),
    "participant_events": (ParticipantEvent, ("block_number", "log_index")),
    "chain_batches": (ChainBatch, ("batch_id",)),
    "chain_runs": (ChainRun, ("run_id",)),
    "chain_disputes": (ChainDispute, ("dispute_id",)),
}

Key = tuple[Any, ...]
Row = dict[str, Any]
IndexSnapshot = dict[str, dict[Key, Row]]  # table -> key -> row


class DifferenceKind(StrEnum):
    MISSING = "missing"  # on chain, not in the index
    EXTRA = "extra"  # in the index, not on chain
    FIELD = "field"
    PROVENANCE = "provenance"
    CONTENT = "content"  # off-chain content or a service's record that the chain contradicts
    TAMPERED = "tampered"  # an access-log entry whose link in the chain of hashes does not hold


@dataclass(frozen=True, slots=True)
class Difference:
    kind: DifferenceKind
    table: str
    key: Key
    field: str | None = None
    chain_value: Any = None
    index_value: Any = None
    detail: str | None = None  # what a CONTENT difference means

    def __str__(self) -> str:
        where = f"{self.table} {'/'.join(str(part) for part in self.key)}"
        if self.kind is DifferenceKind.CONTENT:
            return (
                f"content: {where} {self.field}: {self.detail} "
                f"(chain {self.chain_value!r}, stored {self.index_value!r})"
            )
        if self.kind is DifferenceKind.TAMPERED:
            return (
                f"tampered: {where} {self.field}: {self.detail} "
                f"(expected {self.chain_value}, stored {self.index_value})"
            )
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


def content_differences(chain: IndexSnapshot, session: Session, until: int | None) -> list[Difference]:
    """Off-chain content and the services' records against the chain facts in `chain` (the rows
    the chain implies up to block `until`), in a stable order."""
    found: list[Difference] = []
    batches, runs, disputes = (
        chain.get("chain_batches", {}),
        chain.get("chain_runs", {}),
        chain.get("chain_disputes", {}),
    )

    def content(table: str, key: Key, name: str, chain_value: Any, stored: Any, detail: str) -> None:
        found.append(Difference(DifferenceKind.CONTENT, table, key, name, chain_value, stored, detail))

    for (batch_id,), fact in sorted(batches.items()):
        table = "meter_readings" if fact["batch_kind"] == "readings" else "reference_prices"
        root, count = content_root(session, fact["batch_kind"], batch_id)
        if root is None:
            content(table, (batch_id,), "root", fact["root"], None, "no stored content for the committed batch")
        elif root != fact["root"]:
            content(
                table, (batch_id,), "root", fact["root"], root, "the stored values do not hash to the root on chain"
            )
        elif count != fact["item_count"]:
            content(table, (batch_id,), "count", fact["item_count"], count, "another count than committed")
    records: list[tuple[BatchModel, str]] = [(ReadingBatchRow, "reading_batches"), (PriceBatchRow, "price_batches")]
    for model, table in records:
        committed: list[AnyBatch] = list(session.scalars(select(model).where(model.status == BatchStatus.COMMITTED)))
        for row in committed:
            fact = batches.get((row.batch_id,), {})
            if not fact:
                if until is not None and row.block_number is not None and row.block_number <= until:
                    content(table, (row.batch_id,), "status", None, row.status.value, "committed here, not on chain")
                continue
            for name in ("root", "transaction_hash", "block_number", "supersedes"):
                if getattr(row, name) != fact[name]:
                    content(
                        table,
                        (row.batch_id,),
                        name,
                        fact[name],
                        getattr(row, name),
                        "the record differs from the chain",
                    )

    for (run_id,), fact in sorted(runs.items()):
        values = [
            [run_id, *line]
            for line in session.execute(
                select(
                    StatementLine.account,
                    StatementLine.kind,
                    StatementLine.ref,
                    StatementLine.energy_wh,
                    StatementLine.amount_minor,
                ).where(StatementLine.run_id == run_id)
            )
        ]
        if not values:
            content("statement_lines", (run_id,), "root", fact["root"], None, "no stored lines for the committed run")
            continue
        root = StandardMerkleTree.of(values, LEAF_ENCODING).root
        if root != fact["root"]:
            content(
                "statement_lines",
                (run_id,),
                "root",
                fact["root"],
                root,
                "the stored lines do not hash to the root on chain",
            )
        elif len(values) != fact["line_count"]:
            content(
                "statement_lines", (run_id,), "count", fact["line_count"], len(values), "another count than committed"
            )
    for run in session.scalars(select(SettlementRun).where(SettlementRun.status != RunStatus.COMPUTED)):
        fact = runs.get((run.run_id,), {})
        if not fact:
            if until is not None and run.block_number is not None and run.block_number <= until:
                content(
                    "settlement_runs", (run.run_id,), "status", None, run.status.value, "committed here, not on chain"
                )
            continue
        for name in (
            "root",
            "inputs_hash",
            "version",
            "transaction_hash",
            "block_number",
            "block_hash",
            "superseded_by",
        ):
            if getattr(run, name) != fact[name]:
                content(
                    "settlement_runs",
                    (run.run_id,),
                    name,
                    fact[name],
                    getattr(run, name),
                    "the record differs from the chain",
                )

    for dispute in session.scalars(select(Dispute)):
        fact = disputes.get((dispute.dispute_id,), {})
        key = (dispute.dispute_id,)
        if not fact:
            if until is not None and dispute.opened_block_number <= until:
                content("disputes", key, "status", None, dispute.status.value, "opened here, not on chain")
            continue
        if _text_hash(dispute.reason) != fact["reason_hash"]:
            content(
                "disputes",
                key,
                "reason",
                fact["reason_hash"],
                _text_hash(dispute.reason),
                "the stored reason does not hash to the hash on chain",
            )
        provenance = [
            ("opened_transaction_hash", "transaction_hash"),
            ("opened_block_number", "block_number"),
        ]
        if fact["resolved_transaction_hash"] is not None and dispute.resolved_transaction_hash is not None:
            provenance += [
                ("resolved_transaction_hash", "resolved_transaction_hash"),
                ("resolved_block_number", "resolved_block_number"),
            ]
        for name, chain_name in provenance:
            if getattr(dispute, name) != fact[chain_name]:
                content(
                    "disputes", key, name, fact[chain_name], getattr(dispute, name), "the record differs from the chain"
                )
        chain_status = (
            DisputeStatus.OPEN
            if fact["accepted"] is None
            else DisputeStatus.ACCEPTED
            if fact["accepted"]
            else DisputeStatus.REJECTED
        )
        if dispute.status is not chain_status:
            content(
                "disputes", key, "status", chain_status.value, dispute.status.value, "the record differs from the chain"
            )
        resolved_on_chain = fact["resolution_hash"] is not None  # else the status difference says it
        if (
            resolved_on_chain
            and dispute.resolution is not None
            and _text_hash(dispute.resolution) != fact["resolution_hash"]
        ):
            content(
                "disputes",
                key,
                "resolution",
                fact["resolution_hash"],
                _text_hash(dispute.resolution),
                "the stored resolution does not hash to the hash on chain",
            )
    return found + _submission_differences(chain, session, until)


def _submission_differences(chain: IndexSnapshot, session: Session, until: int | None) -> list[Difference]:
    """The relayer's outcomes that name a block (recorded, or rejected inside a mined batch)
    against the trades and rejections the chain has up to block `until`."""
    if until is None:
        return []
    found: list[Difference] = []
    trades = chain.get("trades", {})
    rejected_by = {
        (row["trade_id"], row["transaction_hash"])
        for row in chain.get("trade_events", {}).values()
        if row["event"] == TradeEventKind.REJECTED
    }
    outcomes = select(Submission).where(
        Submission.status.in_([SubmissionStatus.RECORDED, SubmissionStatus.REJECTED]),
        Submission.block_number <= until,
    )
    for submission in session.scalars(outcomes.order_by(Submission.trade_id)):
        key = (submission.trade_id,)
        if submission.status is SubmissionStatus.REJECTED:
            if (submission.trade_id, submission.transaction_hash) not in rejected_by:
                found.append(
                    Difference(
                        DifferenceKind.CONTENT,
                        "submissions",
                        key,
                        "status",
                        None,
                        submission.status.value,
                        "rejected here by a transaction the chain does not have",
                    )
                )
            continue
        fact = trades.get(key)
        if fact is None:
            found.append(
                Difference(
                    DifferenceKind.CONTENT,
                    "submissions",
                    key,
                    "status",
                    None,
                    submission.status.value,
                    "recorded here, not on chain",
                )
            )
            continue
        for name in ("transaction_hash", "block_number"):
            if getattr(submission, name) != fact[name]:
                found.append(
                    Difference(
                        DifferenceKind.CONTENT,
                        "submissions",
                        key,
                        name,
                        fact[name],
                        getattr(submission, name),
                        "the record differs from the chain",
                    )
                )
    return found


def access_log_differences(session: Session) -> list[Difference]:
    """The first broken link of the access log's chain of hashes, if any (one: every later entry
    follows from it)."""
    broken = access_chain.first_break(_access_log_entries(session))
    if broken is None:
        return []
    detail = (
        "not the hash of the entry before it (an entry was removed, inserted or rewritten)"
        if broken.field == "prev_hash"
        else "not the hash of its fields (the entry was changed)"
    )
    return [
        Difference(
            DifferenceKind.TAMPERED,
            "access_log",
            (broken.entry_id,),
            broken.field,
            broken.expected,
            broken.stored,
            detail,
        )
    ]


_ACCESS_LOG_CHUNK = 5_000
_ACCESS_LOG_COLUMNS = [getattr(AccessLogEntry, name) for name in (*access_chain.FIELDS, "id", "prev_hash", "hash")]


def _access_log_entries(session: Session) -> Iterator[Mapping[str, Any]]:
    """Every entry, oldest first, read in pages (a read session may not hold a cursor open)."""
    after = None
    while True:
        query = select(*_ACCESS_LOG_COLUMNS).order_by(AccessLogEntry.id).limit(_ACCESS_LOG_CHUNK)
        if after is not None:
            query = query.where(AccessLogEntry.id > after)
        page = session.execute(query).mappings().all()
        yield from (dict(row) for row in page)
        if len(page) < _ACCESS_LOG_CHUNK:
            return
        after = page[-1]["id"]


def _text_hash(text: str) -> str:
    return "0x" + keccak(text=text).hex()


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
    on_step: Callable[[StepResult], object] | None = None,
) -> IndexSnapshot:
    """The rows the chain implies for blocks start_block..last_block, built in a scratch database
    by the indexer's pipelined rebuild (`Indexer.catch_up`); `on_step` sees each range."""
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
            # checkpoint stops it too, and the rows above it show as extra.
            indexer.catch_up(on_step)
            while True:  # up to the blocks the chain grew by meanwhile
                result = indexer.step()
                if on_step is not None:
                    on_step(result)
                if result.to_block >= result.head:
                    break
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
    on_step: Callable[[StepResult], object] | None = None,
) -> list[Difference]:
    """Every difference between the index in `index_sessions` (indexer `name`) and the chain: the
    indexed rows (`compare`), then the off-chain content and records (`content_differences`).
    `on_step` sees each range of blocks read from the chain."""
    with index_sessions() as session:
        until = indexed_until(session, name)
        index = read_snapshot(session)
    chain: IndexSnapshot = (
        {}
        if until is None
        else chain_snapshot(
            source, addresses=addresses, abi=abi, start_block=start_block, last_block=until, on_step=on_step
        )
    )
    with index_sessions() as session:
        return compare(chain, index) + content_differences(chain, session, until) + access_log_differences(session)
