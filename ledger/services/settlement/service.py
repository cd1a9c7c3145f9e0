"""`SettlementService`: the one entry point of settlement for the API, the scripts and the
reconciler. It composes the parts of this package over one context, sharing their tree cache."""

from __future__ import annotations

from typing import Any

from ledger.chain.transactions import Receipt
from ledger.services.chain_facts import ChainFacts
from ledger.services.context import LedgerContext
from ledger.services.settlement.commits import CommitProvenance, RunCommitter
from ledger.services.settlement.disputes import DisputeDesk
from ledger.services.settlement.inputs import GatheredInputs, InputGatherer
from ledger.services.settlement.progress import Progress
from ledger.services.settlement.reads import RunReader
from ledger.services.settlement.runs import RunExecutor
from ledger.services.settlement.trees import TreeCache
from ledger.services.settlement.views import (
    ChainState,
    DisputeView,
    LineProof,
    RunDetail,
    RunOutcome,
    RunSummary,
    Statement,
)
from ledger.store.settlement_models import RunStatus


class SettlementService:
    """Settlement runs, their statements and proofs, and disputes: see the package docstring."""

    def __init__(self, context: LedgerContext) -> None:
        chain_facts = ChainFacts(context.rpc, context.deployment)
        # One cache for all parts: the tree a run just built serves its first proofs and disputes.
        trees = TreeCache(context)
        self._inputs = InputGatherer(context)
        self._committer = RunCommitter(context, chain_facts)
        self._runs = RunExecutor(context, self._inputs, self._committer, trees)
        self._reader = RunReader(context, trees)
        self._disputes = DisputeDesk(context, chain_facts, self._reader, trees)

    @property
    def balancing_account(self) -> str:
        return self._inputs.balancing_account

    # --- the run (runs, inputs, commits) ---------------------------------------------------

    def execute(self, period_start: int, period_end: int, *, progress: Progress | None = None) -> RunOutcome:
        return self._runs.execute(period_start, period_end, progress=progress)

    def gather_inputs(self, period_start: int, period_end: int) -> GatheredInputs:
        return self._inputs.gather(period_start, period_end)

    # --- after a reorg (ledger.services.reconcile) -------------------------------------------

    def locate_commit(self, identity: str) -> CommitProvenance | None:
        return self._committer.locate(identity)

    def dispute_log(self, dispute_id: str, *, resolved: bool) -> Receipt | None:
        return self._disputes.dispute_log(dispute_id, resolved=resolved)

    def relay_dispute_again(self, dispute_id: str) -> Receipt | None:
        return self._disputes.relay_dispute_again(dispute_id)

    # --- reads -----------------------------------------------------------------------------

    def list_runs(
        self,
        *,
        period_start: int | None = None,
        period_end: int | None = None,
        status: RunStatus | None = None,
        limit: int = 100,
    ) -> list[RunSummary]:
        return self._reader.list_runs(period_start=period_start, period_end=period_end, status=status, limit=limit)

    def get_run(self, identity: str) -> RunDetail:
        return self._reader.get_run(identity)

    def chain_state(self, identity: str) -> ChainState | None:
        return self._reader.chain_state(identity)

    def statement(self, identity: str, account: str) -> Statement:
        return self._reader.statement(identity, account)

    def line_proof(self, identity: str, account: str, kind: int, ref: str) -> LineProof:
        return self._reader.line_proof(identity, account, kind, ref)

    # --- disputes --------------------------------------------------------------------------

    def dispute_typed_data(
        self, identity: str, account: str, kind: int, ref: str, reason: str, deadline: int
    ) -> dict[str, Any]:
        return self._disputes.dispute_typed_data(identity, account, kind, ref, reason, deadline)

    def open_dispute(
        self, identity: str, account: str, kind: int, ref: str, reason: str, deadline: int, signature: bytes
    ) -> DisputeView:
        return self._disputes.open_dispute(identity, account, kind, ref, reason, deadline, signature)

    def resolve_dispute(self, dispute_id: str, accepted: bool, resolution: str) -> DisputeView:
        return self._disputes.resolve_dispute(dispute_id, accepted, resolution)

    def get_dispute(self, dispute_id: str) -> DisputeView:
        return self._disputes.get_dispute(dispute_id)
