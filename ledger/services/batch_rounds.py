"""What the relayer and the registrar share: their worker loop, the recovery of batches left
pending by a previous process or a failed round, and the sending of a round's signed batches."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from ledger import errors
from ledger.chain.rpc import JsonRpc
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.chain.transactions import Receipt, SignedTransaction, TransactionSender

# A batch whose transaction failed as a whole this often is rejected rather than retried forever.
MAX_ATTEMPTS = 5


class Round(Protocol):
    @property
    def sent(self) -> int: ...

    @property
    def waiting(self) -> int: ...


def run_rounds(
    stop: threading.Event,
    recover: Callable[[], Round],
    round_: Callable[[], Round],
    *,
    batch_window: float,
    log: logging.Logger,
    name: str,
) -> None:
    """Runs rounds until `stop` is set; a failing round is logged (on the worker's `log`) and
    retried, never fatal.

    Pending rows, a previous process's or those of a round that failed after sending, are
    resolved first, and again before every round for as long as the node still holds one of
    their transactions unmined."""
    unresolved = True
    while not stop.is_set():
        try:
            if unresolved:
                unresolved = recover().waiting > 0
            result = round_()
        except errors.LedgerError as exc:
            if stop.is_set():
                break  # what was sent is resolved by the next start's `recover`
            log.warning("%s round failed (%s): %s; retrying", name, exc.code, exc)
            unresolved = True
            stop.wait(1.0)
            continue
        if result.sent == 0:
            stop.wait(batch_window)


class PendingRow(Protocol):
    @property
    def transaction_hash(self) -> str | None: ...


Row = TypeVar("Row", bound=PendingRow)


@dataclass(frozen=True)
class Pending(Generic[Row]):
    """Pending rows by what became of their transaction."""

    mined: list[tuple[str, list[Row], Receipt]] = field(default_factory=list)
    waiting: list[Row] = field(default_factory=list)  # the node holds it, unmined: look again later
    lost: list[Row] = field(default_factory=list)  # none, or one the node no longer knows: send again


def look_up(rpc: JsonRpc, rows: Sequence[Row]) -> Pending[Row]:
    """Asks the node about the transaction of every pending row."""
    by_tx: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_tx[row.transaction_hash or ""].append(row)
    found: Pending[Row] = Pending()
    for tx_hash, group in by_tx.items():
        receipt = rpc.call("eth_getTransactionReceipt", tx_hash) if tx_hash else None
        if receipt is not None:
            found.mined.append((tx_hash, group, Receipt.from_rpc(receipt)))
        elif tx_hash and rpc.call("eth_getTransactionByHash", tx_hash) is not None:
            found.waiting.extend(group)
        else:
            found.lost.extend(group)
    return found


class SignedBatch(Protocol):
    @property
    def tx_hash(self) -> str: ...

    @property
    def tx(self) -> SignedTransaction | None: ...  # None for a batch recovered after a restart


Batch = TypeVar("Batch", bound=SignedBatch)


def send(
    sender: TransactionSender,
    batches: Sequence[Batch],
    requeue: Callable[[Batch], int],
    *,
    timeout: float,
    stop: threading.Event,
    log: logging.Logger,
    what: str,
) -> tuple[list[tuple[Batch, Receipt]], int]:
    """Broadcasts the batches' transactions in one JSON-RPC batch, requeues those the node refuses
    (`requeue` answers how many rows it queued again) and waits for the others' receipts: the
    mined batches with their receipts, and the number of rows requeued. A transaction lost
    meanwhile (TransactionLost) fails the round: `run_rounds` recovers its batch."""
    refused = sender.broadcast([b.tx for b in batches if b.tx is not None])
    requeued = 0
    for batch in batches:
        if batch.tx_hash in refused:
            log.warning("node refused %s %s: %s", what, batch.tx_hash, refused[batch.tx_hash])
            requeued += requeue(batch)
    in_flight = [b for b in batches if b.tx_hash not in refused]
    receipts = sender.wait([b.tx_hash for b in in_flight], timeout=timeout, stop=stop)
    return [(b, receipts[b.tx_hash]) for b in in_flight], requeued


def revert_reason(contract: TradeLedgerContract, batch: SignedBatch, receipt: Receipt) -> errors.LedgerError:
    """Why a batch's transaction reverted as a whole, replayed when this process signed it."""
    if batch.tx is None:
        return errors.ContractReverted("batch transaction reverted", tx=batch.tx_hash)
    return contract.sender.revert_reason(batch.tx, receipt, contract.errors.decode)
