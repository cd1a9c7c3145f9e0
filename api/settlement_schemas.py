"""Request and response bodies of the settlement endpoints (runs, statements, proofs, disputes):
camelCase JSON in the formats of `api.types`, mapped from `ledger.services.settlement` views."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from api.problems import json_safe
from api.schemas import RequestModel, ResponseModel, TypedDataDocument
from api.types import Address, Bytes32, IsoTime, Signature, Timestamp, UtcTime
from ledger.domain.settlement import LineKind
from ledger.services import settlement as service
from ledger.services.settlement.jobs import JobView
from ledger.services.settlement.parameters import MarketParameters, ScheduledChange

RunStatusName = Literal["computed", "committed", "superseded"]
ChainRunStatusName = Literal["unknown", "open", "final", "superseded"]
DisputeStatusName = Literal["open", "accepted", "rejected"]
LineKindName = Literal["trade", "imbalance", "penalty", "total"]

_INTERVAL_KINDS = (LineKind.IMBALANCE, LineKind.PENALTY)


# --- requests ---------------------------------------------------------------------------------


class RunIn(RequestModel):
    period_start: IsoTime = Field(description="start of the period's first 15-minute interval")
    period_end: IsoTime = Field(description="end of the period (exclusive)")


class LineKeyIn(RequestModel):
    """A statement line of the run, by its key."""

    account: Address
    kind: int = Field(description="1 trade, 2 imbalance, 3 penalty, 9 total", examples=[2])
    ref: Bytes32 = Field(description="trade id (kind 1), interval start as a 32-byte integer (2, 3), zero (9)")


class DisputeTypedDataIn(LineKeyIn):
    reason: str = Field(min_length=1, max_length=4000, description="why the line is wrong; the chain keeps its hash")
    deadline: IsoTime = Field(description="the signature is void after this time")


class DisputeIn(DisputeTypedDataIn):
    signature: Signature = Field(description="the line's account's EIP-712 signature of the Dispute")


class ResolveIn(RequestModel):
    accepted: bool = Field(description="true: the line is wrong and a corrected version follows")
    resolution: str = Field(
        min_length=1, max_length=4000, description="the decision's reasons; the chain keeps its hash"
    )


# --- responses: runs --------------------------------------------------------------------------


class ParametersOut(ResponseModel):
    tolerance_bps: int
    penalty_bps: int
    change_id: int | None = Field(
        default=None,
        description="the scheduled change that set them (GET /market/parameter-changes); null: the initial ones",
    )


class TotalsOut(ResponseModel):
    """Sums of the positive and of the negative total-line amounts (always equal: the run balances)."""

    receivable_minor: int
    payable_minor: int


class CommitOut(ResponseModel):
    """The commitRun transaction; null fields until it is mined."""

    transaction_hash: str | None
    block_number: int | None
    block_hash: str | None
    committed_at: UtcTime | None
    dispute_window_ends: UtcTime | None


class RunSummaryOut(ResponseModel):
    run_id: str
    period_start: UtcTime
    period_end: UtcTime
    version: int
    status: RunStatusName = Field(description="in the index: computed (not on chain yet), committed, superseded")
    superseded_by: str | None
    root: str
    inputs_hash: str
    line_count: int
    totals: TotalsOut
    commit: CommitOut
    links: dict[str, str]

    @classmethod
    def fields_of(cls, run: service.RunSummary) -> dict[str, Any]:
        return {
            "run_id": run.run_id,
            "period_start": run.period_start,
            "period_end": run.period_end,
            "version": run.version,
            "status": run.status.value,
            "superseded_by": run.superseded_by,
            "root": run.root,
            "inputs_hash": run.inputs_hash,
            "line_count": run.line_count,
            "totals": TotalsOut(receivable_minor=run.total_receivable_minor, payable_minor=run.total_payable_minor),
            "commit": CommitOut(
                transaction_hash=run.transaction_hash,
                block_number=run.block_number,
                block_hash=run.block_hash,
                committed_at=run.committed_at,
                dispute_window_ends=run.dispute_window_ends,
            ),
            "links": {"self": f"/settlement-runs/{run.run_id}"},
        }

    @classmethod
    def of(cls, run: service.RunSummary) -> RunSummaryOut:
        return cls(**cls.fields_of(run))


class RunPage(ResponseModel):
    items: list[RunSummaryOut]


class InputsOut(ResponseModel):
    """Which input versions the run used; `inputsHash` commits to them."""

    rules_version: int
    trade_count: int
    reading_batch_ids: list[str]
    price_batch_id: str = Field(description="the newest price batch the run took a price from")
    price_batch_ids: list[str] = Field(
        description="every price batch the run took a price from (the current price of each interval)"
    )
    parameters: ParametersOut
    balancing_account: str = Field(description="the market operator's account, the other side of imbalances")


class ChainStateOut(ResponseModel):
    status: ChainRunStatusName = Field(
        description="the contract's: open until the dispute window passed with no dispute open or accepted, then final"
    )
    final: bool
    dispute_window_ends: UtcTime | None
    open_disputes: int
    accepted_disputes: int
    superseded_by: str | None


class RunOut(RunSummaryOut):
    inputs: InputsOut
    chain: ChainStateOut | None = Field(description="null when the node cannot be reached")

    @classmethod
    def of_detail(cls, detail: service.RunDetail) -> RunOut:
        run, chain = detail.run, detail.chain
        return cls(
            **cls.fields_of(run),
            inputs=InputsOut(
                rules_version=run.rules_version,
                trade_count=detail.trade_count,
                reading_batch_ids=detail.reading_batch_ids,
                price_batch_id=run.price_batch_id,
                price_batch_ids=detail.price_batch_ids,
                parameters=ParametersOut(
                    tolerance_bps=run.tolerance_bps, penalty_bps=run.penalty_bps, change_id=run.parameter_change_id
                ),
                balancing_account=run.balancing_account,
            ),
            chain=None
            if chain is None
            else ChainStateOut(
                status=chain.status.value,  # type: ignore[arg-type]
                final=chain.status.value == "final",
                dispute_window_ends=chain.dispute_window_ends or None,
                open_disputes=chain.open_disputes,
                accepted_disputes=chain.accepted_disputes,
                superseded_by=chain.superseded_by,
            ),
        )


class ParameterChangeIn(RequestModel):
    effective_from: IsoTime = Field(
        description="the first period start it applies to: a 15-minute boundary after the chain's current time"
    )
    tolerance_bps: int = Field(ge=0, le=2**32 - 1, description="SETTLEMENT.md toleranceBps")
    penalty_bps: int = Field(ge=0, le=2**32 - 1, description="SETTLEMENT.md penaltyBps")


# --- responses: market parameters -------------------------------------------------------------


class ParameterChangeOut(ResponseModel):
    change_id: int
    effective_from: UtcTime = Field(description="runs of periods starting at or after it use these parameters")
    tolerance_bps: int
    penalty_bps: int
    scheduled_by: str = Field(description="the operator token's name")
    scheduled_at: Timestamp

    @classmethod
    def of(cls, change: ScheduledChange) -> ParameterChangeOut:
        return cls(
            change_id=change.change_id,
            effective_from=change.effective_from,
            tolerance_bps=change.parameters.tolerance_bps,
            penalty_bps=change.parameters.penalty_bps,
            scheduled_by=change.scheduled_by,
            scheduled_at=change.scheduled_at,
        )


class ParameterChangePage(ResponseModel):
    items: list[ParameterChangeOut]


class TradeLimitsOut(ResponseModel):
    gate_closure_seconds: int = Field(description="trades and cancellations close this long before delivery")
    horizon_seconds: int = Field(description="how far ahead delivery may start")
    max_energy_per_interval_wh: int
    max_price_minor_per_mwh: int = Field(alias="maxPriceMinorPerMWh")


class MarketParametersOut(ResponseModel):
    """The market's rules as they stand: settlement parameters in effect (and scheduled), the
    balancing account, and what the contracts enforce, read from the chain."""

    as_of: UtcTime = Field(description="the chain time the answer refers to")
    rules_version: int = Field(description="the settlement rules version runs commit to (inputsHash)")
    balancing_account: str = Field(description="the market operator's account, the other side of imbalances")
    settlement: ParametersOut = Field(description="in effect for a period starting now")
    initial_settlement: ParametersOut = Field(
        description="the settings' values (GRIDLEDGER_TOLERANCE_BPS, _PENALTY_BPS), before any change"
    )
    upcoming_changes: list[ParameterChangeOut]
    trade_limits: TradeLimitsOut = Field(description="TradeLedger's, on chain")
    dispute_window_seconds: int = Field(description="Settlement's, on chain: how long a committed run can be disputed")

    @classmethod
    def of(cls, market: MarketParameters) -> MarketParametersOut:
        limits = market.trade_limits
        return cls(
            as_of=market.as_of,
            rules_version=market.rules_version,
            balancing_account=market.balancing_account,
            settlement=ParametersOut(
                tolerance_bps=market.parameters.tolerance_bps,
                penalty_bps=market.parameters.penalty_bps,
                change_id=market.parameter_change_id,
            ),
            initial_settlement=ParametersOut(
                tolerance_bps=market.initial.tolerance_bps, penalty_bps=market.initial.penalty_bps
            ),
            upcoming_changes=[ParameterChangeOut.of(change) for change in market.upcoming],
            trade_limits=TradeLimitsOut.model_validate(limits, from_attributes=True),
            dispute_window_seconds=market.dispute_window_seconds,
        )


# --- responses: jobs --------------------------------------------------------------------------


class JobStepOut(ResponseModel):
    name: str = Field(description="gathering inputs, resuming, computing, building the tree, committing, done")
    detail: str | None
    done: int | None
    total: int | None


class JobProblemOut(ResponseModel):
    code: str = Field(description="the refusal's problem code, e.g. missing_reference_price, index_behind_period")
    detail: str
    context: dict[str, Any] = Field(description="the refusal's details, e.g. `intervals` of a missing price")


class SettlementJobOut(ResponseModel):
    """A requested run: queued, running (with its step), succeeded (with the run) or failed (why)."""

    job_id: str
    period_start: UtcTime
    period_end: UtcTime
    status: Literal["queued", "running", "succeeded", "failed"]
    requested_by: str
    attempts: int = Field(description="times the worker started it (again after a crash or a passing fault)")
    step: JobStepOut | None = Field(description="the run's last reported step")
    run_id: str | None = Field(description="the run, once succeeded: GET /settlement-runs/{runId}")
    version: int | None
    action: Literal["committed", "resumed", "unchanged"] | None = Field(
        description="committed: a new version; resumed: an interrupted run finished; unchanged: same inputs"
    )
    problem: JobProblemOut | None = Field(description="why it failed (or, queued again, why it is retried)")
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None

    @classmethod
    def of(cls, job: JobView) -> SettlementJobOut:
        step = None
        if job.step is not None:
            step = JobStepOut(name=job.step, detail=job.step_detail, done=job.step_done, total=job.step_total)
        problem = None
        if job.problem is not None:
            problem = JobProblemOut(
                code=job.problem["code"], detail=job.problem["detail"], context=json_safe(job.problem["context"])
            )
        return cls(
            job_id=job.job_id,
            period_start=job.period_start,
            period_end=job.period_end,
            status=job.status.value,  # type: ignore[arg-type]
            requested_by=job.requested_by,
            attempts=job.attempts,
            step=step,
            run_id=job.run_id,
            version=job.version,
            action=job.action,  # type: ignore[arg-type]
            problem=problem,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )


# --- responses: statements --------------------------------------------------------------------


def _kind_name(kind: LineKind) -> LineKindName:
    return kind.name.lower()  # type: ignore[return-value]


def _interval_of(kind: LineKind, ref: str) -> int | None:
    return int(ref, 16) if kind in _INTERVAL_KINDS else None


class DeltaOut(ResponseModel):
    previous_energy_wh: int | None = Field(description="null: the previous version had no such line")
    previous_amount_minor: int | None
    energy_wh: int = Field(description="this line minus the previous version's")
    amount_minor: int


class LineOut(ResponseModel):
    kind: int
    kind_name: LineKindName
    ref: str
    interval_start: UtcTime | None = Field(description="imbalance and penalty lines: the interval")
    energy_wh: int
    amount_minor: int = Field(description="positive: the account receives; negative: it pays")
    leaf_index: int
    delta: DeltaOut | None = Field(description="against the previous version; null for version 1")
    links: dict[str, str]

    @classmethod
    def of(cls, run_id: str, line: service.LineView) -> LineOut:
        delta = line.delta
        return cls(
            kind=int(line.kind),
            kind_name=_kind_name(line.kind),
            ref=line.ref,
            interval_start=_interval_of(line.kind, line.ref),
            energy_wh=line.energy_wh,
            amount_minor=line.amount_minor,
            leaf_index=line.leaf_index,
            delta=None
            if delta is None
            else DeltaOut(
                previous_energy_wh=delta.previous_energy_wh,
                previous_amount_minor=delta.previous_amount_minor,
                energy_wh=delta.energy_wh,
                amount_minor=delta.amount_minor,
            ),
            links={"proof": f"/settlement-runs/{run_id}/lines/{line.account}/{int(line.kind)}/{line.ref}/proof"},
        )


class RemovedLineOut(ResponseModel):
    """A line the previous version had and this one has not: its delta is minus its values."""

    kind: int
    kind_name: LineKindName
    ref: str
    previous_energy_wh: int
    previous_amount_minor: int


class PositionOut(ResponseModel):
    """SETTLEMENT.md "Positions" of the account in one interval (Wh)."""

    interval_start: UtcTime
    sold_wh: int
    bought_wh: int
    contracted_wh: int = Field(description="C = sold - bought")
    metered_wh: int = Field(description="M = injected - withdrawn; = C where estimated")
    imbalance_wh: int = Field(description="D = M - C")
    tolerance_wh: int = Field(description="T = floor(|C| x toleranceBps / 10,000)")
    excess_wh: int = Field(description="E = max(0, |D| - T)")
    estimated: bool = Field(description="no reading: metered = contracted")
    reading_quality: Literal["measured", "estimated", "substituted"] | None
    reading_batch_id: str | None
    reading_version: int | None

    @classmethod
    def of(cls, position: service.PositionView) -> PositionOut:
        quality = position.reading_quality
        return cls(
            interval_start=position.interval_start,
            sold_wh=position.sold_wh,
            bought_wh=position.bought_wh,
            contracted_wh=position.contracted_wh,
            metered_wh=position.metered_wh,
            imbalance_wh=position.imbalance_wh,
            tolerance_wh=position.tolerance_wh,
            excess_wh=position.excess_wh,
            estimated=position.estimated,
            reading_quality=None if quality is None else quality.value,  # type: ignore[arg-type]
            reading_batch_id=position.reading_batch_id,
            reading_version=position.reading_version,
        )


class StatementOut(ResponseModel):
    run: RunSummaryOut
    account: str
    total: LineOut | None = Field(description="the account's single net payment obligation (kind 9)")
    lines: list[LineOut] = Field(description="in leaf order: kind, then ref")
    positions: list[PositionOut]
    previous_run_id: str | None = Field(description="the version the deltas are against")
    removed_lines: list[RemovedLineOut]

    @classmethod
    def of(cls, statement: service.Statement) -> StatementOut:
        run_id = statement.run.run_id
        lines = [LineOut.of(run_id, line) for line in statement.lines]
        return cls(
            run=RunSummaryOut.of(statement.run),
            account=statement.account,
            total=next((line for line in lines if line.kind == LineKind.TOTAL), None),
            lines=lines,
            positions=[PositionOut.of(p) for p in statement.positions],
            previous_run_id=statement.previous_run_id,
            removed_lines=[
                RemovedLineOut(
                    kind=int(line.kind),
                    kind_name=_kind_name(line.kind),
                    ref=line.ref,
                    previous_energy_wh=line.previous_energy_wh,
                    previous_amount_minor=line.previous_amount_minor,
                )
                for line in statement.removed_lines
            ],
        )


# --- responses: proofs and disputes -----------------------------------------------------------


class ProofOut(ResponseModel):
    """Verify without GridLedger's code: `StandardMerkleTree.verify(root, leafEncoding, values,
    proof)` of @openzeppelin/merkle-tree, or `verifyLine(runId, ...values[1:], proof)` of the
    Settlement contract at `contractAddress` on chain `chainId`, committed by `transactionHash`."""

    run_id: str
    root: str
    leaf_encoding: list[str]
    values: list[str] = Field(
        description="the leaf [runId, account, kind, ref, energyWh, amountMinor]; numbers as decimal strings"
    )
    leaf_hash: str
    leaf_index: int
    proof: list[str]
    contract_address: str
    chain_id: int
    transaction_hash: str | None
    block_number: int | None

    @classmethod
    def of(cls, proof: service.LineProof) -> ProofOut:
        return cls(
            run_id=proof.run_id,
            root=proof.root,
            leaf_encoding=proof.leaf_encoding,
            values=[str(value) for value in proof.values],
            leaf_hash=proof.leaf_hash,
            leaf_index=proof.leaf_index,
            proof=proof.proof,
            contract_address=proof.contract_address,
            chain_id=proof.chain_id,
            transaction_hash=proof.transaction_hash,
            block_number=proof.block_number,
        )


class DisputeTypedDataOut(ResponseModel):
    typed_data: TypedDataDocument = Field(description="sign as is with eth_signTypedData_v4")
    reason_hash: str


class DisputeOut(ResponseModel):
    dispute_id: str
    run_id: str
    account: str
    kind: int
    kind_name: LineKindName
    ref: str
    energy_wh: int
    amount_minor: int
    leaf_hash: str
    reason: str
    reason_hash: str = Field(description="keccak-256 of the UTF-8 reason, as signed and kept on chain")
    deadline: int = Field(description="of the signature, Unix seconds (uint64)")
    status: DisputeStatusName
    resolution: str | None
    resolution_hash: str | None
    opened_transaction_hash: str
    opened_block_number: int
    opening_confirmed: bool = Field(
        description="false while a reorg has taken the opening back: mined again or relayed again soon"
    )
    resolved_transaction_hash: str | None
    resolved_block_number: int | None
    links: dict[str, str]

    @classmethod
    def of(cls, dispute: service.DisputeView) -> DisputeOut:
        return cls(
            dispute_id=dispute.dispute_id,
            run_id=dispute.run_id,
            account=dispute.account,
            kind=int(dispute.kind),
            kind_name=_kind_name(dispute.kind),
            ref=dispute.ref,
            energy_wh=dispute.energy_wh,
            amount_minor=dispute.amount_minor,
            leaf_hash=dispute.leaf_hash,
            reason=dispute.reason,
            reason_hash=dispute.reason_hash,
            deadline=dispute.deadline,
            status=dispute.status.value,  # type: ignore[arg-type]
            resolution=dispute.resolution,
            resolution_hash=dispute.resolution_hash,
            opened_transaction_hash=dispute.opened_transaction_hash,
            opened_block_number=dispute.opened_block_number,
            opening_confirmed=not dispute.opening_unconfirmed,
            resolved_transaction_hash=dispute.resolved_transaction_hash,
            resolved_block_number=dispute.resolved_block_number,
            links={"self": f"/disputes/{dispute.dispute_id}", "run": f"/settlement-runs/{dispute.run_id}"},
        )
