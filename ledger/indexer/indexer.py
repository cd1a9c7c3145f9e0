"""Indexes the ledger contract's final events into the store.

Each `step` takes the next range of final blocks (at most `max_blocks_per_step`), checks that the
chain still extends what was indexed, and writes the range's rows together with the new
checkpoint in one database transaction: a crash leaves the previous checkpoint, and re-running a
range inserts nothing twice (rows are keyed by trade id, address, or (block hash, log index)).

Only final blocks are indexed, so a reorg that reaches them is not something to undo: it halts
the indexer with ReorgBeyondFinalityError. `indexed_blocks` keeps the last WINDOW_BLOCKS headers
for the day non-final blocks are indexed and undone back to a fork point.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from ledger.chain.contract_errors import UndecodableRevert
from ledger.domain.trade import ParticipantKind
from ledger.errors import ChainError, ConfigurationError, ConflictError, LedgerError
from ledger.indexer.decoder import (
    ZERO_HASH,
    AbiEntry,
    LedgerEvent,
    LogDecoder,
    ParticipantRegistered,
    ParticipantReinstated,
    ParticipantSuspended,
    Provenance,
    TradeCancelled,
    TradeLimitsUpdated,
    TradeRecorded,
    TradeRejected,
)
from ledger.indexer.ports import BlockHeader, LogSource
from ledger.store.db import dialect_insert
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
PROGRESS_LOG_SECONDS = 30.0


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


@dataclass(frozen=True, slots=True)
class StepResult:
    from_block: int
    to_block: int  # from_block - 1 when no new block was final
    events: int  # ledger events indexed (events in IGNORED_EVENTS are not counted)
    head: int


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
    ) -> None:
        if start_block < 0 or confirmations < 0 or max_blocks_per_step < 1:
            raise ConfigurationError(
                "start_block and confirmations must be >= 0, max_blocks_per_step >= 1",
                start_block=start_block,
                confirmations=confirmations,
                max_blocks_per_step=max_blocks_per_step,
            )
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
        """Index the next range of final blocks, if any."""
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
            rows.write(session)
            _remember_blocks(session, headers[-WINDOW_BLOCKS:])
        return StepResult(from_block=first, to_block=last, events=len(events), head=head)

    def run(self, stop: threading.Event, poll_interval: float = 2.0) -> None:
        """Step until `stop` is set: back to back while behind, every `poll_interval` s once caught up.

        A node or database that is unavailable is retried every `poll_interval` s; any other error
        (a reorg beyond finality, an ABI mismatch, missing history) stops the loop by raising.
        """
        progress = _Progress(self.name)
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
            progress.add(result, self._last_final(result.head))
            if result.to_block >= self._last_final(result.head):
                stop.wait(poll_interval)
        logger.info("indexer %s: stopped", self.name)

    def _last_final(self, head: int) -> int:
        # Block n is final when head - n + 1 >= confirmations.
        return head - self._confirmations + 1

    def _load_checkpoint(self) -> _Checkpoint | None:
        with self._session_factory() as session:
            row = session.get(IndexerCheckpoint, self.name)
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
                raise ReorgBeyondFinalityError(
                    "a log's block hash differs from the block's",
                    block_number=origin.block_number,
                    expected_hash=header.hash,
                    actual_hash=origin.block_hash,
                )
        # Applied in chain order whatever order the node answered in.
        events.sort(key=lambda event: (event.provenance.block_number, event.provenance.log_index))
        return events

    def _advance_checkpoint(self, session: Session, checkpoint: _Checkpoint | None, block: BlockHeader) -> None:
        """Move the checkpoint to `block` only if it is still where this step read it."""
        values = {"block_number": block.number, "block_hash": block.hash}
        if checkpoint is None:
            statement = (
                dialect_insert(session)(IndexerCheckpoint)
                .values(name=self.name, **values)
                .on_conflict_do_nothing()
                .returning(IndexerCheckpoint.name)
            )
            # RETURNING, not rowcount: psycopg reports -1 for ORM-enabled INSERTs.
            moved = session.execute(statement).first() is not None
        else:
            update_statement = (
                update(IndexerCheckpoint)
                .where(
                    IndexerCheckpoint.name == self.name,
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
                f"indexer {self.name}: the checkpoint moved during the step; is a second indexer "
                "with this name running?",
                name=self.name,
            )


def _check_continuity(numbers: Sequence[int], headers: Sequence[BlockHeader], checkpoint: _Checkpoint | None) -> None:
    if [header.number for header in headers] != list(numbers):
        raise ChainError("the node answered other blocks than those asked", asked=[numbers[0], numbers[-1]])
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

    def write(self, session: Session) -> None:
        _insert_new(session, Trade, self.trades)
        _insert_new(session, TradeEvent, self.trade_events)
        _insert_new(session, Participant, self.participants)
        _insert_new(session, ParticipantEvent, self.participant_events)
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
            case TradeLimitsUpdated():
                pass  # no table holds market limits yet; the contract's tradeLimits() is the source
    return rows


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
    time and nothing the indexer uses (rows are dicts keyed by column name).
    """
    if rows:
        session.execute(dialect_insert(session)(model.__table__).on_conflict_do_nothing(), rows)


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
        logger.info(
            "indexer %s: at block %d of %d final (head %d); %d events in %.0f s",
            self._name,
            max(result.to_block, result.from_block - 1),
            last_final,
            result.head,
            self._events,
            elapsed,
        )
        self._since, self._events = time.monotonic(), 0
