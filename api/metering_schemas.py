"""Bodies of the metering routes: meter readings and reference prices, their batches and proofs.

Requests carry readings and prices as the JSON file format does (`ledger/domain/metering.py`); the
items are checked there, not by pydantic, so that a refused body names each bad item by its index
and member, all at once, exactly as a refused file does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PlainValidator, WithJsonSchema

from api.problems import problem_for
from api.schemas import RequestModel, ResponseModel
from api.types import MAX_ISO_UNIX, TIME_EXAMPLE, Bytes32, Timestamp, UtcTime, parse_time
from ledger.domain.metering import MAX_QUANTITY, MeteringFileError
from ledger.domain.settlement import ReadingQuality
from ledger.services.metering import BatchResult
from ledger.store.metering_models import MeterReadingRow, ReadingBatchRow, ReferencePriceRow
from ledger.store.metering_queries import AnyBatch, LeafProof

# A body is at most 4 MiB (api.app.MAX_BODY_BYTES); a reading is ~150 bytes of JSON.
MAX_ITEMS = 25_000

BatchKindName = Literal["readings", "prices"]
BatchStatusName = Literal["prepared", "committed"]
QualityName = Literal["measured", "estimated", "substituted"]


def _interval_time(value: Any) -> int:
    """An interval start: ISO 8601 with offset, or whole Unix seconds (an integer or digits)
    up to the last second ISO 8601 can name, so that every answer can render it."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_ISO_UNIX:
            raise ValueError(f"must be Unix seconds from 0 to {MAX_ISO_UNIX} (9999-12-31T23:59:59Z)")
        return value
    return parse_time(value)


IntervalTime = Annotated[
    int,
    PlainValidator(_interval_time),
    WithJsonSchema(
        {
            "oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer", "minimum": 0}],
            "description": "ISO 8601 with a UTC offset, or Unix seconds; a multiple of 900 s",
            "examples": [TIME_EXAMPLE],
        }
    ),
]

