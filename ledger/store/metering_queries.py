"""Reads and writes of meter readings and reference prices (tables in `metering_models`).

Which value is current
----------------------
Only **live** batches count: committed on chain, and not superseded by another committed batch.
(A batch that declares `supersedes` replaces the earlier batch as a whole: the earlier batch's
values that the new one does not repeat are withdrawn, as on chain, where `supersededBy` marks the
earlier batch as no longer current.) Among the values of one (participant, interval) for readings,
or one interval for prices, in live batches, the current one has the highest `version`. Prepared
batches (stored, not yet seen committed) never count, but do show in histories with their status.

Settlement takes prices as it takes readings: the current price of each interval of the period,
whichever live batch holds it (`current_prices`), so a period may be priced by several batches.

Writes are the import's unit of work (`ledger/services/metering.py`); functions never commit.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, Select, delete, exists, func, insert, select, tuple_, update
from sqlalchemy.orm import Session, aliased, selectinload

from ledger.chain.meter_data import PRICE_LEAF_ENCODING, READING_LEAF_ENCODING, PriceLeaf
from ledger.chain.meter_data import ReadingQuality as LeafQuality
from ledger.domain.merkle import StandardMerkleTree
from ledger.domain.metering import BatchIntegrityError
from ledger.domain.settlement import ReadingQuality
from ledger.domain.units import INTERVAL_SECONDS
from ledger.errors import ConflictError, NotFoundError, ValidationError
from ledger.store.chain_models import ChainBatch
from ledger.store.metering_models import (
    BatchStatus,
    MeterReadingRow,
    PriceBatchRow,
    ReadingBatchRow,
    ReferencePriceRow,
)
from ledger.store.models import checksum_address, hash32
from ledger.store.queries import MAX_PAGE_SIZE, Page

BatchRow = TypeVar("BatchRow", ReadingBatchRow, PriceBatchRow)
AnyBatch = ReadingBatchRow | PriceBatchRow
BatchModel = type[ReadingBatchRow] | type[PriceBatchRow]
Progress = Callable[[int, int], None]  # (rows stored, rows in the batch)

# Rows per INSERT statement: big enough for few round trips, small enough for bounded memory.
INSERT_CHUNK = 5_000

# Key of the PostgreSQL advisory lock that serialises the version numbering of imports.
_VERSIONS_LOCK = 0x6D65746572  # "meter"

_READING_CURSOR = re.compile(r"(\d{1,19}):(0x[0-9a-fA-F]{40})")
_PRICE_CURSOR = re.compile(r"(\d{1,19})")


@dataclass(frozen=True)
class LeafProof:
    """One value of a batch with its Merkle proof: enough to check it against the committed root
    with `StandardMerkleTree.verify(root, leaf_encoding, value, proof)`, OpenZeppelin's
    `MerkleProof`, or MeterData's `verifyReading`/`verifyPrice`."""

    batch: AnyBatch  # the root and where it was committed on chain
    leaf_encoding: list[str]
    value: list[Any]  # the leaf, in leaf_encoding order (addresses EIP-55, integers as int)
    leaf_index: int  # its position in the list the tree was built from
    proof: list[str]

    @property
    def root(self) -> str:
        return self.batch.root

    def verify(self) -> bool:
        return StandardMerkleTree.verify(self.root, self.leaf_encoding, self.value, self.proof)


# --- batches -------------------------------------------------------------------------------


def get_reading_batch(session: Session, batch_id: str) -> ReadingBatchRow | None:
    return session.get(ReadingBatchRow, hash32(batch_id, field="batch_id"))


def get_price_batch(session: Session, batch_id: str) -> PriceBatchRow | None:
    return session.get(PriceBatchRow, hash32(batch_id, field="batch_id"))


def get_batch(session: Session, model: BatchModel, batch_id: str) -> AnyBatch | None:
    """The reading (`model` ReadingBatchRow) or price batch with this id, or None."""
    if model is ReadingBatchRow:
        return get_reading_batch(session, batch_id)
    return get_price_batch(session, batch_id)


