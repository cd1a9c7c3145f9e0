"""Request and response bodies: camelCase JSON, the formats of `api.types`, and the mapping from
domain objects and index rows to responses (no rules here: that is the services' job)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema
from pydantic.alias_generators import to_camel
from sqlalchemy import Row

from api.batches import counts, merge_answers, parse_items
from api.problems import Problem
from api.types import (
    Address,
    Bytes32,
    IsoTime,
    Signature,
    Timestamp,
    Uint64,
    Uint256,
    UtcTime,
    render_optional_time,
)
from ledger import errors
from ledger.domain.trade import SignedTrade, Trade
from ledger.domain.units import ZERO_ID
from ledger.services.trading import Accepted, AcceptedCancellation, CancelRequest
from ledger.store import models, queries

MAX_BATCH = 1000

ParticipantKindName = Literal["generator", "retailer", "consumer", "prosumer"]
ParticipantStatusName = Literal["active", "suspended"]
TradeStatusName = Literal["recorded", "cancelled", "amended"]
SubmissionStatusName = Literal["accepted", "pending", "recorded", "rejected"]


class RequestModel(BaseModel):
    """Request bodies: camelCase only, unknown members refused (a misspelt term is an error)."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_alias=True, validate_by_name=False, extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_alias=True, validate_by_name=True)


# --- requests ---------------------------------------------------------------------------------


class TradeTerms(RequestModel):
    """The EIP-712 `Trade` both parties sign, with times as ISO 8601 (signed as Unix seconds)."""

    seller: Address
    buyer: Address
    delivery_start: IsoTime = Field(description="start of the first 15-minute interval")
    delivery_end: IsoTime = Field(description="end of the last interval (exclusive)")
    energy_per_interval_wh: Uint64 = Field(description="Wh delivered in each interval; a JSON integer")
    price_minor_per_mwh: Uint64 = Field(alias="priceMinorPerMWh", description="minor currency units per MWh")
    nonce: Uint256
    deadline: IsoTime = Field(description="the signatures are void after this time")
    replaces: Bytes32 = Field(default=ZERO_ID, description="id of the trade this one amends; zero for a new trade")

    def to_domain(self) -> Trade:
        return Trade(
            seller=self.seller,
            buyer=self.buyer,
            delivery_start=self.delivery_start,
            delivery_end=self.delivery_end,
            energy_per_interval_wh=self.energy_per_interval_wh,
            price_minor_per_mwh=self.price_minor_per_mwh,
            nonce=self.nonce,
            deadline=self.deadline,
            replaces=self.replaces,
        )


class SignedTradeIn(RequestModel):
    trade: TradeTerms
    seller_signature: Signature
    buyer_signature: Signature

    def to_domain(self) -> SignedTrade:
        return SignedTrade(self.trade.to_domain(), self.seller_signature, self.buyer_signature)


# Batch items are validated one by one (see `parse_batch`), so that a malformed item is refused in
# its place instead of failing the whole batch; the schema still documents them as SignedTradeIn.
BatchItem = Annotated[Any, WithJsonSchema({"$ref": "#/components/schemas/SignedTradeIn"})]


class BatchIn(RequestModel):
    trades: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class CancelIn(RequestModel):
    """Both parties' signatures over the EIP-712 `CancelTrade(bytes32 tradeId, uint64 deadline)`."""

    deadline: IsoTime
    seller_signature: Signature
    buyer_signature: Signature


class CancelItemIn(CancelIn):
    """One cancellation of a batch: the trade's id with both parties' signatures."""

    trade_id: Bytes32

    def to_domain(self) -> CancelRequest:
        return CancelRequest(self.trade_id, self.deadline, self.seller_signature, self.buyer_signature)


_cancel_item = TypeAdapter(CancelItemIn)
# Validated one by one (see `parse_cancel_batch`), like the items of BatchIn; documented inline, as
# no route takes a CancelItemIn of its own.
CancelBatchItem = Annotated[Any, WithJsonSchema(_cancel_item.json_schema())]


class CancelBatchIn(RequestModel):
    cancellations: list[CancelBatchItem] = Field(min_length=1, max_length=MAX_BATCH)


