"""Putting a computed run's root on chain and marking the run committed: sending the commit, or
finding it on chain (sent by an invocation that died, or moved by a reorg) and adopting it once
it is proven to be the same run. See the package docstring for how a commit resumes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from ledger import errors
from ledger.chain.contract import hex32
from ledger.chain.settlement import SettlementRun as ChainRun
from ledger.chain.transactions import Receipt, SignedTransaction
from ledger.indexer.ports import BlockHeader
from ledger.services.chain_facts import ChainFacts
from ledger.services.context import LedgerContext
from ledger.services.settlement.chain_logs import RUN_COMMITTED, find_log, receipt_of_log
from ledger.services.settlement.errors import RunMismatch
from ledger.services.settlement.progress import Progress, ProgressEvent, Step
from ledger.services.settlement.reads import run_row
from ledger.services.settlement.views import RunSummary
from ledger.store.settlement_models import RunStatus, SettlementRun

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommitProvenance:
    """Where a run's commit is on chain, and what the index records of it."""

    transaction_hash: str
    block_number: int
    block_hash: str
    committed_at: int
    dispute_window_ends: int
    gas_used: int | None
    logs: list[dict[str, Any]]  # of the commit's receipt (or the RunCommitted log alone), for ChainFacts
    block: BlockHeader


