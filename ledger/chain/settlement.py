"""The Settlement contract, wrapped: one Python method per contract call."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ledger.chain.contract import ContractCalls, hex32
from ledger.chain.transactions import Receipt
from ledger.domain.units import ZERO_ID
from ledger.signing.disputes import LINE_LEAF_ENCODING, DisputeLine, run_id, settlement_domain
from ledger.signing.eip712 import Domain

__all__ = [
    "LINE_LEAF_ENCODING",
    "DisputeStatus",
    "RunStatus",
    "SettlementContract",
    "SettlementRun",
    "run_id",
]


class RunStatus(StrEnum):
    """`ISettlement.RunStatus`, in the Solidity enum's order."""

    UNKNOWN = "unknown"
    OPEN = "open"
    FINAL = "final"
    SUPERSEDED = "superseded"

    @classmethod
    def from_index(cls, index: int) -> RunStatus:
        return list(cls)[index]


class DisputeStatus(StrEnum):
    """`ISettlement.DisputeStatus`, in the Solidity enum's order."""

    NONE = "none"
    OPEN = "open"
    ACCEPTED = "accepted"
    REJECTED = "rejected"

    @classmethod
    def from_index(cls, index: int) -> DisputeStatus:
        return list(cls)[index]

    @property
    def ordinal(self) -> int:
        return list(DisputeStatus).index(self)


@dataclass(frozen=True)
class SettlementRun:
    """A committed run; an unknown run has `root` zero. Ids and hashes as 0x hex."""

    run_id: str
    root: str
    inputs_hash: str
    period_start: int
    period_end: int
    version: int
    line_count: int
    dispute_window_ends: int
    superseded_by: str
    open_disputes: int
    accepted_disputes: int

    @property
    def exists(self) -> bool:
        return self.root != ZERO_ID


@dataclass(frozen=True)
class DisputeRecord:
    dispute_id: str
    run_id: str
    status: DisputeStatus


class SettlementContract(ContractCalls):
    @property
    def domain(self) -> Domain:
        return settlement_domain(self.sender.chain_id, self.address)

    # --- writes ---------------------------------------------------------------------------

    def commit_run(
        self,
        period_start: int,
        period_end: int,
        version: int,
        root: str,
        inputs_hash: str,
        line_count: int,
        total_receivable_minor: int,
        total_payable_minor: int,
    ) -> Receipt:
        """Commits a run (settler); its id is `run_id(period_start, period_end, version)`."""
        return self._transact(
            "commitRun",
            [
                period_start,
                period_end,
                version,
                hex32(root),
                hex32(inputs_hash),
                line_count,
                total_receivable_minor,
                total_payable_minor,
            ],
        )

    def set_dispute_window(self, seconds: int) -> Receipt:
        return self._transact("setDisputeWindow", [seconds])

    def open_dispute(
        self, line: DisputeLine, proof: list[str], reason_hash: str, deadline: int, signature: bytes
    ) -> Receipt:
        """Relays a dispute signed by the line's account; its id is `line.dispute_id()`."""
        return self._transact(
            "openDispute",
            [line.as_tuple(), [hex32(p) for p in proof], hex32(reason_hash), deadline, signature],
        )

    def resolve_dispute(self, dispute_id: str, accepted: bool, resolution_hash: str) -> Receipt:
        return self._transact("resolveDispute", [hex32(dispute_id), accepted, hex32(resolution_hash)])

    # --- reads ----------------------------------------------------------------------------

    def run(self, run_id_hex: str) -> SettlementRun:
        values = self._call("run", [hex32(run_id_hex)])
        root, inputs_hash, start, end, version, lines, window_ends, superseded_by, open_, accepted = values
        return SettlementRun(
            run_id_hex,
            "0x" + root.hex(),
            "0x" + inputs_hash.hex(),
            start,
            end,
            version,
            lines,
            window_ends,
            "0x" + superseded_by.hex(),
            open_,
            accepted,
        )

    def run_status(self, run_id_hex: str) -> RunStatus:
        return RunStatus.from_index(self._call("runStatus", [hex32(run_id_hex)]))

    def latest_version(self, period_start: int, period_end: int) -> int:
        return int(self._call("latestVersion", [period_start, period_end]))

    def run_id_of(self, period_start: int, period_end: int, version: int) -> str:
        """The run id as the contract computes it (`run_id` computes it locally)."""
        return "0x" + self._call("runIdOf", [period_start, period_end, version]).hex()

    def dispute(self, dispute_id: str) -> DisputeRecord:
        run, status = self._call("dispute", [hex32(dispute_id)])
        return DisputeRecord(dispute_id, "0x" + run.hex(), DisputeStatus.from_index(status))

    def dispute_window(self) -> int:
        return int(self._call("disputeWindow", []))

    def verify_line(self, line: DisputeLine, proof: list[str]) -> bool:
        return bool(self._call("verifyLine", [*line.as_tuple(), [hex32(p) for p in proof]]))

    def hash_dispute(self, line: DisputeLine, reason_hash: str, deadline: int) -> str:
        """The contract's EIP-712 digest of a `Dispute` (`ledger.signing.disputes.dispute_digest`)."""
        message: tuple[Any, ...] = (*line.as_tuple(), hex32(reason_hash), deadline)
        return "0x" + self._call("hashDispute", [message]).hex()