class CancelTypedDataIn(RequestModel):
    trade_id: Bytes32
    deadline: IsoTime


class ParticipantIn(RequestModel):
    address: Address
    kind: ParticipantKindName
    identifier: str = Field(
        min_length=1, max_length=256, description="licence or market id; the chain keeps only its keccak-256"
    )


_signed_trade = TypeAdapter(SignedTradeIn)


def parse_batch(items: Sequence[Any], path: str) -> list[SignedTrade | dict[str, Any]]:
    """Each item as a signed trade, or the validation problem naming its bad values
    (`trades[3].trade.nonce`)."""
    return parse_items(items, _signed_trade, SignedTradeIn.to_domain, "trades", path)


def parse_cancel_batch(items: Sequence[Any], path: str) -> list[CancelRequest | dict[str, Any]]:
    """Each item as a cancellation, or the validation problem naming its bad values."""
    return parse_items(items, _cancel_item, CancelItemIn.to_domain, "cancellations", path)


# --- responses: submissions -------------------------------------------------------------------


class AcceptedOut(ResponseModel):
    submission_id: str
    trade_id: str
    status: SubmissionStatusName
    links: dict[str, str] = Field(examples=[{"submission": "/submissions/…", "trade": "/trades/0x…"}])

    @classmethod
    def of(cls, submission_id: str, trade_id: str, status: str) -> AcceptedOut:
        return cls(
            submission_id=submission_id,
            trade_id=trade_id,
            status=status,  # type: ignore[arg-type]
            links={"submission": f"/submissions/{submission_id}", "trade": f"/trades/{trade_id}"},
        )


class BatchItemOut(ResponseModel):
    """One item's answer: `accepted` with its ids, or `refused` with the problem (nothing written)."""

    index: int
    outcome: Literal["accepted", "refused"]
    submission_id: str | None = None
    trade_id: str | None = None
    status: SubmissionStatusName | None = None
    created: bool | None = Field(default=None, description="false when the trade was submitted before")
    problem: Problem | None = None


class BatchOut(ResponseModel):
    accepted: int
    refused: int
    results: list[BatchItemOut]

    @classmethod
    def of(
        cls,
        parsed: Sequence[SignedTrade | dict[str, Any]],
        outcomes: Sequence[Accepted | errors.LedgerError],
        path: str,
    ) -> BatchOut:
        """Merges the items refused by validation (`parsed` problems) with the service's answers
        for the others (`outcomes`, in the order of the signed trades in `parsed`)."""
        results = [
            BatchItemOut(
                index=index, outcome="refused", trade_id=(answer.model_extra or {}).get("tradeId"), problem=answer
            )
            if isinstance(answer, Problem)
            else BatchItemOut(
                index=index,
                outcome="accepted",
                submission_id=answer.submission_id,
                trade_id=answer.trade_id,
                status=answer.status,  # type: ignore[arg-type]
                created=answer.created,
            )
            for index, answer in merge_answers(parsed, outcomes, path)
        ]
        return cls(**counts(results), results=results)


class SubmissionOut(ResponseModel):
    submission_id: str
    trade_id: str
    status: SubmissionStatusName
    transaction_hash: str | None = Field(description="the recordTrades transaction, once sent")
    block_number: int | None
    error_code: str | None = Field(description="why the chain rejected the trade (status rejected)")
    error_detail: str | None
    attempts: int
    created_at: Timestamp
    updated_at: Timestamp
    links: dict[str, str]

    @classmethod
    def from_row(cls, row: models.Submission) -> SubmissionOut:
        return cls(
            submission_id=row.id,
            trade_id=row.trade_id,
            status=row.status.value,  # type: ignore[arg-type]
            transaction_hash=row.transaction_hash,
            block_number=row.block_number,
            error_code=row.error_code,
            error_detail=row.error_detail,
            attempts=row.attempts,
            created_at=row.created_at,
            updated_at=row.updated_at,
            links={"self": f"/submissions/{row.id}", "trade": f"/trades/{row.trade_id}"},
        )


# --- responses: trades ------------------------------------------------------------------------


