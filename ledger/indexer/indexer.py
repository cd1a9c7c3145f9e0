"""Indexes the events of the ledger's contracts into the store.

TradeLedger's events become trades, participants and their events; MeterData's and Settlement's
become the chain facts of `ledger.store.chain_models` (batch and run commitments with their
supersession, disputes with their resolution); their off-chain content (readings, prices,
statement lines) is the services' to store, and is checked against these roots by
`ledger.services.verification`. The services also write the chain facts of their own receipts
through `write_receipt_logs`, the same projection, so both writers agree on every row.

Each `step` takes the next range of blocks (at most `max_blocks_per_step`), checks that the
chain still extends what was indexed, and writes the range's rows together with the new
checkpoint in one database transaction: a crash leaves the previous checkpoint, and re-running a
range inserts nothing twice (rows are keyed by trade id, address, or (block hash, log index)).

By default only final blocks (with `confirmations` confirmations) are indexed, so a reorg that
reaches them is not something to undo: it halts the indexer with ReorgBeyondFinalityError.

With `follow_head=True` the indexer also indexes the blocks above the final ones, up to the head.
Two checkpoints are kept: `name` is still the last FINAL indexed block (so every reader of the
checkpoint, settlement included, keeps its meaning) and `name:head` the last indexed block; a row
whose block_number is above the final checkpoint is unconfirmed (`final_block_number`). Each step
first fetches the head checkpoint's block again; when its hash changed (or the chain got shorter)
the fork point is found by walking `indexed_blocks` (the last WINDOW_BLOCKS headers) down until a
stored hash equals the chain's, and the index is rolled back to it in one transaction:

  - every event row and every trade/participant row of the orphaned blocks is deleted, and so is
    every chain fact (batch, run, dispute) they created; a supersession or resolution they made
    is cleared (each happens once to a row, so clearing it is its undo);
  - the status of each remaining trade or participant that an orphaned event had changed is
    recomputed from its remaining events (a status is the last status event's, or the initial
    one when none remains): every status event sets an absolute status, so this equals a replay
    and needs no undo log;
  - the orphaned `indexed_blocks` are deleted and the head checkpoint moves to the fork point.

The next blocks of the new chain are then indexed as usual. A fork point below the final
checkpoint (a reorg deeper than the confirmations) halts with ReorgBeyondFinalityError before
anything is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, Dialect, Table, delete, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from ledger.chain.contract_errors import UndecodableRevert
from ledger.domain.trade import ParticipantKind
from ledger.errors import ChainError, ConfigurationError, ConflictError, LedgerError
from ledger.indexer.bulk_load import bulk_load
from ledger.indexer.decoder import (
    INDEXED_CONTRACTS,
    ZERO_HASH,
    AbiEntry,
    DisputeOpened,
    DisputeResolved,
    DisputeWindowUpdated,
    LedgerEvent,
    LogDecoder,
    ParticipantRegistered,
    ParticipantReinstated,
    ParticipantRejected,
    ParticipantSuspended,
    PriceBatchCommitted,
    PriceBatchSuperseded,
    Provenance,
    ReadingBatchCommitted,
    ReadingBatchSuperseded,
    RunCommitted,
    RunSuperseded,
    TradeCancelled,
    TradeCancelRejected,
    TradeLimitsUpdated,
    TradeRecorded,
    TradeRejected,
)
from ledger.indexer.ports import BlockHeader, LogSource
from ledger.store.chain_models import ChainBatch, ChainBatchKind, ChainDispute, ChainRun
from ledger.store.db import dialect_insert, refresh_planner_statistics
from ledger.store.models import (
    Base,
    IndexedBlock,
    IndexerCheckpoint,
    Participant,
    ParticipantEvent,
    ParticipantEventKind,
    ParticipantStatus,
    Trade,
    TradeEvent,
    TradeEventKind,
    TradeStatus,
    checksum_address,
)

logger = logging.getLogger(__name__)

WINDOW_BLOCKS = 256
PREFETCH_RANGES = 2  # ranges catch_up reads ahead of the one it decodes
PROGRESS_LOG_SECONDS = 30.0
STATISTICS_SECONDS = 3600.0  # how often `run` refreshes the query planner's statistics


class ReorgBeyondFinalityError(LedgerError):
    """The chain no longer matches a block the indexer took as final. Halt: nothing is undone."""

    code = "reorg_beyond_finality"

    def __init__(self, message: str, *, block_number: int, expected_hash: str, actual_hash: str) -> None:
        super().__init__(
            f"reorg beyond finality at block {block_number}: {message} "
            f"(expected {expected_hash}, the chain has {actual_hash})",
            block_number=block_number,
            expected_hash=expected_hash,
            actual_hash=actual_hash,
        )
        self.block_number = block_number
        self.expected_hash = expected_hash
        self.actual_hash = actual_hash


class MissingHistoryError(LedgerError):
    """An event refers to a trade or participant the index never saw: start_block is too late."""

    code = "missing_history"


class ChainReorganizedError(ChainError):
    """The chain changed while a step read it (follow_head mode): the next step rolls back."""

    code = "chain_reorganized"
    retryable = True


@dataclass(frozen=True, slots=True)
class StepResult:
    from_block: int
    to_block: int  # from_block - 1 when no new block was final
    events: int  # ledger events indexed (events in IGNORED_EVENTS are not counted)
    head: int
    rolled_back_to: int | None = None  # the fork point when this step undid a reorg first


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    block_number: int
    block_hash: str


class Indexer:
    def __init__(
        self,
        source: LogSource,
        session_factory: sessionmaker[Session],
        *,
        addresses: Sequence[str],
        abi: Sequence[AbiEntry],
        start_block: int,
        confirmations: int,
        name: str = "main",
        max_blocks_per_step: int = 2000,
        follow_head: bool = False,
    ) -> None:
        if start_block < 0 or confirmations < 0 or max_blocks_per_step < 1:
            raise ConfigurationError(
                "start_block and confirmations must be >= 0, max_blocks_per_step >= 1",
                start_block=start_block,
                confirmations=confirmations,
                max_blocks_per_step=max_blocks_per_step,
            )
        if follow_head and confirmations >= WINDOW_BLOCKS:
            # Every non-final indexed block must stay in the window, or no fork point is found.
            raise ConfigurationError(f"follow_head needs confirmations < {WINDOW_BLOCKS}", confirmations=confirmations)
        self._follow_head = follow_head
        self._head_name = head_checkpoint_name(name)
        self.name = name
        self._source = source
        self._session_factory = session_factory
        self._addresses = [checksum_address(address, field="addresses") for address in addresses]
        self._decoder = LogDecoder(abi)
        self._start_block = start_block
        # The head block is the least final a block can be: 0 confirmations means the same as 1.
        self._confirmations = max(confirmations, 1)
        self._max_blocks_per_step = max_blocks_per_step

    def step(self) -> StepResult:
        """Index the next range of final blocks (or, following the head, of any blocks), if any."""
        if self._follow_head:
            return self._step_head()
        checkpoint = self._load_checkpoint()
        first = checkpoint.block_number + 1 if checkpoint else self._start_block
        head = self._source.head_block_number()
        last = min(self._last_final(head), first + self._max_blocks_per_step - 1)
        nothing_new = StepResult(from_block=first, to_block=first - 1, events=0, head=head)

        # The checkpoint block is fetched again to prove the chain still extends it, also when
        # no new block is final: a reorg of final blocks must halt even on a quiet chain.
        numbers = ([checkpoint.block_number] if checkpoint else []) + list(range(first, last + 1))
        if not numbers:
            return nothing_new
        headers = self._source.get_blocks(numbers)
        _check_continuity(numbers, headers, checkpoint)
        if last < first:
            return nothing_new
        blocks = {header.number: header for header in (headers[1:] if checkpoint else headers)}
        events = self._decode(self._source.get_logs(self._addresses, first, last), blocks)
        rows = _project(events, blocks, self._decoder)

        with self._session_factory.begin() as session:
            self._advance_checkpoint(session, checkpoint, headers[-1])
            rows.write(session, blocks=(first, last))
            _remember_blocks(session, headers[-WINDOW_BLOCKS:])
        return StepResult(from_block=first, to_block=last, events=len(events), head=head)

    def catch_up(self, on_step: Callable[[StepResult], object] | None = None) -> None:
        """Index every block that is final now, as a three-stage pipeline (final mode only).

        For a rebuild (scripts/reindex.py): a fetcher thread reads the next ranges' headers and
        logs, this thread decodes and checks them in chain order, and a writer thread commits each
        range with its checkpoint, exactly as `step` would, one range after the other (node I/O,
        SQLite's own work and decoding overlap). Stopping it anywhere leaves a valid checkpoint.
        Into empty tables, it loads without their secondary indexes (`bulk_load`).
        """
        if self._follow_head:
            raise ConfigurationError("catch_up indexes final blocks only; step a follow_head indexer")
        checkpoint = self._load_checkpoint()
        first = checkpoint.block_number + 1 if checkpoint else self._start_block
        head = self._source.head_block_number()
        last_final = self._last_final(head)
        ranges = [
            (start, min(start + self._max_blocks_per_step - 1, last_final))
            for start in range(first, last_final + 1, self._max_blocks_per_step)
        ]

        def fetch(block_range: tuple[int, int]) -> tuple[list[BlockHeader], list[Mapping[str, Any]]]:
            start, end = block_range
            numbers = ([start - 1] if start > self._start_block else []) + list(range(start, end + 1))
            return self._source.get_blocks(numbers), self._source.get_logs(self._addresses, start, end)

        def write(
            previous: _Checkpoint | None, headers: list[BlockHeader], rows: _Rows, block_range: tuple[int, int]
        ) -> None:
            with self._session_factory.begin() as session:
                self._advance_checkpoint(session, previous, headers[-1])
                rows.write(session, blocks=block_range)
                _remember_blocks(session, headers[-WINDOW_BLOCKS:])

        with (
            bulk_load(self._session_factory),
            ThreadPoolExecutor(1, "indexer-fetch") as fetcher,
            ThreadPoolExecutor(1, "indexer-write") as writer,
        ):
            fetches = deque(fetcher.submit(fetch, block_range) for block_range in ranges[:PREFETCH_RANGES])
            pending: Future[None] | None = None
            for index, (start, end) in enumerate(ranges):
                headers, logs = fetches.popleft().result()
                if index + PREFETCH_RANGES < len(ranges):
                    fetches.append(fetcher.submit(fetch, ranges[index + PREFETCH_RANGES]))
                numbers = ([checkpoint.block_number] if checkpoint else []) + list(range(start, end + 1))
                _check_continuity(numbers, headers, checkpoint)
                blocks = {header.number: header for header in (headers[1:] if checkpoint else headers)}
                events = self._decode(logs, blocks)
                rows = _project(events, blocks, self._decoder)
                if pending is not None:
                    pending.result()  # one range at most waits to be written; its errors surface here
                pending = writer.submit(write, checkpoint, headers, rows, (start, end))
                checkpoint = _Checkpoint(headers[-1].number, headers[-1].hash)
                if on_step is not None:
                    on_step(StepResult(from_block=start, to_block=end, events=len(events), head=head))
            if pending is not None:
                pending.result()

    def run(
        self,
        stop: threading.Event,
        poll_interval: float = 2.0,
        on_rollback: Callable[[int], None] | None = None,
    ) -> None:
        """Step until `stop` is set: back to back while behind, every `poll_interval` s once caught up.

        A node or database that is unavailable is retried every `poll_interval` s; any other error
        (a reorg beyond finality, an ABI mismatch, missing history) stops the loop by raising.
        `on_rollback(fork)` is called after a step that undid a reorg down to block `fork`: the
        index is consistent with the new chain then, so records kept outside it can be repaired.
        """
        progress = _Progress(self.name)
        statistics_due = time.monotonic() + STATISTICS_SECONDS
        logger.info("indexer %s: starting (confirmations %d)", self.name, self._confirmations)
        while not stop.is_set():
            try:
                result = self.step()
            except (LedgerError, OperationalError) as exc:
                if isinstance(exc, LedgerError) and not exc.retryable:
                    logger.critical("indexer %s: halted: %s", self.name, exc)
                    raise
                logger.warning("indexer %s: step failed, retrying in %.1f s: %s", self.name, poll_interval, exc)
                stop.wait(poll_interval)
                continue
            if on_rollback is not None and result.rolled_back_to is not None:
                on_rollback(result.rolled_back_to)
            if result.events and time.monotonic() >= statistics_due:
                statistics_due = time.monotonic() + STATISTICS_SECONDS
                self._refresh_planner_statistics()
            target = self.target_block(result.head)
            progress.add(result, target)
            if result.to_block >= target:
                stop.wait(poll_interval)
        logger.info("indexer %s: stopped", self.name)

    def _refresh_planner_statistics(self) -> None:
        # The tables grow while the service runs; the statistics of its start would mislead.
        try:
            with self._session_factory.begin() as session:
                refresh_planner_statistics(session.connection())
        except OperationalError as exc:
            logger.warning("indexer %s: refreshing the query planner's statistics failed: %s", self.name, exc)

    def _step_head(self) -> StepResult:
        tip = self._load_checkpoint(self._head_name)
        head = self._source.head_block_number()
        rolled_back_to = None
        if tip is not None and (
            head < tip.block_number or self._source.get_blocks([tip.block_number])[0].hash != tip.block_hash
        ):
            rolled_back_to = self._roll_back(tip, head)
            tip = self._load_checkpoint(self._head_name)
        first = tip.block_number + 1 if tip else self._start_block
        last = min(head, first + self._max_blocks_per_step - 1)
        numbers = ([tip.block_number] if tip else []) + list(range(first, last + 1))
        nothing_new = StepResult(
            from_block=first, to_block=first - 1, events=0, head=head, rolled_back_to=rolled_back_to
        )
        if last < first:
            return nothing_new
        headers = self._source.get_blocks(numbers)
        _check_continuity(numbers, headers, tip, moved=_chain_moved)
        blocks = {header.number: header for header in (headers[1:] if tip else headers)}
        events = self._decode(self._source.get_logs(self._addresses, first, last), blocks)
        rows = _project(events, blocks, self._decoder)
        final_number = min(last, self._last_final(head))

        with self._session_factory.begin() as session:
            self._advance_checkpoint(session, tip, headers[-1], self._head_name)
            rows.write(session, blocks=(first, last))
            _remember_blocks(session, headers[-WINDOW_BLOCKS:])
            self._advance_final(session, final_number)
        return StepResult(from_block=first, to_block=last, events=len(events), head=head, rolled_back_to=rolled_back_to)

    def _advance_final(self, session: Session, number: int) -> None:
        """Move the final checkpoint up to block `number` (already in indexed_blocks), never down."""
        final = session.get(IndexerCheckpoint, self.name)
        if number < self._start_block or (final is not None and final.block_number >= number):
            return
        block_hash = session.scalar(select(IndexedBlock.hash).where(IndexedBlock.number == number))
        if block_hash is None:  # pragma: no cover - the window holds every non-final block
            raise ConflictError(f"indexer {self.name}: block {number} left the window", block_number=number)
        if final is None:
            session.add(IndexerCheckpoint(name=self.name, block_number=number, block_hash=block_hash))
        else:
            final.block_number, final.block_hash = number, block_hash

    def _roll_back(self, tip: _Checkpoint, head: int) -> int:
        """Undo the orphaned blocks above the fork point in one transaction; returns the fork point."""
        final = self._load_checkpoint()
        with self._session_factory() as session:
            stored = {
                number: block_hash
                for number, block_hash in session.execute(
                    select(IndexedBlock.number, IndexedBlock.hash).where(IndexedBlock.number <= tip.block_number)
                )
            }
        on_chain = {h.number: h.hash for h in self._source.get_blocks(sorted(n for n in stored if n <= head))}
        fork = next((n for n in sorted(stored, reverse=True) if on_chain.get(n) == stored[n]), None)
        if fork is None or (final is not None and fork < final.block_number):
            lowest = min(stored) if fork is None else fork + 1
            raise ReorgBeyondFinalityError(
                "no block of the recent window is still on the chain"
                if fork is None
                else f"the fork point {fork} is below the final checkpoint {final.block_number if final else ''}",
                block_number=lowest,
                expected_hash=stored.get(lowest, ""),
                actual_hash=on_chain.get(lowest, "(none)"),
            )
        logger.warning(
            "indexer %s: reorg: blocks %d..%d were replaced; rolling back to block %d",
            self.name,
            fork + 1,
            tip.block_number,
            fork,
        )
        with self._session_factory.begin() as session:
            self._advance_checkpoint(session, tip, BlockHeader(fork, stored[fork], "", 0), self._head_name)
            _undo_above(session, fork)
        return fork

    def target_block(self, head: int) -> int:
        """The last block a step would index with the chain at `head`: caught up once there."""
        return head if self._follow_head else self._last_final(head)

    def _last_final(self, head: int) -> int:
        # Block n is final when head - n + 1 >= confirmations.
        return head - self._confirmations + 1

    def _load_checkpoint(self, name: str | None = None) -> _Checkpoint | None:
        with self._session_factory() as session:
            row = session.get(IndexerCheckpoint, name or self.name)
            return None if row is None else _Checkpoint(row.block_number, row.block_hash)

    def _decode(self, logs: Iterable[Mapping[str, Any]], blocks: Mapping[int, BlockHeader]) -> list[LedgerEvent]:
        events = [event for event in map(self._decoder.decode, logs) if event is not None]
        for event in events:
            origin = event.provenance
            header = blocks.get(origin.block_number)
            if header is None:
                raise ChainError(
                    f"eth_getLogs returned a log of block {origin.block_number}, outside the range asked",
                    block_number=origin.block_number,
                )
            if header.hash != origin.block_hash:
                if self._follow_head:
                    raise _chain_moved("a log's block hash differs from the block's", origin.block_number)
                raise ReorgBeyondFinalityError(
                    "a log's block hash differs from the block's",
                    block_number=origin.block_number,
                    expected_hash=header.hash,
                    actual_hash=origin.block_hash,
                )
        # Applied in chain order whatever order the node answered in.
        events.sort(key=lambda event: (event.provenance.block_number, event.provenance.log_index))
        return events

    def _advance_checkpoint(
        self, session: Session, checkpoint: _Checkpoint | None, block: BlockHeader, name: str | None = None
    ) -> None:
        """Move the checkpoint to `block` only if it is still where this step read it."""
        name = name or self.name
        values = {"block_number": block.number, "block_hash": block.hash}
        if checkpoint is None:
            statement = (
                dialect_insert(session)(IndexerCheckpoint)
                .values(name=name, **values)
                .on_conflict_do_nothing()
                .returning(IndexerCheckpoint.name)
            )
            # RETURNING, not rowcount: psycopg reports -1 for ORM-enabled INSERTs.
            moved = session.execute(statement).first() is not None
        else:
            update_statement = (
                update(IndexerCheckpoint)
                .where(
                    IndexerCheckpoint.name == name,
                    IndexerCheckpoint.block_number == checkpoint.block_number,
                    IndexerCheckpoint.block_hash == checkpoint.block_hash,
                )
                .values(**values)
                .returning(IndexerCheckpoint.name)
                .execution_options(synchronize_session=False)
            )
            moved = session.execute(update_statement).first() is not None
        if not moved:
            raise ConflictError(
                f"indexer {name}: the checkpoint moved during the step; is a second indexer with this name running?",
                name=name,
            )


def indexed_sources(
    contracts: Mapping[str, str], abis: Mapping[str, Sequence[AbiEntry]]
) -> tuple[list[str], list[AbiEntry]]:
    """(addresses, ABI) for an Indexer of the deployed INDEXED_CONTRACTS: `contracts` maps
    contract name -> address (a deployment may lack MeterData and Settlement), `abis` name -> ABI."""
    names = [name for name in INDEXED_CONTRACTS if name in contracts]
    return [contracts[name] for name in names], [entry for name in names for entry in abis[name]]


def head_checkpoint_name(name: str) -> str:
    """The checkpoint of the last indexed block (final or not) of a follow_head indexer."""
    return f"{name}:head"


def final_block_number(session: Session, name: str = "main") -> int | None:
    """The last final indexed block: rows with a higher block_number are unconfirmed (follow_head)."""
    row = session.get(IndexerCheckpoint, name)
    return None if row is None else row.block_number


def _chain_moved(message: str, block_number: int) -> ChainReorganizedError:
    return ChainReorganizedError(f"the chain changed during the step: {message}", block_number=block_number)


def _check_continuity(
    numbers: Sequence[int],
    headers: Sequence[BlockHeader],
    checkpoint: _Checkpoint | None,
    moved: Callable[[str, int], LedgerError] | None = None,
) -> None:
    """`moved` builds the error for a chain that changed; without it, that is a final reorg."""
    if [header.number for header in headers] != list(numbers):
        raise ChainError("the node answered other blocks than those asked", asked=[numbers[0], numbers[-1]])
    if moved is not None:
        if checkpoint is not None and headers[0].hash != checkpoint.block_hash:
            raise moved("the checkpoint block was replaced", checkpoint.block_number)
        for parent, child in pairwise(headers):
            if child.parent_hash != parent.hash:
                raise moved(f"block {child.number} does not build on block {parent.number}", parent.number)
        return
    if checkpoint is not None and headers[0].hash != checkpoint.block_hash:
        raise ReorgBeyondFinalityError(
            "the checkpoint block was replaced",
            block_number=checkpoint.block_number,
            expected_hash=checkpoint.block_hash,
            actual_hash=headers[0].hash,
        )
    for parent, child in pairwise(headers):
        if child.parent_hash != parent.hash:
            raise ReorgBeyondFinalityError(
                f"block {child.number} does not build on the block {parent.number} the node returned",
                block_number=parent.number,
                expected_hash=child.parent_hash,
                actual_hash=parent.hash,
            )


# --- events to rows ------------------------------------------------------------------------------


@dataclass
class _Rows:
    """The rows one step writes. Dicts for bulk INSERT: every dict of a table has the same keys."""

    trades: list[dict[str, Any]] = field(default_factory=list)
    trade_events: list[dict[str, Any]] = field(default_factory=list)
    trade_status: dict[str, tuple[TradeStatus, str | None]] = field(default_factory=dict)
    participants: list[dict[str, Any]] = field(default_factory=list)
    participant_events: list[dict[str, Any]] = field(default_factory=list)
    participant_status: dict[str, ParticipantStatus] = field(default_factory=dict)
    # Chain facts of MeterData and Settlement (ledger/store/chain_models.py): a row per commitment
    # or dispute, and the later event that changes it (supersession, resolution) by key.
    batches: list[dict[str, Any]] = field(default_factory=list)
    batch_supersessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    run_supersessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    disputes: list[dict[str, Any]] = field(default_factory=list)
    dispute_resolutions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def write(self, session: Session, *, blocks: tuple[int, int] | None = None, strict: bool = True) -> None:
        """`blocks`: the range these rows are ALL the rows of. The chain facts recorded for that range
        are replaced, not merged: a service may have written some from a receipt of a block that a
        reorg has replaced since (see `write_receipt_logs`). `strict=False` (receipts) skips the
        changes of chain facts not stored yet, which the indexer applies once it gets there."""
        if blocks is not None:
            _clear_chain_facts(session, blocks[0] - 1, blocks[1])
        _insert_new(session, Trade, self.trades)
        _insert_new(session, TradeEvent, self.trade_events)
        _insert_new(session, Participant, self.participants)
        _insert_new(session, ParticipantEvent, self.participant_events)
        _insert_new(session, ChainBatch, self.batches)
        _insert_new(session, ChainRun, self.runs)
        _insert_new(session, ChainDispute, self.disputes)
        # Every status event sets an absolute status, so applying only each key's last one, after
        # the inserts, ends in the same state as applying all of them in chain order.
        if self.trade_status:
            _require_known(session, Trade.trade_id, self.trade_status, "trade")
            session.execute(
                update(Trade),
                [
                    {"trade_id": trade_id, "status": status, "replaced_by": replaced_by}
                    for trade_id, (status, replaced_by) in self.trade_status.items()
                ],
            )
        if self.participant_status:
            _require_known(session, Participant.address, self.participant_status, "participant")
            session.execute(
                update(Participant),
                [{"address": address, "status": status} for address, status in self.participant_status.items()],
            )
        # A batch or run is superseded, and a dispute resolved, at most once: these set columns.
        for key, changes, what in (
            (ChainBatch.batch_id, self.batch_supersessions, "batch"),
            (ChainRun.run_id, self.run_supersessions, "settlement run"),
            (ChainDispute.dispute_id, self.dispute_resolutions, "dispute"),
        ):
            if not changes:
                continue
            if strict:
                _require_known(session, key, changes, what)
                session.execute(update(key.class_), [{key.key: name, **values} for name, values in changes.items()])
                continue
            # A receipt's change of a row not stored yet (or being replaced by the indexer right
            # now) matches nothing: the indexer applies it when it reaches the block.
            for name, values in changes.items():
                session.execute(
                    update(key.class_).where(key == name).values(**values).execution_options(synchronize_session=False)
                )


def _project(events: Iterable[LedgerEvent], blocks: Mapping[int, BlockHeader], decoder: LogDecoder) -> _Rows:
    rows = _Rows()
    for event in events:
        origin = _origin(event.provenance)
        match event:
            case TradeRecorded():
                replaces = _unless_zero(event.replaces)
                rows.trades.append(
                    {
                        "trade_id": event.trade_id,
                        "seller": event.seller,
                        "buyer": event.buyer,
                        "delivery_start": event.delivery_start,
                        "delivery_end": event.delivery_end,
                        "energy_per_interval_wh": event.energy_per_interval_wh,
                        "price_minor_per_mwh": event.price_minor_per_mwh,
                        "nonce": str(event.nonce),
                        "deadline": str(event.deadline),
                        "replaces": replaces,
                        "status": TradeStatus.RECORDED,
                        "replaced_by": None,
                        "recorded_at": blocks[event.provenance.block_number].timestamp,
                        **origin,
                    }
                )
                rows.trade_events.append(_trade_event(event.trade_id, TradeEventKind.RECORDED, origin, replaces))
            case TradeCancelled():
                replaced_by = _unless_zero(event.replaced_by)
                status = TradeStatus.CANCELLED if replaced_by is None else TradeStatus.AMENDED
                rows.trade_status[event.trade_id] = (status, replaced_by)
                rows.trade_events.append(_trade_event(event.trade_id, TradeEventKind(status), origin, replaced_by))
            case TradeRejected():
                rows.trade_events.append(_rejection(event, origin, decoder))
            case ParticipantRegistered():
                kind = ParticipantKind.from_index(event.kind)
                rows.participants.append(
                    {
                        "address": event.account,
                        "kind": kind,
                        "status": ParticipantStatus.ACTIVE,
                        "identifier_hash": event.identifier_hash,
                        "registered_at": blocks[event.provenance.block_number].timestamp,
                        **origin,
                    }
                )
                rows.participant_events.append(
                    _participant_event(
                        event.account, ParticipantEventKind.REGISTERED, origin, kind, event.identifier_hash
                    )
                )
            case ParticipantRejected():
                pass  # changes no record; the registration queue keeps the outcome (ledger.services.registrar)
            case ParticipantSuspended():
                rows.participant_status[event.account] = ParticipantStatus.SUSPENDED
                rows.participant_events.append(
                    _participant_event(event.account, ParticipantEventKind.SUSPENDED, origin)
                )
            case ParticipantReinstated():
                rows.participant_status[event.account] = ParticipantStatus.ACTIVE
                rows.participant_events.append(
                    _participant_event(event.account, ParticipantEventKind.REINSTATED, origin)
                )
            case ReadingBatchCommitted() | PriceBatchCommitted():
                if isinstance(event, ReadingBatchCommitted):
                    batch_kind, item_count = ChainBatchKind.READINGS, event.reading_count
                else:
                    batch_kind, item_count = ChainBatchKind.PRICES, event.price_count
                rows.batches.append(
                    {
                        "batch_id": event.batch_id,
                        "batch_kind": batch_kind,
                        "period_start": event.period_start,
                        "period_end": event.period_end,
                        "root": event.root,
                        "item_count": item_count,
                        "supersedes": _unless_zero(event.supersedes),
                        "committer": event.committer,
                        **_NOT_SUPERSEDED,
                        **origin,
                    }
                )
            case ReadingBatchSuperseded() | PriceBatchSuperseded():
                rows.batch_supersessions[event.batch_id] = _supersession(event.superseded_by, event.provenance)
            case RunCommitted():
                rows.runs.append(
                    {
                        "run_id": event.run_id,
                        "period_start": event.period_start,
                        "period_end": event.period_end,
                        "version": event.version,
                        "root": event.root,
                        "inputs_hash": event.inputs_hash,
                        "line_count": event.line_count,
                        "total_receivable_minor": str(event.total_receivable_minor),
                        "total_payable_minor": str(event.total_payable_minor),
                        "dispute_window_ends": event.dispute_window_ends,
                        "committed_at": blocks[event.provenance.block_number].timestamp,
                        **_NOT_SUPERSEDED,
                        **origin,
                    }
                )
            case RunSuperseded():
                rows.run_supersessions[event.run_id] = _supersession(event.superseded_by, event.provenance)
            case DisputeOpened():
                rows.disputes.append(
                    {
                        "dispute_id": event.dispute_id,
                        "run_id": event.run_id,
                        "account": event.account,
                        "leaf_hash": event.leaf_hash,
                        "reason_hash": event.reason_hash,
                        **_UNRESOLVED,
                        **origin,
                    }
                )
            case DisputeResolved():
                rows.dispute_resolutions[event.dispute_id] = {
                    "accepted": event.accepted,
                    "resolution_hash": event.resolution_hash,
                    "resolved_block_number": event.provenance.block_number,
                    "resolved_block_hash": event.provenance.block_hash,
                    "resolved_transaction_hash": event.provenance.transaction_hash,
                    "resolved_log_index": event.provenance.log_index,
                }
            case TradeLimitsUpdated() | DisputeWindowUpdated():
                pass  # contract parameters, not records: the contracts' views are the source
            case TradeCancelRejected():
                pass  # a refused cancellation changed nothing; its outcome is the cancellation outbox's
    return rows


_NOT_SUPERSEDED: dict[str, Any] = {
    "superseded_by": None,
    "superseded_block_number": None,
    "superseded_transaction_hash": None,
    "superseded_log_index": None,
}
_UNRESOLVED: dict[str, Any] = {
    "accepted": None,
    "resolution_hash": None,
    "resolved_block_number": None,
    "resolved_block_hash": None,
    "resolved_transaction_hash": None,
    "resolved_log_index": None,
}


def _supersession(superseded_by: str, provenance: Provenance) -> dict[str, Any]:
    return {
        "superseded_by": superseded_by,
        "superseded_block_number": provenance.block_number,
        "superseded_transaction_hash": provenance.transaction_hash,
        "superseded_log_index": provenance.log_index,
    }


def _origin(provenance: Provenance) -> dict[str, Any]:
    return {
        "block_number": provenance.block_number,
        "block_hash": provenance.block_hash,
        "transaction_hash": provenance.transaction_hash,
        "transaction_index": provenance.transaction_index,
        "log_index": provenance.log_index,
    }


def _unless_zero(hash_: str) -> str | None:
    return None if hash_ == ZERO_HASH else hash_


def _trade_event(
    trade_id: str,
    kind: TradeEventKind,
    origin: dict[str, Any],
    related_trade_id: str | None = None,
    reason: tuple[str | None, str | None, str | None] = (None, None, None),
) -> dict[str, Any]:
    selector, name, data = reason
    return {
        "trade_id": trade_id,
        "event": kind,
        "related_trade_id": related_trade_id,
        "reason_selector": selector,
        "reason_name": name,
        "reason_data": data,
        **origin,
    }


def _rejection(event: TradeRejected, origin: dict[str, Any], decoder: LogDecoder) -> dict[str, Any]:
    reason = event.reason
    try:
        name: str | None = decoder.decode_error(reason)[0]
    except UndecodableRevert as exc:
        # The rejection is a fact whatever its reason: keep the raw bytes, leave the name empty.
        logger.warning("trade %s rejected for a reason the ABI cannot decode: %s", event.trade_id, exc)
        name = None
    selector = "0x" + reason[:4].hex() if len(reason) >= 4 else None
    return _trade_event(event.trade_id, TradeEventKind.REJECTED, origin, reason=(selector, name, "0x" + reason.hex()))


def _participant_event(
    address: str,
    kind: ParticipantEventKind,
    origin: dict[str, Any],
    participant_kind: ParticipantKind | None = None,
    identifier_hash: str | None = None,
) -> dict[str, Any]:
    return {
        "event": kind,
        "address": address,
        "kind": participant_kind,
        "identifier_hash": identifier_hash,
        **origin,
    }


# --- writing -------------------------------------------------------------------------------------


# INSERT .. ON CONFLICT DO NOTHING is spelled per dialect in SQLAlchemy.
def _insert_new(session: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Bulk INSERT of `rows`, skipping those whose key (any unique key) is already stored.

    Into the Table rather than the mapped class: the ORM's bulk layer adds ~50% to the insert
    time and nothing the indexer uses (rows are dicts keyed by column name). On SQLite, the
    statement SQLAlchemy compiles is run by the driver's executemany (`_SqliteInsert`).
    """
    if not rows:
        return
    table: Table = model.__table__  # type: ignore[assignment]
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        insert = _sqlite_insert(table, tuple(rows[0]), connection.dialect)
        connection.connection.driver_connection.executemany(insert.sql, map(insert.parameters, rows))  # type: ignore[union-attr]
        return
    session.execute(dialect_insert(session)(table).on_conflict_do_nothing(), rows)


@dataclass(frozen=True, slots=True)
class _SqliteInsert:
    """SQLAlchemy's INSERT .. ON CONFLICT DO NOTHING of a table and a set of columns, compiled
    once, and the positional parameters of a row for sqlite3's executemany.

    SQLAlchemy processes an executemany's parameters row by row in Python (which parameters
    are set, each value's bind processor): on a rebuild that cost as much as SQLite's own work.
    Here a row becomes a tuple in one C call; only the columns whose type converts values (the
    code lists: enum member to its value) still run their bind processor, the same function
    SQLAlchemy would call, so the stored values are the same.
    """

    sql: str
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]

    def parameters(self, row: Mapping[str, Any]) -> Sequence[Any]:
        if not self.processors:
            return self.values(row)
        values = list(self.values(row))
        for position, process in self.processors:
            values[position] = process(values[position])
        return values