_INTERVAL_SCHEMA = {
    "oneOf": [{"type": "string", "format": "date-time"}, {"type": "integer", "minimum": 0}],
    "description": "start of the 15-minute interval: ISO 8601 with a UTC offset, or Unix seconds",
}
# No "maximum": OpenAPI documents render it as a float (2**63 - 1 becomes 2**63); it is in words.
_WHOLE_NUMBER = {"type": "integer", "minimum": 0}
ReadingItem = Annotated[
    Any,
    WithJsonSchema(
        {
            "type": "object",
            "title": "MeterReadingIn",
            "required": ["participant", "intervalStart", "injectedWh", "withdrawnWh"],
            "additionalProperties": False,
            "properties": {
                "participant": {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"},
                "intervalStart": _INTERVAL_SCHEMA,
                "injectedWh": _WHOLE_NUMBER
                | {"description": f"Wh the meter counted into the grid, at most {MAX_QUANTITY}"},
                "withdrawnWh": _WHOLE_NUMBER
                | {"description": f"Wh the meter counted out of the grid, at most {MAX_QUANTITY}"},
                "quality": {"enum": [q.value for q in ReadingQuality], "default": "measured"},
            },
        }
    ),
]
PriceItem = Annotated[
    Any,
    WithJsonSchema(
        {
            "type": "object",
            "title": "ReferencePriceIn",
            "required": ["intervalStart", "priceMinorPerMWh"],
            "additionalProperties": False,
            "properties": {
                "intervalStart": _INTERVAL_SCHEMA,
                "priceMinorPerMWh": _WHOLE_NUMBER
                | {"description": f"minor currency units per MWh, at most {MAX_QUANTITY}"},
            },
        }
    ),
]


# --- requests ----------------------------------------------------------------------------------


class MeterReadingsIn(RequestModel):
    """One batch of readings; at most one per participant and interval."""

    readings: list[ReadingItem] = Field(min_length=1, max_length=MAX_ITEMS)
    supersedes: Bytes32 | None = Field(
        default=None, description="a batch this one replaces as a whole (its readings left out are withdrawn)"
    )


class ReferencePricesIn(RequestModel):
    """The reference prices of a period, exactly one per interval."""

    prices: list[PriceItem] = Field(min_length=1, max_length=MAX_ITEMS)
    period_start: IntervalTime | None = Field(default=None, description="default: the first price's interval")
    period_end: IntervalTime | None = Field(default=None, description="default: the end of the last price's interval")
    supersedes: Bytes32 | None = None


def file_problem(exc: MeteringFileError, instance: str, collection: str) -> dict[str, Any]:
    """The 422 problem of a refused body: one `errors` item per bad value, with its JSON path,
    pointer and `row` (the item's index; null for the body as a whole)."""
    body = problem_for(exc, instance)
    body.pop("currentErrors", None)  # the context's row errors, rendered below instead
    items = []
    for error in exc.errors:
        if error.row is None:
            path, pointer = error.field, f"#/{error.field}"
        elif error.field == collection:
            path, pointer = f"{collection}[{error.row}]", f"#/{collection}/{error.row}"
        else:
            path, pointer = f"{collection}[{error.row}].{error.field}", f"#/{collection}/{error.row}/{error.field}"
        items.append(
            {
                "in": "body",
                "field": path,
                "pointer": pointer,
                "detail": error.message,
                "type": exc.code,
                "row": error.row,
            }
        )
    body["errors"] = items
    return body


# --- responses -----------------------------------------------------------------------------------


class MeterBatchOut(ResponseModel):
    batch_id: str
    kind: BatchKindName
    period_start: UtcTime
    period_end: UtcTime
    root: str = Field(description="the StandardMerkleTree root committed on chain")
    count: int
    supersedes: str | None
    source: str = Field(description="the imported file's name, or api")
    status: BatchStatusName = Field(description="prepared: stored, its commit not seen yet; committed: on chain")
    transaction_hash: str | None
    block_number: int | None
    created_at: Timestamp
    outcome: Literal["committed", "resumed", "existing"] | None = Field(
        default=None, description="imports only: committed now, finished an interrupted import, or imported before"
    )
    links: dict[str, str]

    @classmethod
    def from_row(cls, row: AnyBatch, outcome: str | None = None) -> MeterBatchOut:
        kind = "readings" if isinstance(row, ReadingBatchRow) else "prices"
        return cls._of(kind, row, outcome)

    @classmethod
    def from_result(cls, result: BatchResult) -> MeterBatchOut:
        return cls._of(result.kind, result, result.outcome)

    @classmethod
    def _of(cls, kind: str, batch: AnyBatch | BatchResult, outcome: str | None) -> MeterBatchOut:
        path = "/meter-reading-batches" if kind == "readings" else "/reference-price-batches"
        return cls(
            batch_id=batch.batch_id,
            kind=kind,  # type: ignore[arg-type]
            period_start=batch.period_start,
            period_end=batch.period_end,
            root=batch.root,
            count=batch.count,
            supersedes=batch.supersedes,
            source=batch.source,
            status=batch.status.value,  # type: ignore[arg-type]
            transaction_hash=batch.transaction_hash,
            block_number=batch.block_number,
            created_at=batch.created_at,
            outcome=outcome,  # type: ignore[arg-type]
            links={"self": f"{path}/{batch.batch_id}", "proof": f"{path}/{batch.batch_id}/proof"},
        )


class MeterReadingOut(ResponseModel):
    participant: str
    interval_start: UtcTime
    injected_wh: int
    withdrawn_wh: int
    quality: QualityName
    version: int = Field(description="1 for the first reading of this participant and interval, +1 per correction")
    batch_id: str

    @classmethod
    def fields_of(cls, row: MeterReadingRow) -> dict[str, Any]:
        return {
            "participant": row.participant,
            "interval_start": row.interval_start,
            "injected_wh": row.injected_wh,
            "withdrawn_wh": row.withdrawn_wh,
            "quality": row.quality.value,
            "version": row.version,
            "batch_id": row.batch_id,
        }

    @classmethod
    def from_row(cls, row: MeterReadingRow) -> MeterReadingOut:
        return cls(**cls.fields_of(row))


class MeterReadingPage(ResponseModel):
    items: list[MeterReadingOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class MeterReadingVersionOut(MeterReadingOut):
    current: bool = Field(description="the version settlement uses now")
    batch: MeterBatchOut = Field(description="the batch it came in: source, status, on-chain commit")


class MeterReadingHistoryOut(ResponseModel):
    participant: str
    interval_start: UtcTime
    versions: list[MeterReadingVersionOut] = Field(description="oldest first")

    @classmethod
    def of(cls, rows: list[MeterReadingRow], current_id: int | None) -> MeterReadingHistoryOut:
        return cls(
            participant=rows[0].participant,
            interval_start=rows[0].interval_start,
            versions=[
                MeterReadingVersionOut(
                    **MeterReadingOut.fields_of(row),
                    current=row.id == current_id,
                    batch=MeterBatchOut.from_row(row.batch),
                )
                for row in rows
            ],
        )


class ReferencePriceOut(ResponseModel):
    interval_start: UtcTime
    price_minor_per_mwh: int = Field(alias="priceMinorPerMWh")
    version: int
    batch_id: str

    @classmethod
    def fields_of(cls, row: ReferencePriceRow) -> dict[str, Any]:
        return {
            "interval_start": row.interval_start,
            "price_minor_per_mwh": row.price_minor_per_mwh,
            "version": row.version,
            "batch_id": row.batch_id,
        }

    @classmethod
    def from_row(cls, row: ReferencePriceRow) -> ReferencePriceOut:
        return cls(**cls.fields_of(row))


class ReferencePricePage(ResponseModel):
    items: list[ReferencePriceOut]
    next_cursor: str | None


class ReferencePriceVersionOut(ReferencePriceOut):
    current: bool
    batch: MeterBatchOut


class ReferencePriceHistoryOut(ResponseModel):
    interval_start: UtcTime
    versions: list[ReferencePriceVersionOut]

    @classmethod
    def of(cls, rows: list[ReferencePriceRow], current_id: int | None) -> ReferencePriceHistoryOut:
        return cls(
            interval_start=rows[0].interval_start,
            versions=[
                ReferencePriceVersionOut(
                    **ReferencePriceOut.fields_of(row),
                    current=row.id == current_id,
                    batch=MeterBatchOut.from_row(row.batch),
                )
                for row in rows
            ],
        )


class LeafProofOut(ResponseModel):
    """Check with `StandardMerkleTree.verify(root, leafEncoding, value, proof)` (@openzeppelin/
    merkle-tree, or ledger.domain.merkle), OpenZeppelin `MerkleProof`, or MeterData's
    verifyReading/verifyPrice with `batchId`."""

    batch_id: str
    root: str
    leaf_encoding: list[str]
    value: list[str] = Field(
        description="the leaf in leafEncoding order; integers as decimal strings, as StandardMerkleTree dumps them"
    )
    leaf_index: int = Field(description="position of the value in the list the tree was built from")
    proof: list[str]
    status: BatchStatusName
    transaction_hash: str | None = Field(description="the transaction that committed the root")
    block_number: int | None

    @classmethod
    def of(cls, proof: LeafProof) -> LeafProofOut:
        return cls(
            batch_id=proof.batch.batch_id,
            root=proof.root,
            leaf_encoding=proof.leaf_encoding,
            value=[str(item) for item in proof.value],
            leaf_index=proof.leaf_index,
            proof=proof.proof,
            status=proof.batch.status.value,  # type: ignore[arg-type]
            transaction_hash=proof.batch.transaction_hash,
            block_number=proof.batch.block_number,
        )