class ProvenanceOut(ResponseModel):
    """Where the log behind a row sits on chain."""

    block_number: int
    block_hash: str
    transaction_hash: str
    transaction_index: int
    log_index: int
    confirmations: int | None = Field(
        description="head - blockNumber + 1, final from the service's GRIDLEDGER_CONFIRMATIONS on; "
        "null when the node cannot be reached"
    )

    @classmethod
    def from_row(cls, row: models.LogProvenance, head: int | None) -> ProvenanceOut:
        return cls(
            block_number=row.block_number,
            block_hash=row.block_hash,
            transaction_hash=row.transaction_hash,
            transaction_index=row.transaction_index,
            log_index=row.log_index,
            # The head is cached for up to a second; a block in the index is itself proof that
            # the chain reached it.
            confirmations=None if head is None else max(head, row.block_number) - row.block_number + 1,
        )


class RejectionReasonOut(ResponseModel):
    selector: str | None
    name: str | None = Field(description="the contract's custom error, e.g. TradeLedgerGateClosed")
    data: str | None


class TradeEventOut(ResponseModel):
    event: Literal["recorded", "cancelled", "amended", "rejected"]
    related_trade_id: str | None = Field(description="recorded: the trade it replaces; amended: the amending trade")
    reason: RejectionReasonOut | None
    provenance: ProvenanceOut

    @classmethod
    def from_row(cls, row: models.TradeEvent, head: int | None) -> TradeEventOut:
        rejected = row.event is models.TradeEventKind.REJECTED
        return cls(
            event=row.event.value,  # type: ignore[arg-type]
            related_trade_id=row.related_trade_id,
            reason=RejectionReasonOut(selector=row.reason_selector, name=row.reason_name, data=row.reason_data)
            if rejected
            else None,
            provenance=ProvenanceOut.from_row(row, head),
        )


class TradeSummaryOut(ResponseModel):
    trade_id: str
    seller: str
    buyer: str
    delivery_start: UtcTime
    delivery_end: UtcTime
    energy_per_interval_wh: int
    price_minor_per_mwh: int = Field(alias="priceMinorPerMWh")
    nonce: str = Field(description="uint256 as a decimal string")
    deadline: str | None = Field(description="ISO 8601; null for a deadline beyond year 9999 (never expires)")
    replaces: str | None
    replaced_by: str | None
    status: TradeStatusName
    recorded_at: UtcTime = Field(description="timestamp of the block that recorded the trade")
    provenance: ProvenanceOut

    @classmethod
    def fields_of(cls, row: models.Trade, head: int | None) -> dict[str, Any]:
        return {
            "trade_id": row.trade_id,
            "seller": row.seller,
            "buyer": row.buyer,
            "delivery_start": row.delivery_start,
            "delivery_end": row.delivery_end,
            "energy_per_interval_wh": row.energy_per_interval_wh,
            "price_minor_per_mwh": row.price_minor_per_mwh,
            "nonce": row.nonce,
            "deadline": render_optional_time(int(row.deadline)),
            "replaces": row.replaces,
            "replaced_by": row.replaced_by,
            "status": row.status.value,
            "recorded_at": row.recorded_at,
            "provenance": ProvenanceOut.from_row(row, head),
        }

    @classmethod
    def from_row(cls, row: models.Trade, head: int | None) -> TradeSummaryOut:
        return cls(**cls.fields_of(row, head))


class TradeOut(TradeSummaryOut):
    events: list[TradeEventOut] = Field(description="in chain order")

    @classmethod
    def from_row(cls, row: models.Trade, head: int | None) -> TradeOut:
        return cls(**cls.fields_of(row, head), events=[TradeEventOut.from_row(e, head) for e in row.events])

    @classmethod
    def from_record(cls, record: queries.TradeRecord, head: int | None) -> TradeOut:
        """The same from plain rows (queries.get_trade_record), which cost far less to load."""
        trade = cast(models.Trade, record.trade)
        events = [TradeEventOut.from_row(cast(models.TradeEvent, e), head) for e in record.events]
        return cls(**cls.fields_of(trade, head), events=events)