@lru_cache(maxsize=64)
def _sqlite_insert(table: Table, columns: tuple[str, ...], dialect: Dialect) -> _SqliteInsert:
    defaulted = [c.name for c in table.columns if c.name not in columns and (c.default or c.onupdate)]
    if defaulted or len(columns) < 2:
        # SQLAlchemy would fill in Python-side defaults; itemgetter of one key is no tuple.
        raise ConfigurationError(f"{table.name}: the indexer's rows must set {defaulted or 'two columns or more'}")
    compiled = sqlite_insert(table).on_conflict_do_nothing().compile(dialect=dialect, column_keys=list(columns))
    keys = list(compiled.positiontup or ())
    processors = []
    for position, key in enumerate(keys):
        process = table.c[key].type.bind_processor(dialect)
        if process is not None:
            processors.append((position, process))
    return _SqliteInsert(str(compiled), itemgetter(*keys), tuple(processors))


def _require_known(session: Session, key: InstrumentedAttribute[str], values: Iterable[str], what: str) -> None:
    wanted = set(values)
    condition: ColumnElement[bool] = key.in_(wanted)
    found = set(session.scalars(select(key).where(condition)))
    missing = sorted(wanted - found)
    if missing:
        raise MissingHistoryError(
            f"events refer to {what} {', '.join(missing)} that was never indexed; start_block must be "
            "at or before the contract's deployment",
            missing=missing,
        )


