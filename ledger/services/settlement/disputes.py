"""Disputes of a committed line: the EIP-712 document its account signs, relaying the signed
dispute and recording it, the operator's resolution, and (after a reorg) the chain's log of a
dispute or relaying it again."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from eth_utils import keccak
from sqlalchemy.orm import Session

from ledger import errors
from ledger.chain.settlement import DisputeStatus as ChainDisputeStatus
from ledger.chain.transactions import Receipt
from ledger.domain.settlement import LineKind
from ledger.services.chain_facts import ChainFacts
from ledger.services.context import LedgerContext
from ledger.services.settlement.chain_logs import DISPUTE_OPENED, DISPUTE_RESOLVED, find_log, receipt_of_log
from ledger.services.settlement.reads import RunReader
from ledger.services.settlement.trees import TreeCache
from ledger.services.settlement.views import DisputeView
from ledger.signing.disputes import dispute_digest, dispute_typed_data
from ledger.signing.trader import recover_signer
from ledger.store.models import hash32
from ledger.store.settlement_models import Dispute, DisputeStatus, RunStatus, StatementLine


class DisputeDesk:
    """Relays and records disputes of stored lines, and the operator's decisions on them."""

    def __init__(self, context: LedgerContext, chain_facts: ChainFacts, reader: RunReader, trees: TreeCache) -> None:
        self._context = context
        self._sessions = context.sessions
        self._read_sessions = context.read_sessions
        self._settler = context.settler
        self._operator = context.settlement_operator
        self._chain_facts = chain_facts
        self._reader = reader
        self._trees = trees

    def dispute_typed_data(
        self, identity: str, account: str, kind: int, ref: str, reason: str, deadline: int
    ) -> dict[str, Any]:
        """The EIP-712 document the line's account signs (`eth_signTypedData_v4`) to dispute it."""
        _, line, _ = self._reader.line(identity, account, kind, ref)
        return dispute_typed_data(self._operator.domain, line, _text_hash(reason), deadline)

    def open_dispute(
        self, identity: str, account: str, kind: int, ref: str, reason: str, deadline: int, signature: bytes
    ) -> DisputeView:
        """Relays a dispute signed by the line's account (EIP-712 `Dispute`, with `reasonHash` =
        keccak-256 of the UTF-8 reason) and records it. The same dispute again returns the
        recorded one (`created` False)."""
        if not reason.strip():
            raise errors.ValidationError("a dispute needs a reason", field="reason")
        run, line, leaf_index = self._reader.line(identity, account, kind, ref)
        reason_hash = _text_hash(reason)
        dispute_id = line.dispute_id()
        with self._read_sessions() as session:
            existing = session.get(Dispute, dispute_id)
            if existing is not None:
                if existing.reason_hash != reason_hash:
                    raise errors.DisputeExists(
                        "this line is disputed already", dispute_id=dispute_id, status=existing.status.value
                    )
                return self._dispute_view(session, existing)
        if run.status is RunStatus.COMPUTED:
            raise errors.UnknownRun("the run is not committed on chain yet", run_id=run.run_id)
        if (
            recover_signer(dispute_digest(self._operator.domain, line, reason_hash, deadline), signature)
            != line.account
        ):
            raise errors.InvalidDisputeSignature(
                "the dispute is not signed by the line's account", run_id=run.run_id, account=line.account
            )
        proof = self._trees.tree(run).get_proof(leaf_index)
        try:
            receipt = self._operator.open_dispute(line, proof, reason_hash, deadline, signature)
        except errors.DisputeExists:
            # Relayed before by an invocation that died before recording it: take the chain's log.
            log = find_log(self._context, DISPUTE_OPENED, dispute_id)
            if log is None:
                raise
            receipt = receipt_of_log(log)
        opened = receipt.transaction_hash, receipt.block_number
        block = self._chain_facts.block(receipt.block_hash)
        with self._sessions.begin() as session:
            self._chain_facts.write(session, receipt.logs, block)
            row = Dispute(
                dispute_id=dispute_id,
                run_id=run.run_id,
                account=line.account,
                kind=line.kind,
                ref=line.ref,
                leaf_hash="0x" + line.leaf_hash().hex(),
                reason=reason,
                reason_hash=reason_hash,
                deadline=str(deadline),
                signature="0x" + signature.hex(),
                status=DisputeStatus.OPEN,
                opened_transaction_hash=opened[0],
                opened_block_number=opened[1],
            )
            session.add(row)
            session.flush()
            view = self._dispute_view(session, row)
        return replace(view, created=True)

    def resolve_dispute(self, dispute_id: str, accepted: bool, resolution: str) -> DisputeView:
        """The operator's decision, on chain (`resolutionHash` = keccak-256 of the resolution
        text) and in the index. The same decision again returns the recorded one."""
        dispute_id = hash32(dispute_id, field="dispute_id")
        if not resolution.strip():
            raise errors.ValidationError("a resolution needs its reasons", field="resolution")
        decided = DisputeStatus.ACCEPTED if accepted else DisputeStatus.REJECTED
        resolution_hash = _text_hash(resolution)
        with self._read_sessions() as session:
            row = session.get(Dispute, dispute_id)
            if row is None:
                raise errors.NotFoundError("no such dispute", dispute_id=dispute_id)
            if row.status is not DisputeStatus.OPEN:
                if (row.status, row.resolution_hash) == (decided, resolution_hash):
                    return self._dispute_view(session, row)
                raise errors.DisputeNotOpen(
                    "the dispute is resolved already", dispute_id=dispute_id, status=row.status.value
                )
        try:
            receipt = self._operator.resolve_dispute(dispute_id, accepted, resolution_hash)
        except errors.DisputeNotOpen:
            # Resolved by an invocation that died before recording it: only adopt the same decision.
            log = find_log(self._context, DISPUTE_RESOLVED, dispute_id)
            if log is None or self._operator.dispute(dispute_id).status.value != decided.value:
                raise
            receipt = receipt_of_log(log)
        resolved = receipt.transaction_hash, receipt.block_number
        block = self._chain_facts.block(receipt.block_hash)
        with self._sessions.begin() as session:
            self._chain_facts.write(session, receipt.logs, block)
            row = session.get(Dispute, dispute_id)
            assert row is not None
            row.status = decided
            row.resolution = resolution
            row.resolution_hash = resolution_hash
            row.resolved_transaction_hash, row.resolved_block_number = resolved
            session.flush()
            return self._dispute_view(session, row)

    def get_dispute(self, dispute_id: str) -> DisputeView:
        dispute_id = hash32(dispute_id, field="dispute_id")
        with self._read_sessions() as session:
            row = session.get(Dispute, dispute_id)
            if row is None:
                raise errors.NotFoundError("no such dispute", dispute_id=dispute_id)
            return self._dispute_view(session, row)

    @staticmethod
    def _dispute_view(session: Session, row: Dispute) -> DisputeView:
        line = session.get(StatementLine, (row.run_id, row.account, row.kind, row.ref))
        assert line is not None  # a dispute is only ever recorded for a stored line
        return DisputeView(
            dispute_id=row.dispute_id,
            run_id=row.run_id,
            account=row.account,
            kind=LineKind(row.kind),
            ref=row.ref,
            energy_wh=line.energy_wh,
            amount_minor=line.amount_minor,
            leaf_hash=row.leaf_hash,
            reason=row.reason,
            reason_hash=row.reason_hash,
            deadline=int(row.deadline),
            status=row.status,
            resolution=row.resolution,
            resolution_hash=row.resolution_hash,
            opened_transaction_hash=row.opened_transaction_hash,
            opened_block_number=row.opened_block_number,
            opening_unconfirmed=row.opening_unconfirmed,
            resolved_transaction_hash=row.resolved_transaction_hash,
            resolved_block_number=row.resolved_block_number,
        )

    # --- after a reorg (ledger.services.reconcile) -------------------------------------------

    def dispute_log(self, dispute_id: str, *, resolved: bool) -> Receipt | None:
        """The chain's DisputeOpened (or DisputeResolved) log of the dispute, as a one-log receipt,
        or None when the chain has no such event (a reorg took it, or it never happened)."""
        status = self._operator.dispute(dispute_id).status
        decided = (ChainDisputeStatus.ACCEPTED, ChainDisputeStatus.REJECTED)
        if (status not in decided) if resolved else (status is ChainDisputeStatus.NONE):
            return None
        log = find_log(self._context, DISPUTE_RESOLVED if resolved else DISPUTE_OPENED, dispute_id)
        return None if log is None else receipt_of_log(log)

    def relay_dispute_again(self, dispute_id: str) -> Receipt | None:
        """Relays a recorded dispute once more with its stored signature (a reorg dropped the
        transaction that opened it); the chain's log if it has the dispute already, since the
        contract opens a dispute id only once. None while the chain lacks the dispute's run (the
        reorg took its commit too): the run is committed again first, by the next `execute`."""
        with self._read_sessions() as session:
            row = session.get(Dispute, hash32(dispute_id, field="dispute_id"))
            if row is None:
                raise errors.NotFoundError("no such dispute", dispute_id=dispute_id)
            stored = row.run_id, row.account, row.kind, row.ref, row.reason_hash, int(row.deadline), row.signature
        identity, account, kind, ref, reason_hash, deadline, signature = stored
        if not self._settler.run(identity).exists:
            return None
        run, line, leaf_index = self._reader.line(identity, account, kind, ref)
        proof = self._trees.tree(run).get_proof(leaf_index)
        try:
            return self._operator.open_dispute(line, proof, reason_hash, deadline, bytes.fromhex(signature[2:]))
        except errors.DisputeExists:
            receipt = self.dispute_log(dispute_id, resolved=False)
            if receipt is None:
                raise
            return receipt


def _text_hash(text: str) -> str:
    """`keccak256(bytes(text))` of the UTF-8 text: what the chain keeps of reasons and resolutions."""
    return "0x" + keccak(text=text).hex()