class TradePage(ResponseModel):
    items: list[TradeSummaryOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")

    @classmethod
    def of(cls, rows: Sequence[Row[Any]], next_cursor: str | None, head: int | None) -> TradePage:
        """From plain rows (queries.list_trade_rows), which carry a Trade's columns by name."""
        items = [TradeSummaryOut.from_row(cast(models.Trade, row), head) for row in rows]
        return cls(items=items, next_cursor=next_cursor)


class CancellationAcceptedOut(ResponseModel):
    cancellation_id: str
    trade_id: str
    status: SubmissionStatusName
    links: dict[str, str] = Field(examples=[{"cancellation": "/cancellations/…", "trade": "/trades/0x…"}])

    @classmethod
    def of(cls, accepted: AcceptedCancellation) -> CancellationAcceptedOut:
        return cls(
            cancellation_id=accepted.cancellation_id,
            trade_id=accepted.trade_id,
            status=accepted.status,  # type: ignore[arg-type]
            links={
                "cancellation": f"/cancellations/{accepted.cancellation_id}",
                "trade": f"/trades/{accepted.trade_id}",
            },
        )


class CancelBatchItemOut(ResponseModel):
    """One item's answer: `accepted` with its ids, or `refused` with the problem (nothing written)."""

    index: int
    outcome: Literal["accepted", "refused"]
    cancellation_id: str | None = None
    trade_id: str | None = None
    status: SubmissionStatusName | None = None
    created: bool | None = Field(default=None, description="false when the same cancellation came before")
    problem: Problem | None = None


class CancelBatchOut(ResponseModel):
    accepted: int
    refused: int
    results: list[CancelBatchItemOut]

    @classmethod
    def of(
        cls,
        parsed: Sequence[CancelRequest | dict[str, Any]],
        outcomes: Sequence[AcceptedCancellation | errors.LedgerError],
        path: str,
    ) -> CancelBatchOut:
        results = [
            CancelBatchItemOut(
                index=index, outcome="refused", trade_id=(answer.model_extra or {}).get("tradeId"), problem=answer
            )
            if isinstance(answer, Problem)
            else CancelBatchItemOut(
                index=index,
                outcome="accepted",
                cancellation_id=answer.cancellation_id,
                trade_id=answer.trade_id,
                status=answer.status,  # type: ignore[arg-type]
                created=answer.created,
            )
            for index, answer in merge_answers(parsed, outcomes, path)
        ]
        return cls(**counts(results), results=results)


class CancellationOut(ResponseModel):
    cancellation_id: str
    trade_id: str
    status: SubmissionStatusName = Field(description="recorded: the trade is cancelled on chain")
    transaction_hash: str | None = Field(description="the cancelTrades transaction, once sent")
    block_number: int | None
    error_code: str | None = Field(description="why the chain refused the cancellation (status rejected)")
    error_detail: str | None
    attempts: int
    created_at: Timestamp
    updated_at: Timestamp
    links: dict[str, str]

    @classmethod
    def from_row(cls, row: models.Cancellation) -> CancellationOut:
        return cls(
            cancellation_id=row.id,
            trade_id=row.trade_id,
            status=row.status.value,  # type: ignore[arg-type]
            transaction_hash=row.transaction_hash,
            block_number=row.block_number,
            error_code=row.error_code,
            error_detail=row.error_detail,
            attempts=row.attempts,
            created_at=row.created_at,
            updated_at=row.updated_at,
            links={"self": f"/cancellations/{row.id}", "trade": f"/trades/{row.trade_id}"},
        )


# --- responses: participants ------------------------------------------------------------------


class ParticipantEventOut(ResponseModel):
    event: Literal["registered", "suspended", "reinstated"]
    kind: ParticipantKindName | None
    identifier_hash: str | None
    provenance: ProvenanceOut

    @classmethod
    def from_row(cls, row: models.ParticipantEvent, head: int | None) -> ParticipantEventOut:
        return cls(
            event=row.event.value,  # type: ignore[arg-type]
            kind=None if row.kind is None else row.kind.value,  # type: ignore[arg-type]
            identifier_hash=row.identifier_hash,
            provenance=ProvenanceOut.from_row(row, head),
        )


class ParticipantSummaryOut(ResponseModel):
    """`pending`: registration accepted and not indexed yet (no block, no provenance yet);
    `links.registration` follows it."""

    address: str
    kind: ParticipantKindName
    status: ParticipantStatusName | Literal["pending"]
    identifier_hash: str = Field(description="keccak-256 of the identifier")
    registered_at: UtcTime | None
    provenance: ProvenanceOut | None
    links: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def fields_of(cls, row: models.Participant, head: int | None) -> dict[str, Any]:
        return {
            "address": row.address,
            "kind": row.kind.value,
            "status": row.status.value,
            "identifier_hash": row.identifier_hash,
            "registered_at": row.registered_at,
            "provenance": ProvenanceOut.from_row(row, head),
        }

    @classmethod
    def from_row(cls, row: models.Participant, head: int | None) -> ParticipantSummaryOut:
        return cls(**cls.fields_of(row, head))

    @classmethod
    def pending_fields(cls, address: str, kind: str, identifier_hash: str, registration: str) -> dict[str, Any]:
        return {
            "address": address,
            "kind": kind,
            "status": "pending",
            "identifier_hash": identifier_hash,
            "registered_at": None,
            "provenance": None,
            "links": {"registration": registration},
        }


class ParticipantOut(ParticipantSummaryOut):
    events: list[ParticipantEventOut] = Field(description="in chain order")

    @classmethod
    def from_row(cls, row: models.Participant, head: int | None) -> ParticipantOut:
        return cls(**cls.fields_of(row, head), events=[ParticipantEventOut.from_row(e, head) for e in row.events])


class ParticipantPage(ResponseModel):
    items: list[ParticipantSummaryOut]
    next_cursor: str | None


class ParticipantActionOut(ResponseModel):
    """An operator action, mined. The index shows it once the block is indexed (final after the
    configured confirmations)."""

    address: str
    status: ParticipantStatusName
    transaction_hash: str
    block_number: int
    links: dict[str, str]


# --- responses: EIP-712 and health ------------------------------------------------------------


class TypedField(BaseModel):
    name: str
    type: str


class DomainOut(BaseModel):
    name: str
    version: str
    chainId: int
    verifyingContract: str


class Eip712Out(BaseModel):
    """Everything a wallet needs to sign GridLedger messages without our code. ethers.js
    `signTypedData(domain, types, message)` wants `types` without EIP712Domain; MetaMask
    `eth_signTypedData_v4` wants the full document of POST /eip712/trade."""

    domain: DomainOut
    types: dict[str, list[TypedField]]
    primaryTypes: list[str]


class TypedDataDocument(BaseModel):
    types: dict[str, list[TypedField]]
    primaryType: str
    domain: DomainOut
    message: dict[str, Any]


class TypedDataOut(ResponseModel):
    typed_data: TypedDataDocument = Field(description="sign as is with eth_signTypedData_v4")
    trade_id: str | None = Field(default=None, description="the trade's id (its EIP-712 digest)")


class WorkerOut(ResponseModel):
    alive: bool
    state: Literal["running", "restarting", "stopped"] = Field(
        description="running; restarting while a dead worker process is brought back; stopped"
    )
    restarts: int = Field(description="how often the worker's process was restarted since the service started")


class RelayerOut(WorkerOut):
    stalled: bool = Field(description="trades have waited longer than GRIDLEDGER_RELAYER_STALL_SECONDS, none settled")
    waiting_since: Timestamp | None = Field(
        description="since when trades wait with none settled; null while none waits"
    )


class HealthOut(ResponseModel):
    status: Literal["ok", "degraded", "unhealthy"] = Field(
        description="`degraded`: every worker alive, but the relayer stalled; 503 unless `ok`"
    )
    chain_id: int
    head: int | None = Field(description="latest block; null when the node cannot be reached")
    index_checkpoint: int | None = Field(description="last block indexed; null before the first")
    index_lag: int | None = Field(description="head - indexCheckpoint")
    workers: dict[str, RelayerOut | WorkerOut] = Field(description="by name: `relayer` and `indexer`")
    error: dict[str, str] | None = Field(description="why a worker stopped")
