"""Importing meter readings and reference prices: rows in the store, one Merkle root on chain.

Batch identity
--------------
The values of a batch are sorted canonically (readings by participant address, lower-case hex,
then interval; prices by interval), and that order is the list given to `StandardMerkleTree.of`:
`leaf_index` is a value's position in it. The batch id is

    keccak256(abi.encode(bytes32 kind, uint64 periodStart, uint64 periodEnd, bytes32 root,
                         uint32 count, bytes32 supersedes))

with `kind` = keccak256("GridLedger.ReadingBatch.v1") or ("GridLedger.PriceBatch.v1"). The root
commits to the set of values, so the same values give the same id whatever their order, file
format or source (CSV, JSON, API): importing them again is a no-op. `supersedes` is part of the
id because it changes what the batch means.

Crash safety
------------
An import (a) stores the batch as "prepared" with all its rows in one transaction, (b) commits
its root on chain in one transaction whatever its size, (c) marks it "committed" with that
transaction and block. Importing the same values again finds the batch: committed, it is returned
as it is; prepared (a crash between a and c), the chain is asked first and the batch is adopted if
it is committed there, and only otherwise sent. A commit the chain refuses for good (e.g. the
superseded batch was corrected already) removes the prepared batch, so a refused import leaves
nothing behind.

After a reorg (`ledger.services.reconcile`) a committed batch whose commit the chain no longer
has is prepared again: with its transaction hash while that transaction waits in the mempool
(an import then waits for it instead of sending another), without once it is gone (an import
sends it again). The contract refuses a batch id twice, so no batch is ever committed twice.

Versions and corrections
------------------------
A correction is a newer batch: each of its values gets version = (highest version of that
participant and interval, or that interval for prices, stored so far, in any batch) + 1, so
versions follow import order and never tie (imports are serialised while numbering). The
current value is the highest version in a live batch (`ledger/store/metering_queries.py`). A
value repeated unchanged in a later batch still gets the next version: the later batch is its
newest provenance. The service never sets `supersedes` by itself: the contract lets a batch
supersede one batch, once, so it is reserved for a caller who declares a full replacement, and
then the replaced batch's values that the new one leaves out are withdrawn.

Participants: a reading's participant must be registered (active or suspended: a suspended
participant's meter still runs). The index answers first (a registration is final once
indexed, and cannot be undone); addresses it does not know yet are asked of the chain.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from eth_abi import encode as abi_encode
from eth_utils import is_address, keccak
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ledger import errors
from ledger.chain.log_source import JsonRpcLogSource
from ledger.chain.meter_data import PRICE_LEAF_ENCODING, READING_LEAF_ENCODING, MeterBatch, MeterDataContract
from ledger.chain.transactions import Receipt
from ledger.domain.merkle import StandardMerkleTree
from ledger.domain.metering import (
    FileFormat,
    PricesFile,
    ReadingsFile,
    check_prices,
    check_readings,
    parse_prices,
    parse_prices_json,
    parse_readings,
    parse_readings_json,
)
from ledger.domain.settlement import MeterReading, ReadingQuality
from ledger.domain.trade import ParticipantStatus
from ledger.domain.units import INTERVAL_SECONDS, ZERO_ID
from ledger.services.chain_facts import ChainFacts
from ledger.services.context import LedgerContext
from ledger.store import metering_queries
from ledger.store.metering_models import BatchStatus, PriceBatchRow, ReadingBatchRow
from ledger.store.metering_queries import AnyBatch
from ledger.store.models import Participant, hash32

log = logging.getLogger(__name__)

BatchKind = Literal["readings", "prices"]
Outcome = Literal["committed", "resumed", "existing"]
Progress = Callable[[int, int], None]  # (rows stored, rows in the batch)

READING_BATCH_KIND = keccak(text="GridLedger.ReadingBatch.v1")
PRICE_BATCH_KIND = keccak(text="GridLedger.PriceBatch.v1")
BATCH_ID_ENCODING = ["bytes32", "uint64", "uint64", "bytes32", "uint32", "bytes32"]

MAX_SOURCE_LENGTH = 255
_UINT32_MAX = 2**32 - 1
# How many blocks one eth_getLogs asks for when looking for a batch's commit after a crash:
# public nodes cap the range of a query (commonly at 10,000 blocks).
LOG_SEARCH_WINDOW = 5_000


# --- the batch, planned (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class BatchPlan:
    """A batch as it will be stored and committed: canonical order, tree root, id."""

    kind: BatchKind
    batch_id: str
    period_start: int
    period_end: int
    root: str
    supersedes: str | None
    rows: list[dict[str, Any]]  # column values in leaf order, without batch id and version

    @property
    def count(self) -> int:
        return len(self.rows)


def batch_id_of(
    kind: BatchKind, period_start: int, period_end: int, root: str, count: int, supersedes: str | None
) -> str:
    tag = READING_BATCH_KIND if kind == "readings" else PRICE_BATCH_KIND
    values = [tag, period_start, period_end, bytes.fromhex(root[2:]), count, bytes.fromhex((supersedes or ZERO_ID)[2:])]
    return "0x" + keccak(abi_encode(BATCH_ID_ENCODING, values)).hex()


def plan_reading_batch(readings: Sequence[MeterReading], supersedes: str | None = None) -> BatchPlan:
    """The batch of checked readings (`ledger.domain.metering.check_readings`)."""
    ordered = sorted(readings, key=lambda r: (r.participant.lower(), r.interval_start))
    rows: list[dict[str, Any]] = []
    values: list[list[Any]] = []
    for index, r in enumerate(ordered):
        quality = ReadingQuality(r.quality)
        rows.append(
            {
                "participant": r.participant,
                "interval_start": r.interval_start,
                "injected_wh": r.injected_wh,
                "withdrawn_wh": r.withdrawn_wh,
                "quality": quality,
                "leaf_index": index,
            }
        )
        values.append(
            metering_queries.reading_leaf(r.participant, r.interval_start, r.injected_wh, r.withdrawn_wh, quality)
        )
    period_start = min(r.interval_start for r in ordered)
    period_end = max(r.interval_start for r in ordered) + INTERVAL_SECONDS
    return _plan("readings", values, READING_LEAF_ENCODING, period_start, period_end, rows, supersedes)


def plan_price_batch(
    prices: Mapping[int, int], period_start: int, period_end: int, supersedes: str | None = None
) -> BatchPlan:
    """The batch of checked prices (`ledger.domain.metering.check_prices`)."""
    rows = [
        {"interval_start": interval_start, "price_minor_per_mwh": prices[interval_start], "leaf_index": index}
        for index, interval_start in enumerate(sorted(prices))
    ]
    values = [[r["interval_start"], r["price_minor_per_mwh"]] for r in rows]
    return _plan("prices", values, PRICE_LEAF_ENCODING, period_start, period_end, rows, supersedes)


def _plan(
    kind: BatchKind,
    values: list[list[Any]],
    encoding: Sequence[str],
    period_start: int,
    period_end: int,
    rows: list[dict[str, Any]],
    supersedes: str | None,
) -> BatchPlan:
    if len(values) > _UINT32_MAX:
        raise errors.ValidationError(f"a batch holds at most {_UINT32_MAX} values", field=kind)
    supersedes = None if supersedes is None else hash32(supersedes, field="supersedes")
    root = StandardMerkleTree.of(values, encoding).root
    batch_id = batch_id_of(kind, period_start, period_end, root, len(values), supersedes)
    return BatchPlan(kind, batch_id, period_start, period_end, root, supersedes, rows)


# --- results -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchResult:
    """A stored batch, and what this import did: committed it now (`committed`), finished an
    earlier import that had stopped half-way (`resumed`), or found it complete (`existing`)."""

    kind: BatchKind
    batch_id: str
    period_start: int
    period_end: int
    root: str
    count: int
    supersedes: str | None
    source: str
    status: BatchStatus
    transaction_hash: str | None
    block_number: int | None
    created_at: datetime
    outcome: Outcome

    @classmethod
    def of(cls, kind: BatchKind, row: AnyBatch, outcome: Outcome) -> BatchResult:
        return cls(
            kind=kind,
            batch_id=row.batch_id,
            period_start=row.period_start,
            period_end=row.period_end,
            root=row.root,
            count=row.count,
            supersedes=row.supersedes,
            source=row.source,
            status=row.status,
            transaction_hash=row.transaction_hash,
            block_number=row.block_number,
            created_at=row.created_at,
            outcome=outcome,
        )


# --- the two kinds of batch ----------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    name: BatchKind
    model: metering_queries.BatchModel
    commit: Callable[[MeterDataContract, AnyBatch], Receipt]
    view: Callable[[MeterDataContract, str], MeterBatch]
    event: str  # the commit event's signature, to find a commit whose receipt was lost
    count_column: str

    @property
    def topic(self) -> str:
        return "0x" + keccak(text=self.event).hex()


def _commit_readings(contract: MeterDataContract, batch: AnyBatch) -> Receipt:
    return contract.commit_reading_batch(
        batch.batch_id, batch.period_start, batch.period_end, batch.root, batch.count, batch.supersedes or ZERO_ID
    )


def _commit_prices(contract: MeterDataContract, batch: AnyBatch) -> Receipt:
    return contract.commit_price_batch(
        batch.batch_id, batch.period_start, batch.period_end, batch.root, batch.count, batch.supersedes or ZERO_ID
    )


READINGS = _Kind(
    "readings",
    ReadingBatchRow,
    _commit_readings,
    MeterDataContract.reading_batch,
    "ReadingBatchCommitted(bytes32,uint64,uint64,bytes32,uint32,bytes32,address)",
    "reading_count",
)
PRICES = _Kind(
    "prices",
    PriceBatchRow,
    _commit_prices,
    MeterDataContract.price_batch,
    "PriceBatchCommitted(bytes32,uint64,uint64,bytes32,uint32,bytes32,address)",
    "price_count",
)


# --- the service ---------------------------------------------------------------------------


class RegisteredParticipants(Container[str]):
    """`address in registered` for EIP-55 addresses, for one import: the index first, then the
    chain. Registered addresses go into `known`, which outlives the import (a registration
    cannot be undone); unknown ones are remembered for this import only (one may register later)."""

    def __init__(self, context: LedgerContext, known: set[str]) -> None:
        self._context = context
        self._known = known
        self._unknown: set[str] = set()
        self._index_read = False

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        if address in self._known:
            return True
        if address in self._unknown or not is_address(address):
            return False
        if not self._index_read:
            self._index_read = True
            with self._context.read_sessions() as session:
                self._known.update(session.scalars(select(Participant.address)))
            if address in self._known:
                return True
        if self._context.operator.participant(address).status is ParticipantStatus.NONE:
            self._unknown.add(address)
            return False
        self._known.add(address)
        return True


class MeteringService:
    def __init__(self, context: LedgerContext) -> None:
        self.context = context
        self._known_participants: set[str] = set()
        self._chain_facts = ChainFacts(context.rpc, context.deployment)
        # One import at a time in this process: a second import of the same batch waits and then
        # finds it committed, instead of racing it to the chain.
        self._lock = threading.Lock()

    def registered_participants(self) -> RegisteredParticipants:
        return RegisteredParticipants(self.context, self._known_participants)

    # --- parsing, with this ledger's participants ---------------------------------------

    def parse_readings(self, content: str | bytes | Mapping[str, Any], fmt: FileFormat = "json") -> ReadingsFile:
        """A readings file (or decoded JSON body) checked against the registered participants."""
        if isinstance(content, Mapping):
            return parse_readings_json(content, self.registered_participants())
        return parse_readings(content, fmt, self.registered_participants())

    def parse_prices(
        self,
        content: str | bytes | Mapping[str, Any],
        fmt: FileFormat = "json",
        *,
        period_start: int | None = None,
        period_end: int | None = None,
    ) -> PricesFile:
        if isinstance(content, Mapping):
            return parse_prices_json(content, period_start=period_start, period_end=period_end)
        return parse_prices(content, fmt, period_start=period_start, period_end=period_end)

    # --- imports --------------------------------------------------------------------------

    def import_readings(
        self,
        readings: Sequence[MeterReading],
        *,
        source: str,
        supersedes: str | None = None,
        progress: Progress | None = None,
    ) -> BatchResult:
        """Stores and commits one batch of readings; see the module doc for ids and recovery.
        Raises MeteringFileError (nothing stored) for readings a file would be refused for."""
        check_readings(readings, self.registered_participants())
        return self._import(READINGS, plan_reading_batch(readings, supersedes), source, progress)

    def import_prices(
        self,
        prices: Mapping[int, int],
        period_start: int,
        period_end: int,
        *,
        source: str,
        supersedes: str | None = None,
        progress: Progress | None = None,
    ) -> BatchResult:
        """Stores and commits the reference prices of [period_start, period_end), one per interval."""
        check_prices(prices, period_start, period_end)
        return self._import(PRICES, plan_price_batch(prices, period_start, period_end, supersedes), source, progress)

    def _import(self, kind: _Kind, plan: BatchPlan, source: str, progress: Progress | None) -> BatchResult:
        if not source or len(source) > MAX_SOURCE_LENGTH:
            raise errors.ValidationError(f"source must be 1 to {MAX_SOURCE_LENGTH} characters", field="source")
        with self._lock:
            with self.context.sessions() as session:
                stored = metering_queries.get_batch(session, kind.model, plan.batch_id)
            if stored is not None and stored.status is BatchStatus.COMMITTED:
                return BatchResult.of(kind.name, stored, "existing")
            if stored is None:
                self._check_supersedes(kind, plan)
                stored, created = self._prepare(kind, plan, source, progress)
                if not created and stored.status is BatchStatus.COMMITTED:
                    return BatchResult.of(kind.name, stored, "existing")
                return self._commit(kind, stored, resumed=not created)
            return self._commit(kind, stored, resumed=True)

    def _check_supersedes(self, kind: _Kind, plan: BatchPlan) -> None:
        """Refuses before anything is stored what the contract would refuse."""
        if plan.supersedes is None:
            return
        earlier = kind.view(self._contract(kind), plan.supersedes)
        if not earlier.exists:
            raise errors.UnknownBatch(
                f"supersedes names no committed {kind.name} batch", field="supersedes", supersedes=plan.supersedes
            )
        if earlier.superseded_by != ZERO_ID:
            raise errors.BatchAlreadySuperseded(
                "that batch was corrected already: supersede its latest version",
                field="supersedes",
                supersedes=plan.supersedes,
                superseded_by=earlier.superseded_by,
            )

    def _prepare(self, kind: _Kind, plan: BatchPlan, source: str, progress: Progress | None) -> tuple[AnyBatch, bool]:
        """Step (a): the batch and its rows, numbered, in one transaction. (row, True) when stored
        now; (the stored row, False) when another process stored it first."""
        try:
            with self.context.sessions.begin() as session:
                metering_queries.lock_versions(session)
                stored = metering_queries.get_batch(session, kind.model, plan.batch_id)
                if stored is not None:
                    return stored, False
                rows = self._numbered(session, plan)
                batch = kind.model(
                    batch_id=plan.batch_id,
                    period_start=plan.period_start,
                    period_end=plan.period_end,
                    root=plan.root,
                    supersedes=plan.supersedes,
                    source=source,
                    status=BatchStatus.PREPARED,
                    **{kind.count_column: plan.count},
                )
                metering_queries.add_batch(session, batch, rows, progress=progress)
                return batch, True
        except IntegrityError:
            # Another process stored the same batch between our look and our insert.
            with self.context.sessions() as session:
                stored = metering_queries.get_batch(session, kind.model, plan.batch_id)
            if stored is None:
                raise
            return stored, False

    @staticmethod
    def _numbered(session: Session, plan: BatchPlan) -> list[dict[str, Any]]:
        if plan.kind == "readings":
            readings = metering_queries.reading_versions(session, plan.period_start, plan.period_end)
            return [
                {**row, "version": readings.get((row["participant"], row["interval_start"]), 0) + 1}
                for row in plan.rows
            ]
        prices = metering_queries.price_versions(session, plan.period_start, plan.period_end)
        return [{**row, "version": prices.get(row["interval_start"], 0) + 1} for row in plan.rows]

    def _commit(self, kind: _Kind, batch: AnyBatch, *, resumed: bool) -> BatchResult:
        """Steps (b) and (c), for a batch stored as prepared."""
        contract = self._contract(kind)
        outcome: Outcome = "resumed" if resumed else "committed"
        if resumed:
            on_chain = kind.view(contract, batch.batch_id)
            if on_chain.exists:
                return self._adopt(kind, batch, on_chain, outcome)
            if batch.transaction_hash is not None and self._pending(contract, batch.transaction_hash):
                # A reorg sent our commit back to the mempool (ledger.services.reconcile): wait for
                # it rather than race it with a second one, which would revert as a duplicate.
                awaited = contract.sender.wait([batch.transaction_hash])[batch.transaction_hash]
                if awaited.status == 1:
                    return self._mark_committed(kind, batch, awaited, outcome)
        try:
            receipt = kind.commit(contract, batch)
        except errors.DuplicateBatch:
            # Committed meanwhile: by an earlier transaction of ours still pending at the crash,
            # or by another process importing the same values.
            return self._adopt(kind, batch, kind.view(contract, batch.batch_id), outcome)
        except errors.LedgerError as exc:
            if not exc.retryable:
                on_chain = kind.view(contract, batch.batch_id)
                if on_chain.exists:
                    # Our earlier commit (a reorg sent it back to the mempool) was mined first in
                    # the same block: replayed on the block's parent, the revert shows no reason.
                    return self._adopt(kind, batch, on_chain, outcome)
                with self.context.sessions.begin() as session:
                    metering_queries.delete_prepared(session, kind.model, batch.batch_id)
                log.warning("the chain refused %s batch %s (%s): not stored", kind.name, batch.batch_id, exc.code)
            raise
        return self._mark_committed(kind, batch, receipt, outcome)

    def _mark_committed(self, kind: _Kind, batch: AnyBatch, receipt: Receipt, outcome: Outcome) -> BatchResult:
        block = self._chain_facts.block(receipt.block_hash)
        with self.context.sessions.begin() as session:
            row = metering_queries.mark_committed(
                session, kind.model, batch.batch_id, receipt.transaction_hash, receipt.block_number
            )
            self._chain_facts.write(session, receipt.logs, block)
        return BatchResult.of(kind.name, row, outcome)

    def locate_commit(self, kind_name: BatchKind, batch_id: str) -> Mapping[str, Any] | None:
        """The chain's commit log of the batch (as eth_getLogs answers it), or None when the chain
        does not have the batch: after a reorg, where its commit is now, if anywhere."""
        kind = READINGS if kind_name == "readings" else PRICES
        if not kind.view(self._contract(kind), batch_id).exists:
            return None
        return self._find_commit(kind, batch_id)

    @staticmethod
    def _pending(contract: MeterDataContract, tx_hash: str) -> bool:
        answer = contract.sender.rpc.call("eth_getTransactionByHash", tx_hash)
        return answer is not None and answer.get("blockNumber") is None

    def _adopt(self, kind: _Kind, batch: AnyBatch, on_chain: MeterBatch, outcome: Outcome) -> BatchResult:
        """Marks committed a prepared batch the chain holds already, at its commit's location."""
        if on_chain.root != batch.root:
            raise errors.ConflictError(
                "the chain holds this batch id with another root", batch_id=batch.batch_id, root=on_chain.root
            )
        log_entry = self._find_commit(kind, batch.batch_id)
        block = self._chain_facts.block(log_entry["blockHash"])
        with self.context.sessions.begin() as session:
            row = metering_queries.mark_committed(
                session, kind.model, batch.batch_id, log_entry["transactionHash"], int(log_entry["blockNumber"], 16)
            )
            self._chain_facts.write(session, [log_entry], block)
        log.info("%s batch %s was committed on chain already: marked committed", kind.name, batch.batch_id)
        return BatchResult.of(kind.name, row, outcome)

    def _find_commit(self, kind: _Kind, batch_id: str) -> Mapping[str, Any]:
        """The batch's commit log (as eth_getLogs answers it), searched backwards from the head
        (a lost commit is recent) in windows that public nodes accept."""
        contract = self._contract(kind)
        first_block = self.context.deployment.contracts["MeterData"].block_number
        with JsonRpcLogSource(self.context.rpc.url) as source:
            to_block = source.head_block_number()
            while to_block >= first_block:
                from_block = max(first_block, to_block - LOG_SEARCH_WINDOW + 1)
                for entry in source.get_logs([contract.address], from_block, to_block):
                    topics = [topic.lower() for topic in entry["topics"]]
                    if topics[:2] == [kind.topic, batch_id]:
                        return entry
                to_block = from_block - 1
        raise errors.ChainError("the batch is committed on chain but its commit event was not found", batch_id=batch_id)

    def _contract(self, kind: _Kind) -> MeterDataContract:
        # Readings are the meter oracle's to commit; reference prices the market operator's.
        return self.context.meter_oracle if kind is READINGS else self.context.price_publisher
