"""The rule of a record after a reorg (pure): where its effect is, what became of its transaction,
what to do with it. See `ledger.services.reconcile`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Fate(StrEnum):
    """What became of a record's own transaction, as the node says after the reorg."""

    MINED = "mined"  # its receipt, status 1
    REVERTED = "reverted"  # mined again, but the re-execution reverted
    PENDING = "pending"  # in the mempool, its nonce not taken by another transaction
    GONE = "gone"  # unknown to the node, or its nonce taken by another transaction


@dataclass(frozen=True)
class Location:
    """Where a transaction had an effect: the block (its hash where the record keeps one) and,
    for a relayed trade, which outcome (recorded or rejected)."""

    transaction_hash: str
    block_number: int
    block_hash: str | None = None
    outcome: str | None = None

    def same_as(self, other: Location) -> bool:
        hashes = None in (self.block_hash, other.block_hash) or self.block_hash == other.block_hash
        return hashes and (self.transaction_hash, self.block_number, self.outcome) == (
            other.transaction_hash,
            other.block_number,
            other.outcome,
        )


class Repair(StrEnum):
    KEEP = "keep"  # the record is true
    MOVE = "move"  # to where the chain has its effect now
    UNCONFIRM = "unconfirm"  # its transaction waits to be mined again
    RESET = "reset"  # its effect is gone: back to where its service retries it


def decide(recorded: Location | None, effect: Location | None, fate: Fate) -> Repair:
    """The repair of a record that says `recorded` (None: submitted, not known to be mined),
    whose effect the chain has at `effect` (None: nowhere), its own transaction being `fate`."""
    if effect is not None:
        return Repair.KEEP if recorded is not None and recorded.same_as(effect) else Repair.MOVE
    if fate is Fate.PENDING:
        return Repair.KEEP if recorded is None else Repair.UNCONFIRM
    return Repair.RESET  # dropped, replaced, reverted, or mined without the effect


@dataclass(frozen=True)
class Record:
    """A service's record of a transaction: `kind` (its table, or disputes' phase), `key` (its id)."""

    kind: str
    key: str
    transaction_hash: str
    recorded: Location | None
