"""Response bodies of the audit endpoints (histories and verification reports): camelCase JSON in
the formats of `api.types`, mapped from `ledger.services.audit` views."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from api.schemas import ResponseModel
from api.settlement_schemas import LineKindName, RunStatusName
from api.types import UtcTime
from ledger.services import audit

HistoryKindName = Literal["recorded", "cancelled", "amended", "rejected", "settled"]
VerdictName = Literal["match", "mismatch", "missing"]


# --- histories --------------------------------------------------------------------------------


class HistoryLineOut(ResponseModel):
    account: str
    kind: int
    kind_name: LineKindName
    ref: str
    energy_wh: int
    amount_minor: int = Field(description="positive: the account receives; negative: it pays")

    @classmethod
    def of(cls, line: audit.LineEntry) -> HistoryLineOut:
        return cls(
            account=line.account,
            kind=int(line.kind),
            kind_name=line.kind.name.lower(),  # type: ignore[arg-type]
            ref=line.ref,
            energy_wh=line.energy_wh,
            amount_minor=line.amount_minor,
        )


class HistoryEventOut(ResponseModel):
    kind: HistoryKindName = Field(
        description="recorded (relatedTradeId: the trade it amends), cancelled, amended (relatedTradeId: the "
        "amending trade), rejected, settled (included in a settlement run; provenance: the run's commit)"
    )
    trade_id: str
    block_number: int | None
    block_hash: str | None
    transaction_hash: str | None
    log_index: int | None = Field(description="null for settled: the index keeps the commit's block and transaction")
    related_trade_id: str | None
    reason_name: str | None = Field(description="rejected: the contract's custom error")
    run_id: str | None
    run_version: int | None
    run_status: RunStatusName | None
    lines: list[HistoryLineOut] = Field(description="settled: the trade's lines of the seller and of the buyer")

    @classmethod
    def of(cls, event: audit.HistoryEvent) -> HistoryEventOut:
        return cls(
            kind=event.kind.value,  # type: ignore[arg-type]
            trade_id=event.trade_id,
            block_number=event.block_number,
            block_hash=event.block_hash,
            transaction_hash=event.transaction_hash,
            log_index=event.log_index,
            related_trade_id=event.related_trade_id,
            reason_name=event.reason_name,
            run_id=event.run_id,
            run_version=event.run_version,
            run_status=None if event.run_status is None else event.run_status.value,  # type: ignore[arg-type]
            lines=[HistoryLineOut.of(line) for line in event.lines],
        )


class TradeHistoryOut(ResponseModel):
    trade_id: str
    lineage: list[str] = Field(description="the amendment chain the trade belongs to, oldest first")
    events: list[HistoryEventOut] = Field(description="of every trade of the lineage, in chain order")

    @classmethod
    def of(cls, history: audit.TradeHistory) -> TradeHistoryOut:
        return cls(
            trade_id=history.trade_id,
            lineage=history.lineage,
            events=[HistoryEventOut.of(event) for event in history.events],
        )


class HistoryTradeOut(ResponseModel):
    trade_id: str
    side: Literal["seller", "buyer"]
    counterparty: str
    delivery_start: UtcTime
    delivery_end: UtcTime
    energy_per_interval_wh: int
    price_minor_per_mwh: int = Field(alias="priceMinorPerMWh")
    status: Literal["recorded", "cancelled", "amended"]
    replaces: str | None
    replaced_by: str | None
    block_number: int
    transaction_hash: str


class HistoryPositionOut(ResponseModel):
    interval_start: UtcTime
    contracted_wh: int
    metered_wh: int
    imbalance_wh: int
    excess_wh: int
    estimated: bool


class HistoryRunOut(ResponseModel):
    run_id: str
    period_start: UtcTime
    period_end: UtcTime
    version: int
    status: RunStatusName
    superseded_by: str | None
    transaction_hash: str | None
    block_number: int | None
    lines: list[HistoryLineOut]
    positions: list[HistoryPositionOut]
    links: dict[str, str]


class ParticipantHistoryOut(ResponseModel):
    address: str
    period_from: UtcTime
    period_to: UtcTime
    trades: list[HistoryTradeOut] = Field(description="delivering in the span, in chain order")
    runs: list[HistoryRunOut] = Field(description="every version of every period overlapping the span")

    @classmethod
    def of(cls, history: audit.ParticipantHistory) -> ParticipantHistoryOut:
        return cls(
            address=history.address,
            period_from=history.period_from,
            period_to=history.period_to,
            trades=[
                HistoryTradeOut.model_validate(
                    {
                        "trade_id": t.trade_id,
                        "side": t.side,
                        "counterparty": t.counterparty,
                        "delivery_start": t.delivery_start,
                        "delivery_end": t.delivery_end,
                        "energy_per_interval_wh": t.energy_per_interval_wh,
                        "price_minor_per_mwh": t.price_minor_per_mwh,
                        "status": t.status,
                        "replaces": t.replaces,
                        "replaced_by": t.replaced_by,
                        "block_number": t.block_number,
                        "transaction_hash": t.transaction_hash,
                    }
                )
                for t in history.trades
            ],
            runs=[
                HistoryRunOut(
                    run_id=r.run_id,
                    period_start=r.period_start,
                    period_end=r.period_end,
                    version=r.version,
                    status=r.status.value,  # type: ignore[arg-type]
                    superseded_by=r.superseded_by,
                    transaction_hash=r.transaction_hash,
                    block_number=r.block_number,
                    lines=[HistoryLineOut.of(line) for line in r.lines],
                    positions=[
                        HistoryPositionOut(
                            interval_start=p.interval_start,
                            contracted_wh=p.contracted_wh,
                            metered_wh=p.metered_wh,
                            imbalance_wh=p.imbalance_wh,
                            excess_wh=p.excess_wh,
                            estimated=p.estimated,
                        )
                        for p in r.positions
                    ],
                    links={"statement": f"/settlement-runs/{r.run_id}/statements/{history.address}"},
                )
                for r in history.runs
            ],
        )


# --- verification -----------------------------------------------------------------------------


class CheckOut(ResponseModel):
    field: str = Field(description="what was compared, in the index's terms (snake_case, as stored)")
    index: Any = Field(description="the index's value (uint256 and uint64 deadlines as decimal strings)")
    chain: Any = Field(description="the chain's value, read without the index's help")
    match: bool


class VerificationOut(ResponseModel):
    subject: dict[str, Any]
    verdict: VerdictName = Field(
        description="match: every check equal; mismatch: some differ; missing: on one side only"
    )
    checks: list[CheckOut]
    chain_head: int = Field(description="the chain's head block when the verification started")

    @classmethod
    def of(cls, report: audit.VerificationReport) -> VerificationOut:
        return cls(
            subject=report.subject,
            verdict=report.verdict.value,  # type: ignore[arg-type]
            checks=[CheckOut(field=c.field, index=c.index, chain=c.chain, match=c.match) for c in report.checks],
            chain_head=report.chain_head,
        )
