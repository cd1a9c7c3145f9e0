"""Auditor exports: trades, meter readings (every version) and statement lines of a period, with
their provenance, streamed as CSV or JSON.

Streaming: rows are read with `yield_per` (a server-side cursor on PostgreSQL; SQLite's cursor
steps through the result) and encoded in chunks of `chunk_rows`, so memory stays bounded by a chunk
whatever the size of the period. Each export opens its own read session and closes it when the
stream ends or is abandoned, so a response can outlive the request's dependencies.

Formats, the same columns in both (camelCase, as the API):
- CSV (RFC 4180, UTF-8, `\\r\\n`): a header row, then one row per record; NULL is an empty field.
- JSON: one array of objects, streamed (`[`, objects separated by `,\\n`, `]`), so that any JSON
  parser reads the whole document; NULL is `null`. Not NDJSON: a download must be one valid JSON
  document, and the array needs no special reader.
- Energy, money, block numbers, log indexes and versions are integers (JSON integers, decimal
  text in CSV; never floats). Nonces, deadlines and run totals are decimal strings (they are
  uint256/uint64 and exceed JSON's safe integers). Times are ISO 8601 in UTC (`+00:00`).

Provenance: a trade carries the position of its TradeRecorded log (block number and hash,
transaction hash and index, log index); a reading carries its batch (id, status, root) and the
transaction and block that committed the batch (empty while the batch is only prepared); a
statement line carries its run (id, version, status, root) and the run's commitRun transaction,
block number and block hash.

Selection, for a period [from, to) and optionally one participant:
- trades whose delivery window overlaps the period; the participant as seller or buyer;
- readings whose interval overlaps the period, every stored version, of batches prepared or
  committed; the participant's own readings;
- statement lines of one run (`run_id`), or of every committed run (the current version of its
  period) whose period overlaps; the participant's own lines (`account`).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Executable, or_, select
from sqlalchemy.orm import Session, sessionmaker

from ledger.domain.settlement import LineKind
from ledger.domain.units import INTERVAL_SECONDS, to_datetime
from ledger.errors import NotFoundError, ValidationError
from ledger.store.db import begin_read_transaction
from ledger.store.metering_models import MeterReadingRow, ReadingBatchRow
from ledger.store.models import Trade, checksum_address, hash32
from ledger.store.settlement_models import RunStatus, SettlementRun, StatementLine

MAX_PERIOD_SECONDS = 366 * 24 * 3600
CHUNK_ROWS = 1000

Value = int | str | None


@dataclass(frozen=True)
class ExportPeriod:
    """A validated selection: [start, end) in UTC Unix seconds, and optionally one participant."""

    start: int
    end: int
    participant: str | None = None

    @classmethod
    def of(cls, start: int, end: int, participant: str | None = None) -> ExportPeriod:
        """ValidationError naming `to` unless 0 < end - start <= MAX_PERIOD_SECONDS."""
        if end <= start:
            raise ValidationError("to must be after from", field="to", start=start, end=end)
        if end - start > MAX_PERIOD_SECONDS:
            raise ValidationError(
                f"the period must be at most {MAX_PERIOD_SECONDS // 86400} days",
                field="to",
                max_seconds=MAX_PERIOD_SECONDS,
            )
        if participant is not None:
            participant = checksum_address(participant, field="participant")
        return cls(start, end, participant)

    @property
    def label(self) -> str:
        """The period for a file name, e.g. 20300601T000000Z-20300701T000000Z."""
        return "-".join(to_datetime(t).strftime("%Y%m%dT%H%M%SZ") for t in (self.start, self.end))


@dataclass(frozen=True)
class Export:
    """A lazy table: the column names and rows (tuples in column order) read on iteration."""

    name: str
    columns: tuple[str, ...]
    rows: Iterator[tuple[Value, ...]]


def iso(unix_seconds: int | None) -> str | None:
    return None if unix_seconds is None else to_datetime(unix_seconds).isoformat()


# --- queries -----------------------------------------------------------------------------------

TRADE_COLUMNS = (
    "tradeId",
    "seller",
    "buyer",
    "deliveryStart",
    "deliveryEnd",
    "energyPerIntervalWh",
    "priceMinorPerMwh",
    "nonce",
    "deadline",
    "status",
    "replaces",
    "replacedBy",
    "recordedAt",
    "blockNumber",
    "blockHash",
    "transactionHash",
    "transactionIndex",
    "logIndex",
)

READING_COLUMNS = (
    "participant",
    "intervalStart",
    "injectedWh",
    "withdrawnWh",
    "quality",
    "version",
    "leafIndex",
    "batchId",
    "batchStatus",
    "batchRoot",
    "batchTransactionHash",
    "batchBlockNumber",
)

STATEMENT_COLUMNS = (
    "runId",
    "periodStart",
    "periodEnd",
    "runVersion",
    "runStatus",
    "runRoot",
    "account",
    "kind",
    "kindName",
    "ref",
    "energyWh",
    "amountMinor",
    "leafIndex",
    "runTransactionHash",
    "runBlockNumber",
    "runBlockHash",
)


class ExportService:
    """Builds the exports from the index; `sessions` should be read-only sessions."""

    def __init__(self, sessions: sessionmaker[Session], *, chunk_rows: int = CHUNK_ROWS) -> None:
        self._sessions = sessions
        self._chunk_rows = chunk_rows

    def trades(self, period: ExportPeriod) -> Export:
        query = select(
            Trade.trade_id,
            Trade.seller,
            Trade.buyer,
            Trade.delivery_start,
            Trade.delivery_end,
            Trade.energy_per_interval_wh,
            Trade.price_minor_per_mwh,
            Trade.nonce,
            Trade.deadline,
            Trade.status,
            Trade.replaces,
            Trade.replaced_by,
            Trade.recorded_at,
            Trade.block_number,
            Trade.block_hash,
            Trade.transaction_hash,
            Trade.transaction_index,
            Trade.log_index,
        ).where(Trade.delivery_start < period.end, Trade.delivery_end > period.start)
        if period.participant is not None:
            query = query.where(or_(Trade.seller == period.participant, Trade.buyer == period.participant))
        query = query.order_by(Trade.block_number, Trade.log_index)

        def row(r: Sequence[Any]) -> tuple[Value, ...]:
            values = list(r)
            for i in (3, 4, 12):
                values[i] = iso(values[i])
            values[9] = str(values[9].value)
            return tuple(values)

        return Export("trades", TRADE_COLUMNS, self._stream(query, row))

    def meter_readings(self, period: ExportPeriod) -> Export:
        r, b = MeterReadingRow, ReadingBatchRow
        query = (
            select(
                r.participant,
                r.interval_start,
                r.injected_wh,
                r.withdrawn_wh,
                r.quality,
                r.version,
                r.leaf_index,
                r.batch_id,
                b.status,
                b.root,
                b.transaction_hash,
                b.block_number,
            )
            .join(b, b.batch_id == r.batch_id)
            .where(r.interval_start < period.end, r.interval_start > period.start - INTERVAL_SECONDS)
        )
        if period.participant is not None:
            query = query.where(r.participant == period.participant)
        query = query.order_by(r.interval_start, r.participant, r.version)

        def row(values: Sequence[Any]) -> tuple[Value, ...]:
            out = list(values)
            out[1] = iso(out[1])
            out[4] = str(out[4].value)
            out[8] = str(out[8].value)
            return tuple(out)

        return Export("meter-readings", READING_COLUMNS, self._stream(query, row))

    def statements(self, period: ExportPeriod, run_id: str | None = None) -> Export:
        """NotFoundError (at once, not while streaming) for an unknown `run_id`."""
        run, line = SettlementRun, StatementLine
        query = select(
            run.run_id,
            run.period_start,
            run.period_end,
            run.version,
            run.status,
            run.root,
            line.account,
            line.kind,
            line.ref,
            line.energy_wh,
            line.amount_minor,
            line.leaf_index,
            run.transaction_hash,
            run.block_number,
            run.block_hash,
        ).join(line, line.run_id == run.run_id)
        if run_id is not None:
            run_id = hash32(run_id, field="runId")
            with self._sessions() as session:
                if session.get(SettlementRun, run_id) is None:
                    raise NotFoundError(f"no settlement run {run_id}", run_id=run_id)
            query = query.where(run.run_id == run_id)
        else:
            query = query.where(
                run.status == RunStatus.COMMITTED, run.period_start < period.end, run.period_end > period.start
            )
        if period.participant is not None:
            query = query.where(line.account == period.participant)
        query = query.order_by(run.period_start, run.run_id, line.leaf_index)

        def row(values: Sequence[Any]) -> tuple[Value, ...]:
            out = list(values)
            out[1], out[2] = iso(out[1]), iso(out[2])
            out[4] = str(out[4].value)
            kind = LineKind(out[7])  # the table's CHECK allows only LineKind values
            out[7:8] = [int(kind), kind.name.lower()]
            return tuple(out)

        return Export("statements", STATEMENT_COLUMNS, self._stream(query, row))

    def _stream(
        self, query: Executable, row: Callable[[Sequence[Any]], tuple[Value, ...]]
    ) -> Iterator[tuple[Value, ...]]:
        with self._sessions() as session:
            begin_read_transaction(session)
            result = session.execute(query.execution_options(yield_per=self._chunk_rows))
            try:
                for record in result:
                    yield row(record)
            finally:
                result.close()


# --- encoders ----------------------------------------------------------------------------------


def encode_csv(export: Export, *, chunk_rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    """The export as CSV, in chunks of up to `chunk_rows` rows (the header is the first chunk)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(export.columns)
    yield _drain(buffer)
    pending = 0
    for values in export.rows:
        writer.writerow(["" if v is None else v for v in values])
        pending += 1
        if pending >= chunk_rows:
            yield _drain(buffer)
            pending = 0
    if pending:
        yield _drain(buffer)


def encode_json(export: Export, *, chunk_rows: int = CHUNK_ROWS) -> Iterator[bytes]:
    """The export as one JSON array of objects, in chunks of up to `chunk_rows` objects."""
    parts: list[str] = ["["]
    separator = "\n"
    for values in export.rows:
        parts.append(separator)
        parts.append(json.dumps(dict(zip(export.columns, values, strict=True)), separators=(",", ":")))
        separator = ",\n"
        if len(parts) >= 2 * chunk_rows:
            yield "".join(parts).encode()
            parts = []
    parts.append("\n]\n")
    yield "".join(parts).encode()


def _drain(buffer: io.StringIO) -> bytes:
    data = buffer.getvalue().encode()
    buffer.seek(0)
    buffer.truncate()
    return data