def _remember_blocks(session: Session, headers: Sequence[BlockHeader]) -> None:
    _insert_new(
        session,
        IndexedBlock,
        [{"number": h.number, "hash": h.hash, "parent_hash": h.parent_hash, "timestamp": h.timestamp} for h in headers],
    )
    session.execute(delete(IndexedBlock).where(IndexedBlock.number <= headers[-1].number - WINDOW_BLOCKS))


def _clear_chain_facts(session: Session, above: int, up_to: int | None = None) -> None:
    """Forget what blocks above..up_to (inclusive; no upper bound when None) said of batches, runs
    and disputes: rows they created are deleted, the supersessions and resolutions they made are
    cleared (each happens once, so clearing its columns is its undo)."""

    def within(column: InstrumentedAttribute[Any]) -> ColumnElement[bool]:
        return (column > above) if up_to is None else column.between(above + 1, up_to)

    unset = {"synchronize_session": False}
    for model in (ChainBatch, ChainRun, ChainDispute):
        session.execute(delete(model).where(within(model.block_number)).execution_options(**unset))
    for superseded in (ChainBatch, ChainRun):
        session.execute(
            update(superseded)
            .where(within(superseded.superseded_block_number))
            .values(**_NOT_SUPERSEDED)
            .execution_options(**unset)
        )
    session.execute(
        update(ChainDispute)
        .where(within(ChainDispute.resolved_block_number))
        .values(**_UNRESOLVED)
        .execution_options(**unset)
    )