def _live(model: type[BatchRow], final_block: int | None = None) -> ColumnElement[bool]:
    """Committed, and not superseded by a committed batch of the same kind.

    With `final_block` (the index's last final block), "committed" means as the chain has it up
    to that block: the batch's commitment, as the indexer has it (`chain_batches`, rolled back on
    a reorg), is in a final block. A correction that is not final yet does not count either."""
    successor = aliased(model)
    superseded_by = [successor.supersedes == model.batch_id, successor.status == BatchStatus.COMMITTED]
    committed = model.status == BatchStatus.COMMITTED
    if final_block is not None:
        superseded_by.append(_final_commitment(successor, final_block))
        committed = committed & _final_commitment(model, final_block)
    return committed & ~exists().where(*superseded_by)


def _final_commitment(model: Any, final_block: int) -> ColumnElement[bool]:
    return exists().where(ChainBatch.batch_id == model.batch_id, ChainBatch.block_number <= final_block)


def _period(period_start: int, period_end: int) -> None:
    if period_end <= period_start:
        raise ValidationError("the period must end after it starts", field="period_end", value=period_end)


# --- readings ------------------------------------------------------------------------------


def _latest_reading_ids(*conditions: ColumnElement[bool], final_block: int | None = None) -> Select[tuple[int]]:
    """Ids of the current readings among those matching `conditions`. The conditions may only
    filter on participant and interval, the window's partition, or a reading would be compared
    with only some of its versions."""
    rank = (
        func.row_number()
        .over(
            partition_by=(MeterReadingRow.participant, MeterReadingRow.interval_start),
            order_by=(MeterReadingRow.version.desc(), MeterReadingRow.id.desc()),
        )
        .label("rank")
    )
    ranked = (
        select(MeterReadingRow.id.label("id"), rank)
        .join(ReadingBatchRow, ReadingBatchRow.batch_id == MeterReadingRow.batch_id)
        .where(_live(ReadingBatchRow, final_block), *conditions)
        .subquery()
    )
    return select(ranked.c.id).where(ranked.c.rank == 1)


def _in_period(period_start: int, period_end: int) -> ColumnElement[bool]:
    return (MeterReadingRow.interval_start >= period_start) & (MeterReadingRow.interval_start < period_end)


def latest_readings(
    session: Session, period_start: int, period_end: int, *, final_block: int | None = None
) -> list[MeterReadingRow]:
    """For each participant and interval of [period_start, period_end) with a reading, the current
    reading (highest version in a live batch; final, with `final_block`: see `_live`); ordered by
    participant, then interval."""
    _period(period_start, period_end)
    statement = (
        select(MeterReadingRow)
        .where(
            MeterReadingRow.id.in_(_latest_reading_ids(_in_period(period_start, period_end), final_block=final_block))
        )
        .order_by(MeterReadingRow.participant, MeterReadingRow.interval_start)
    )
    return list(session.scalars(statement))


def reading_batches_used(
    session: Session, period_start: int, period_end: int, *, final_block: int | None = None
) -> list[ReadingBatchRow]:
    """The live batches that hold at least one current reading of the period, in chain order."""
    _period(period_start, period_end)
    used = select(MeterReadingRow.batch_id).where(
        MeterReadingRow.id.in_(_latest_reading_ids(_in_period(period_start, period_end), final_block=final_block))
    )
    statement = (
        select(ReadingBatchRow)
        .where(ReadingBatchRow.batch_id.in_(used))
        .order_by(ReadingBatchRow.block_number, ReadingBatchRow.batch_id)
    )
    return list(session.scalars(statement))