class RunCommitter:
    """Takes a `computed` run to `committed`: on chain first, then in the index."""

    def __init__(self, context: LedgerContext, chain_facts: ChainFacts) -> None:
        self._context = context
        self._sessions = context.sessions
        self._read_sessions = context.read_sessions
        self._settler = context.settler
        self._chain_facts = chain_facts

    def commit(self, identity: str, report: Progress) -> tuple[RunSummary, int | None]:
        """Puts a `computed` run on chain (or finds it there) and marks it committed."""
        with self._read_sessions() as session:
            row = session.get(SettlementRun, identity)
            if row is None:
                raise errors.NotFoundError("no such settlement run", run_id=identity)
            run = RunSummary.of(row)
        if run.status is not RunStatus.COMPUTED:
            return run, None
        report(ProgressEvent(Step.COMMITTING, f"version {run.version}, root {run.root}"))
        provenance = self._on_chain(run) or self._send_commit(run)
        return self._mark_committed(identity, provenance), provenance.gas_used

    def locate(self, identity: str) -> CommitProvenance | None:
        """Where the chain has the commit of the stored run `identity` now, or None when it has
        none: after a reorg, the block its transaction was mined again in, or another one's."""
        with self._read_sessions() as session:
            run = RunSummary.of(run_row(session, identity))
        chain_run = self._settler.run(run.run_id)
        return self._adopt(run, chain_run) if chain_run.exists else None

    def _on_chain(self, run: RunSummary) -> CommitProvenance | None:
        """The commit of `run` if the chain has it, or will have it (its transaction pending)."""
        chain_run = self._settler.run(run.run_id)
        if chain_run.exists:
            return self._adopt(run, chain_run)
        if run.transaction_hash is not None and self._transaction_known(run.transaction_hash):
            return self._await_commit(run, run.transaction_hash)
        return None

    def _send_commit(self, run: RunSummary) -> CommitProvenance:
        settler, sender = self._settler, self._settler.sender
        data = settler.encode("commitRun", _commit_arguments(run))
        try:
            gas = sender.estimate_gas(settler.address, data, settler.errors.decode)
        except errors.DuplicateRun:  # committed between our look and now (another process)
            return self._adopt(run, settler.run(run.run_id))
        # Re-read the nonce: a transaction signed but never sent (a crash, another process using
        # the key) must not leave a gap that would hold this one back forever.
        sender.nonces.resync()
        tx = sender.sign(settler.address, data, gas)
        self._record_transaction(run.run_id, tx.hash)  # before broadcasting: see the package docstring
        refused = sender.broadcast([tx])
        if refused:
            raise errors.ChainError(f"node refused the commit transaction: {refused[tx.hash]}", tx=tx.hash)
        return self._await_commit(run, tx.hash)

    def _await_commit(self, run: RunSummary, tx_hash: str) -> CommitProvenance:
        settler, sender = self._settler, self._settler.sender
        receipt = sender.wait([tx_hash])[tx_hash]
        if receipt.status != 1:
            replay = SignedTransaction(
                tx_hash, "", 0, settler.address, settler.encode("commitRun", _commit_arguments(run))
            )
            reason = sender.revert_reason(replay, receipt, settler.errors.decode)
            if isinstance(reason, errors.DuplicateRun):
                return self._adopt(run, settler.run(run.run_id))
            raise reason
        provenance = self._provenance(run.run_id, receipt)
        if provenance is None:
            raise errors.ChainError("the commit transaction emitted no RunCommitted", tx=tx_hash, run_id=run.run_id)
        return provenance

    def _adopt(self, run: RunSummary, chain_run: ChainRun) -> CommitProvenance:
        """Takes the chain's commit of `run.run_id` as ours once it is proven to be the same run."""
        if (chain_run.root, chain_run.inputs_hash) != (run.root, run.inputs_hash):
            raise RunMismatch(
                "the chain has this run id with another root or inputs hash",
                run_id=run.run_id,
                chain_root=chain_run.root,
                index_root=run.root,
                chain_inputs_hash=chain_run.inputs_hash,
                index_inputs_hash=run.inputs_hash,
            )
        if run.transaction_hash is not None:
            raw = self._context.rpc.call("eth_getTransactionReceipt", run.transaction_hash)
            if raw is not None:
                provenance = self._provenance(run.run_id, Receipt.from_rpc(raw))
                if provenance is not None:
                    return provenance
        log = find_log(self._context, RUN_COMMITTED, run.run_id)
        if log is None:
            raise errors.ChainError("the chain has the run but no RunCommitted log of it", run_id=run.run_id)
        provenance = self._provenance(run.run_id, receipt_of_log(log))
        assert provenance is not None  # the log is a RunCommitted of this run
        return provenance

    def _provenance(self, identity: str, receipt: Receipt) -> CommitProvenance | None:
        committed = [e for e in self._settler.events(receipt, "RunCommitted") if e["runId"] == identity]
        if not committed:
            return None
        block = self._chain_facts.block(receipt.block_hash)
        if block is None:
            # The commit's block was replaced: its transaction is re-mined or dropped. The run stays
            # computed, and the next invocation finds where the chain has it now.
            raise errors.ChainError("the commit's block is no longer on the chain", block_hash=receipt.block_hash)
        return CommitProvenance(
            transaction_hash=receipt.transaction_hash,
            block_number=receipt.block_number,
            block_hash=receipt.block_hash,
            committed_at=block.timestamp,
            dispute_window_ends=int(committed[0]["disputeWindowEnds"]),
            gas_used=receipt.gas_used or None,
            logs=receipt.logs,
            block=block,
        )

    def _record_transaction(self, identity: str, tx_hash: str) -> None:
        with self._sessions.begin() as session:
            row = session.get(SettlementRun, identity)
            assert row is not None
            row.transaction_hash = tx_hash

    def _mark_committed(self, identity: str, provenance: CommitProvenance) -> RunSummary:
        """The run done, and the period's earlier committed version superseded: one transaction."""
        with self._sessions.begin() as session:
            row = session.get(SettlementRun, identity)
            assert row is not None
            earlier = session.scalars(
                select(SettlementRun).where(
                    SettlementRun.period_start == row.period_start,
                    SettlementRun.period_end == row.period_end,
                    SettlementRun.version < row.version,
                    SettlementRun.status == RunStatus.COMMITTED,
                )
            )
            for previous in earlier:
                previous.status = RunStatus.SUPERSEDED
                previous.superseded_by = identity
            row.status = RunStatus.COMMITTED
            row.transaction_hash = provenance.transaction_hash
            row.block_number = provenance.block_number
            row.block_hash = provenance.block_hash
            row.committed_at = provenance.committed_at
            row.dispute_window_ends = provenance.dispute_window_ends
            self._chain_facts.write(session, provenance.logs, provenance.block)
            session.flush()
            summary = RunSummary.of(row)
        log.info(
            "settlement run %s committed in block %d (transaction %s)",
            identity,
            provenance.block_number,
            provenance.transaction_hash,
            extra={"event": "run_committed", "run": identity, "block": provenance.block_number},
        )
        return summary

    def _transaction_known(self, tx_hash: str) -> bool:
        return self._context.rpc.call("eth_getTransactionByHash", tx_hash) is not None


def _commit_arguments(run: RunSummary) -> list[Any]:
    return [
        run.period_start,
        run.period_end,
        run.version,
        hex32(run.root),
        hex32(run.inputs_hash),
        run.line_count,
        run.total_receivable_minor,
        run.total_payable_minor,
    ]