def write_receipt_logs(
    session: Session, decoder: LogDecoder, logs: Iterable[Mapping[str, Any]], block: BlockHeader
) -> None:
    """Writes the rows of a mined transaction's logs (its receipt's, all of block `block`) exactly
    as the indexer will: services call it to read their own writes before the indexer gets there.

    Inserts skip rows already stored, so the indexer and a service may write a row in either
    order. A block the indexer has stored with another hash was replaced by a reorg: its receipt
    is stale and nothing is written (the indexer has, or will have, the chain's version). Rows of a
    block the indexer has not reached are replaced by the indexer's when it does (`_Rows.write`)."""
    indexed_hash = session.scalar(select(IndexedBlock.hash).where(IndexedBlock.number == block.number))
    if indexed_hash is not None and indexed_hash != block.hash:
        logger.warning("a receipt of block %d is not on the indexed chain: not written", block.number)
        return
    events = [event for event in map(decoder.decode, logs) if event is not None]
    if any(event.provenance.block_hash != block.hash for event in events):
        raise ChainError("a receipt's log is of another block than the receipt's", block_number=block.number)
    events.sort(key=lambda event: event.provenance.log_index)
    _project(events, {block.number: block}, decoder).write(session, strict=False)


def _undo_above(session: Session, fork: int) -> None:
    """Delete what blocks above `fork` wrote and recompute the statuses their events had set."""
    trade_status_kinds = [TradeEventKind.CANCELLED, TradeEventKind.AMENDED]
    participant_status_kinds = [ParticipantEventKind.SUSPENDED, ParticipantEventKind.REINSTATED]
    touched_trades = set(
        session.scalars(
            select(TradeEvent.trade_id).where(TradeEvent.block_number > fork, TradeEvent.event.in_(trade_status_kinds))
        )
    )
    touched_participants = set(
        session.scalars(
            select(ParticipantEvent.address).where(
                ParticipantEvent.block_number > fork, ParticipantEvent.event.in_(participant_status_kinds)
            )
        )
    )
    for model in (TradeEvent, Trade, ParticipantEvent, Participant):
        session.execute(delete(model).where(model.block_number > fork).execution_options(synchronize_session=False))
    _clear_chain_facts(session, fork)
    session.execute(delete(IndexedBlock).where(IndexedBlock.number > fork))
    for trade_id in session.scalars(select(Trade.trade_id).where(Trade.trade_id.in_(touched_trades))):
        last = session.execute(
            select(TradeEvent.event, TradeEvent.related_trade_id)
            .where(TradeEvent.trade_id == trade_id, TradeEvent.event.in_(trade_status_kinds))
            .order_by(TradeEvent.block_number.desc(), TradeEvent.log_index.desc())
            .limit(1)
        ).first()
        status, replaced_by = (TradeStatus.RECORDED, None) if last is None else (TradeStatus(last[0].value), last[1])
        session.execute(
            update(Trade)
            .where(Trade.trade_id == trade_id)
            .values(status=status, replaced_by=replaced_by)
            .execution_options(synchronize_session=False)
        )
    for address in session.scalars(select(Participant.address).where(Participant.address.in_(touched_participants))):
        last_kind = session.scalar(
            select(ParticipantEvent.event)
            .where(ParticipantEvent.address == address, ParticipantEvent.event.in_(participant_status_kinds))
            .order_by(ParticipantEvent.block_number.desc(), ParticipantEvent.log_index.desc())
            .limit(1)
        )
        participant_status = (
            ParticipantStatus.SUSPENDED if last_kind == ParticipantEventKind.SUSPENDED else ParticipantStatus.ACTIVE
        )
        session.execute(
            update(Participant)
            .where(Participant.address == address)
            .values(status=participant_status)
            .execution_options(synchronize_session=False)
        )


class _Progress:
    """Logs how far the indexer is, at most every PROGRESS_LOG_SECONDS."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._since = time.monotonic()
        self._events = 0

    def add(self, result: StepResult, last_final: int) -> None:
        self._events += result.events
        elapsed = time.monotonic() - self._since
        if elapsed < PROGRESS_LOG_SECONDS:
            return
        logger.debug(
            "indexer %s: at block %d of %d final (head %d); %d events in %.0f s",
            self._name,
            max(result.to_block, result.from_block - 1),
            last_final,
            result.head,
            self._events,
            elapsed,
        )
        self._since, self._events = time.monotonic(), 0