def list_latest_readings(
    session: Session,
    *,
    participant: str | None = None,
    interval_from: int | None = None,
    interval_to: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[MeterReadingRow]:
    """Current readings with interval start in [interval_from, interval_to), ordered by interval
    then participant, keyset-paginated (the cursor is the last row's key)."""
    _limit(limit)
    conditions: list[ColumnElement[bool]] = []
    if participant is not None:
        conditions.append(MeterReadingRow.participant == checksum_address(participant, field="participant"))
    if interval_from is not None and interval_to is not None and interval_to <= interval_from:
        raise ValidationError("`to` must be after `from`", field="to", value=interval_to)
    if interval_from is not None:
        conditions.append(MeterReadingRow.interval_start >= interval_from)
    if interval_to is not None:
        conditions.append(MeterReadingRow.interval_start < interval_to)
    if cursor is not None:
        interval, address = _decode_reading_cursor(cursor)
        key = tuple_(MeterReadingRow.interval_start, MeterReadingRow.participant)
        conditions.append(key > tuple_(interval, address))
    statement = (
        select(MeterReadingRow)
        .where(MeterReadingRow.id.in_(_latest_reading_ids(*conditions)))
        .order_by(MeterReadingRow.interval_start, MeterReadingRow.participant)
        .limit(limit + 1)
    )
    rows = list(session.scalars(statement))
    items = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = _encode(f"{items[-1].interval_start}:{items[-1].participant}")
    return Page(items=items, next_cursor=next_cursor)


def reading_history(session: Session, participant: str, interval_start: int) -> list[MeterReadingRow]:
    """Every stored version of one participant's reading of one interval, oldest first, each with
    its batch (`row.batch`: status, transaction, block, source) loaded."""
    statement = (
        select(MeterReadingRow)
        .where(
            MeterReadingRow.participant == checksum_address(participant, field="participant"),
            MeterReadingRow.interval_start == interval_start,
        )
        .options(selectinload(MeterReadingRow.batch))
        .order_by(MeterReadingRow.version, MeterReadingRow.id)
    )
    return list(session.scalars(statement))


def reading_proof(session: Session, batch_id: str, participant: str, interval_start: int) -> LeafProof | None:
    """The reading of `participant` for `interval_start` in the batch with its proof, or None
    when the batch or the reading is not there. The tree is rebuilt from the batch's rows in
    leaf_index order (and kept for the next proofs of the batch)."""
    batch = get_reading_batch(session, batch_id)
    if batch is None:
        return None
    target = session.scalar(
        select(MeterReadingRow.leaf_index).where(
            MeterReadingRow.batch_id == batch.batch_id,
            MeterReadingRow.participant == checksum_address(participant, field="participant"),
            MeterReadingRow.interval_start == interval_start,
        )
    )
    if target is None:
        return None
    return _proof(session, batch, target)


def reading_leaf(participant: str, interval_start: int, injected_wh: int, withdrawn_wh: int, quality: str) -> list[Any]:
    """The leaf of a reading in READING_LEAF_ENCODING order (quality as its on-chain number)."""
    # ReadingLeaf(...).leaf_values() with the stored (checksummed) address as it is: checksumming
    # again costs a keccak per leaf, seconds for a large batch. The tests compare the two.
    leaf_quality = LeafQuality[ReadingQuality(quality).name]  # the two code lists share names
    return [participant, interval_start, injected_wh, withdrawn_wh, int(leaf_quality)]


# --- prices --------------------------------------------------------------------------------


def _latest_price_ids(*conditions: ColumnElement[bool], final_block: int | None = None) -> Select[tuple[int]]:
    """Ids of the current prices among those matching `conditions` (which may only filter on the
    interval, the window's partition): the highest version of each interval in a live batch."""
    rank = (
        func.row_number()
        .over(
            partition_by=ReferencePriceRow.interval_start,
            order_by=(ReferencePriceRow.version.desc(), ReferencePriceRow.id.desc()),
        )
        .label("rank")
    )
    ranked = (
        select(ReferencePriceRow.id.label("id"), rank)
        .join(PriceBatchRow, PriceBatchRow.batch_id == ReferencePriceRow.batch_id)
        .where(_live(PriceBatchRow, final_block), *conditions)
        .subquery()
    )
    return select(ranked.c.id).where(ranked.c.rank == 1)


class CurrentPrice(NamedTuple):
    interval_start: int
    price_minor_per_mwh: int
    version: int
    batch_id: str
    root: str  # the batch's


def current_prices(
    session: Session, period_start: int, period_end: int, *, final_block: int | None = None
) -> list[CurrentPrice]:
    """The current price of each interval of [period_start, period_end) that has one, with the
    batch holding it, ascending; final with `final_block` (see `_live`)."""
    _period(period_start, period_end)
    in_period = (ReferencePriceRow.interval_start >= period_start) & (ReferencePriceRow.interval_start < period_end)
    statement = (
        select(
            ReferencePriceRow.interval_start,
            ReferencePriceRow.price_minor_per_mwh,
            ReferencePriceRow.version,
            PriceBatchRow.batch_id,
            PriceBatchRow.root,
        )
        .join(PriceBatchRow, PriceBatchRow.batch_id == ReferencePriceRow.batch_id)
        .where(ReferencePriceRow.id.in_(_latest_price_ids(in_period, final_block=final_block)))
        .order_by(ReferencePriceRow.interval_start)
    )
    return [CurrentPrice(*row) for row in session.execute(statement)]


def prices(session: Session, batch_id: str) -> dict[int, int]:
    """Interval start -> reference price (minor/MWh) of one batch, ascending."""
    statement = (
        select(ReferencePriceRow.interval_start, ReferencePriceRow.price_minor_per_mwh)
        .where(ReferencePriceRow.batch_id == hash32(batch_id, field="batch_id"))
        .order_by(ReferencePriceRow.interval_start)
    )
    return {interval_start: price for interval_start, price in session.execute(statement)}


def list_latest_prices(
    session: Session,
    *,
    interval_from: int | None = None,
    interval_to: int | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[ReferencePriceRow]:
    """The current price of each interval in [interval_from, interval_to), ascending, paginated."""
    _limit(limit)
    conditions: list[ColumnElement[bool]] = []
    if interval_from is not None and interval_to is not None and interval_to <= interval_from:
        raise ValidationError("`to` must be after `from`", field="to", value=interval_to)
    if interval_from is not None:
        conditions.append(ReferencePriceRow.interval_start >= interval_from)
    if interval_to is not None:
        conditions.append(ReferencePriceRow.interval_start < interval_to)
    if cursor is not None:
        conditions.append(ReferencePriceRow.interval_start > _decode_price_cursor(cursor))
    statement = (
        select(ReferencePriceRow)
        .where(ReferencePriceRow.id.in_(_latest_price_ids(*conditions)))
        .order_by(ReferencePriceRow.interval_start)
        .limit(limit + 1)
    )
    rows = list(session.scalars(statement))
    items = rows[:limit]
    next_cursor = _encode(str(items[-1].interval_start)) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


def price_history(session: Session, interval_start: int) -> list[ReferencePriceRow]:
    """Every stored version of one interval's reference price, oldest first, with its batch."""
    statement = (
        select(ReferencePriceRow)
        .where(ReferencePriceRow.interval_start == interval_start)
        .options(selectinload(ReferencePriceRow.batch))
        .order_by(ReferencePriceRow.version, ReferencePriceRow.id)
    )
    return list(session.scalars(statement))


def price_proof(session: Session, batch_id: str, interval_start: int) -> LeafProof | None:
    """The price of `interval_start` in the batch with its proof, or None."""
    batch = get_price_batch(session, batch_id)
    if batch is None:
        return None
    target = session.scalar(
        select(ReferencePriceRow.leaf_index).where(
            ReferencePriceRow.batch_id == batch.batch_id, ReferencePriceRow.interval_start == interval_start
        )
    )
    if target is None:
        return None
    return _proof(session, batch, target)


def _proof(session: Session, batch: AnyBatch, target: int) -> LeafProof:
    tree = _tree(session, batch)
    return LeafProof(batch, tree.leaf_encoding, list(tree.values[target]), target, tree.get_proof(target))


# Trees of recent batches: a proof of a 100k-leaf batch costs ~2 s to rebuild, and proofs are
# asked for in runs (every participant of a batch). Safe to keep: a batch's rows never change
# (its id is the hash of its content), and a cached tree is used only for the same root.
_TREE_CACHE_SIZE = 8
_trees: OrderedDict[tuple[str, str], StandardMerkleTree] = OrderedDict()
_trees_lock = threading.Lock()


def _tree(session: Session, batch: AnyBatch) -> StandardMerkleTree:
    key = (batch.batch_id, batch.root)
    with _trees_lock:
        if key in _trees:
            _trees.move_to_end(key)
            return _trees[key]
    tree = _build_tree(session, batch)
    with _trees_lock:
        _trees[key] = tree
        while len(_trees) > _TREE_CACHE_SIZE:
            _trees.popitem(last=False)
    return tree


def _build_tree(session: Session, batch: AnyBatch) -> StandardMerkleTree:
    """The batch's tree from its rows in leaf_index order, which must rebuild the committed root
    exactly: anything else means the store was altered, and its proofs would not verify."""
    if isinstance(batch, ReadingBatchRow):
        leaf_indexes, values = _reading_values(session, batch.batch_id)
        encoding = READING_LEAF_ENCODING
    else:
        leaf_indexes, values = _price_values(session, batch.batch_id)
        encoding = PRICE_LEAF_ENCODING
    if leaf_indexes != list(range(len(values))):
        raise BatchIntegrityError("the batch's leaf indexes have gaps", batch_id=batch.batch_id)
    tree = StandardMerkleTree.of(values, encoding)
    if tree.root != batch.root:
        raise BatchIntegrityError("the batch's stored rows do not rebuild its root", batch_id=batch.batch_id)
    return tree


def content_root(session: Session, kind: str, batch_id: str) -> tuple[str | None, int]:
    """(the root the stored rows of batch `batch_id` rebuild, their count); (None, 0) when no row
    is stored. `kind` is "readings" or "prices". Leaves are sorted by the tree, so the order of the
    rows does not matter: any changed value changes the root."""
    _, values = _reading_values(session, batch_id) if kind == "readings" else _price_values(session, batch_id)
    if not values:
        return None, 0
    encoding = READING_LEAF_ENCODING if kind == "readings" else PRICE_LEAF_ENCODING
    return StandardMerkleTree.of(values, encoding).root, len(values)


def _reading_values(session: Session, batch_id: str) -> tuple[list[int], list[list[Any]]]:
    reading = MeterReadingRow
    rows = session.execute(
        select(
            reading.participant,
            reading.interval_start,
            reading.injected_wh,
            reading.withdrawn_wh,
            reading.quality,
            reading.leaf_index,
        )
        .where(reading.batch_id == batch_id)
        .order_by(reading.leaf_index)
    ).all()
    return [r.leaf_index for r in rows], [reading_leaf(*r[:5]) for r in rows]


def _price_values(session: Session, batch_id: str) -> tuple[list[int], list[list[Any]]]:
    price = ReferencePriceRow
    rows = session.execute(
        select(price.interval_start, price.price_minor_per_mwh, price.leaf_index)
        .where(price.batch_id == batch_id)
        .order_by(price.leaf_index)
    ).all()
    return [r.leaf_index for r in rows], [PriceLeaf(r[0], r[1]).leaf_values() for r in rows]


# --- writes: the import's unit of work -----------------------------------------------------


def lock_versions(session: Session) -> None:
    """Serialises imports until the transaction ends, so that two never number the same
    (participant, interval) alike. SQLite transactions are serial already (BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(_VERSIONS_LOCK)))


def reading_versions(session: Session, period_start: int, period_end: int) -> dict[tuple[str, int], int]:
    """(participant, interval start) -> the highest version stored (any batch status) in the period."""
    statement = (
        select(MeterReadingRow.participant, MeterReadingRow.interval_start, func.max(MeterReadingRow.version))
        .where(_in_period(period_start, period_end))
        .group_by(MeterReadingRow.participant, MeterReadingRow.interval_start)
    )
    return {(participant, interval): version for participant, interval, version in session.execute(statement)}


def price_versions(session: Session, period_start: int, period_end: int) -> dict[int, int]:
    """Interval start -> the highest price version stored (any batch status) in the period."""
    statement = (
        select(ReferencePriceRow.interval_start, func.max(ReferencePriceRow.version))
        .where(ReferencePriceRow.interval_start >= period_start, ReferencePriceRow.interval_start < period_end)
        .group_by(ReferencePriceRow.interval_start)
    )
    return {interval: version for interval, version in session.execute(statement)}


def add_batch(
    session: Session,
    batch: AnyBatch,
    rows: Sequence[dict[str, Any]],
    *,
    progress: Progress | None = None,
) -> None:
    """Inserts a prepared batch and its rows (column values, `batch_id` filled in here)."""
    if batch.status is not BatchStatus.PREPARED:
        raise ConflictError("a batch is stored as prepared, then marked committed", batch_id=batch.batch_id)
    row_model = MeterReadingRow if isinstance(batch, ReadingBatchRow) else ReferencePriceRow
    session.add(batch)
    session.flush()  # the batch before its rows: they reference it
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = [{**row, "batch_id": batch.batch_id} for row in rows[start : start + INSERT_CHUNK]]
        session.execute(insert(row_model), chunk)
        if progress is not None:
            progress(start + len(chunk), len(rows))


def mark_committed(
    session: Session, model: BatchModel, batch_id: str, transaction_hash: str, block_number: int
) -> AnyBatch:
    """Records where a prepared batch was committed on chain; marking it again is a no-op."""
    batch = get_batch(session, model, batch_id)
    if batch is None:
        raise NotFoundError("no such batch", batch_id=batch_id)
    if batch.status is BatchStatus.PREPARED:
        session.execute(
            update(model)
            .where(model.batch_id == batch.batch_id, model.status == BatchStatus.PREPARED)
            .values(
                status=BatchStatus.COMMITTED,
                transaction_hash=hash32(transaction_hash, field="transaction_hash"),
                block_number=block_number,
            )
        )
        session.refresh(batch)
    return batch


def delete_prepared(session: Session, model: BatchModel, batch_id: str) -> None:
    """Removes a prepared batch and its rows: the chain refused it, so it will never count."""
    batch = get_batch(session, model, batch_id)
    if batch is None:
        return
    if batch.status is not BatchStatus.PREPARED:
        raise ConflictError("a committed batch stays", batch_id=batch.batch_id)
    row_model = MeterReadingRow if model is ReadingBatchRow else ReferencePriceRow
    session.execute(delete(row_model).where(row_model.batch_id == batch.batch_id))
    session.delete(batch)


# --- helpers -------------------------------------------------------------------------------


def _limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE_SIZE}", field="limit", value=limit)


def _encode(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode(cursor: str, pattern: re.Pattern[str]) -> re.Match[str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.b64decode(padded, altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    match = pattern.fullmatch(text)
    if match is None or int(match[1]) > 2**63 - 1 or int(match[1]) % INTERVAL_SECONDS:
        raise ValidationError("cursor is not one this API returned", field="cursor", value=cursor)
    return match


def _decode_reading_cursor(cursor: str) -> tuple[int, str]:
    match = _decode(cursor, _READING_CURSOR)
    return int(match[1]), checksum_address(match[2], field="cursor")


def _decode_price_cursor(cursor: str) -> int:
    return int(_decode(cursor, _PRICE_CURSOR)[1])
