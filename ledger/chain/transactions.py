"""Signing and sending transactions from one key: nonces, fees, receipts, revert reasons."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy.orm import Session, sessionmaker

from ledger import errors
from ledger.chain.rpc import JsonRpc, RpcCallError, RpcError
from ledger.store import senders

# Gas estimates on a busy chain move with state (cold vs warm slots); a margin keeps a batch
# from running out of gas when an earlier transaction in the block warmed or changed storage.
GAS_MARGIN_PERCENT = 20

FEE_CACHE_SECONDS = 1.0
# How often `wait` asks whether the node still holds the transactions it has no receipt for.
LOST_CHECK_SECONDS = 3.0
# Sends of one transaction whose nonce the node refused (`transact`), and the pauses before each
# new try of a "nonce too high" (`broadcast`).
SEND_ATTEMPTS = 3
TOO_HIGH_RETRY_PAUSES = (0.0, 0.05, 0.2)

log = logging.getLogger(__name__)

ErrorDecoderFn = Callable[[bytes], errors.LedgerError]


@dataclass(frozen=True)
class Receipt:
    transaction_hash: str
    block_number: int
    block_hash: str
    status: int
    gas_used: int
    logs: list[dict[str, Any]]

    @classmethod
    def from_rpc(cls, raw: dict[str, Any]) -> Receipt:
        return cls(
            transaction_hash=raw["transactionHash"],
            block_number=int(raw["blockNumber"], 16),
            block_hash=raw["blockHash"],
            status=int(raw["status"], 16),
            gas_used=int(raw["gasUsed"], 16),
            logs=raw["logs"],
        )


@dataclass(frozen=True)
class SignedTransaction:
    hash: str
    raw: str
    nonce: int
    to: str | None
    data: str


class NonceManager:
    """Hands out consecutive nonces for one sender.

    With `sessions` (the ledger's database), every nonce comes from the key's row there
    (`ledger.store.senders`), so all processes signing with the key share one owner of its nonces.
    Without, the node is asked once, at the first use and again after `resync`, and this object
    must be the key's only user.

    `resync` is for a nonce that will never be mined (a refusal, a transaction the node lost, one
    signed but never sent): the next nonce handed out is the chain's count again, so no gap stays
    behind to hold later transactions back."""

    def __init__(self, rpc: JsonRpc, address: str, sessions: sessionmaker[Session] | None = None) -> None:
        self._rpc = rpc
        self._address = address
        self._sessions = sessions
        self._next: int | None = None
        self._lock = threading.Lock()
        self._bound = threading.local()

    def take(self) -> int:
        if self._sessions is None:
            with self._lock:
                if self._next is None:
                    self._next = self.chain_next()
                nonce = self._next
                self._next += 1
                return nonce
        chain_next = self.chain_next()
        session: Session | None = getattr(self._bound, "session", None)
        if session is not None:
            return senders.allocate(session, self._address, chain_next)
        with self._sessions.begin() as own:
            return senders.allocate(own, self._address, chain_next)

    def resync(self) -> None:
        if self._sessions is None:
            with self._lock:
                self._next = None
            return
        chain_next = self.chain_next()
        with self._sessions.begin() as session:
            senders.rewind(session, self._address, chain_next)

    @contextmanager
    def within(self, session: Session) -> Iterator[None]:
        """Nonces taken in this thread meanwhile come from `session`'s transaction: they are
        committed with the caller's records of the signed transactions, or given back with them
        on a rollback. (On SQLite a second write transaction from this thread would wait for the
        caller's lock until its busy timeout.)"""
        self._bound.session = session
        try:
            yield
        except BaseException:
            if self._sessions is None:  # nothing rolls back an in-memory count
                with self._lock:
                    self._next = None
            raise
        finally:
            self._bound.session = None

    def chain_next(self) -> int:
        """The account's nonce count on the chain, with the transactions its mempool can mine."""
        return int(self._rpc.call("eth_getTransactionCount", self._address, "pending"), 16)


class TransactionLost(errors.ChainError):
    """The node no longer knows a transaction it accepted (a restart emptied its mempool, or it
    was replaced): its nonce is free again and its calls were not made."""

    code = "transaction_lost"


class WaitInterrupted(errors.ChainError):
    """A stop was asked for while receipts were awaited; the transactions may still be mined."""

    code = "wait_interrupted"


class TransactionSender:
    """Signs and sends from one key. Given the ledger's `sessions`, its nonces come from the
    database (see NonceManager): every process may then build a sender for the same key."""

    def __init__(
        self, rpc: JsonRpc, account: LocalAccount, chain_id: int, *, sessions: sessionmaker[Session] | None = None
    ) -> None:
        self.rpc = rpc
        self.account = account
        self.chain_id = chain_id
        self.nonces = NonceManager(rpc, account.address, sessions)
        self._fees_cache: tuple[float, tuple[int, int]] | None = None

    @property
    def address(self) -> str:
        return str(self.account.address)

    def estimate_gas(self, to: str | None, data: str, decode_error: ErrorDecoderFn) -> int:
        call = {"from": self.address, "data": data} | ({"to": to} if to else {})
        try:
            estimate = int(self.rpc.call("eth_estimateGas", call), 16)
        except RpcCallError as exc:
            raise _typed(exc.error, decode_error) from exc
        return estimate * (100 + GAS_MARGIN_PERCENT) // 100

    def sign(self, to: str | None, data: str, gas: int) -> SignedTransaction:
        """`to` None creates a contract."""
        max_fee, priority_fee = self._fees()
        nonce = self.nonces.take()
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "data": data,
            "gas": gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": priority_fee,
            "value": 0,
        } | ({"to": to} if to else {})
        signed = self.account.sign_transaction(tx)
        return SignedTransaction("0x" + signed.hash.hex(), "0x" + signed.raw_transaction.hex(), nonce, to, data)

    def broadcast(self, transactions: list[SignedTransaction]) -> dict[str, str]:
        """Sends signed transactions in one JSON-RPC batch; returns the refusals by transaction
        hash. A transaction the node already knows counts as sent (a re-broadcast after a restart).
        After a refusal the nonce manager re-reads the account's nonce, so no gap stays behind."""
        answers = self.rpc.batch([("eth_sendRawTransaction", [t.raw]) for t in transactions])
        refused = {
            tx.hash: answer.message
            for tx, answer in zip(transactions, answers, strict=True)
            if isinstance(answer, RpcError) and "already" not in answer.message.lower()
        }
        # An automining Hardhat node runs the calls of a batch concurrently and cannot queue a
        # nonce ahead of the next: those are sent again one by one, in nonce order. The lower nonce
        # may also be another process's, sent a moment later: a few tries, a little apart.
        for pause in TOO_HIGH_RETRY_PAUSES:
            too_high = [t for t in transactions if "nonce too high" in refused.get(t.hash, "").lower()]
            if not too_high:
                break
            time.sleep(pause)
            for tx in sorted(too_high, key=lambda t: t.nonce):
                try:
                    self.rpc.call("eth_sendRawTransaction", tx.raw)
                    del refused[tx.hash]
                except RpcCallError as exc:
                    refused[tx.hash] = exc.error.message
        if refused:
            self.nonces.resync()
        return refused

    def wait(
        self,
        tx_hashes: list[str],
        *,
        timeout: float = 120.0,
        max_poll: float = 0.25,
        stop: threading.Event | None = None,
    ) -> dict[str, Receipt]:
        """Receipts of all `tx_hashes`, polled in batches: at once, then backing off to `max_poll`
        (an automining node answers within milliseconds, an interval-mining one within a block).

        Every LOST_CHECK_SECONDS without all receipts, the node is asked whether it still holds
        the missing transactions: TransactionLost (after a resync of the nonces) when one is gone,
        and a gap below one held back (a nonce taken and never sent) is filled. WaitInterrupted
        as soon as `stop` is set."""
        deadline = time.monotonic() + timeout
        next_check = time.monotonic() + LOST_CHECK_SECONDS
        held_back: set[int] = set()
        receipts: dict[str, Receipt] = {}
        poll = 0.005
        while True:
            missing = [h for h in tx_hashes if h not in receipts]
            if not missing:
                return receipts
            for h, raw in zip(
                missing, self.rpc.batch([("eth_getTransactionReceipt", [h]) for h in missing]), strict=True
            ):
                if isinstance(raw, dict):
                    receipts[h] = Receipt.from_rpc(raw)
            if len(receipts) < len(tx_hashes):
                if time.monotonic() > deadline:
                    raise errors.ChainError("timed out waiting for receipts", missing=missing)
                if time.monotonic() > next_check:
                    held_back = self._check_missing([h for h in missing if h not in receipts], held_back)
                    next_check = time.monotonic() + LOST_CHECK_SECONDS
                if stop is None:
                    time.sleep(poll)
                elif stop.wait(poll):
                    raise WaitInterrupted("stopped while waiting for receipts", missing=missing)
                poll = min(poll * 2, max_poll)

    def _check_missing(self, missing: list[str], held_before: set[int]) -> set[int]:
        """Raises TransactionLost for a transaction the node forgot. Returns the nonces held back
        behind a gap; one held back at two checks in a row gets the gap below it filled."""
        known = self.rpc.batch([("eth_getTransactionByHash", [h]) for h in missing])
        lost = [h for h, tx in zip(missing, known, strict=True) if not isinstance(tx, dict)]
        if lost:
            self.nonces.resync()
            raise TransactionLost(f"the node no longer knows {len(lost)} transaction(s)", lost=lost)
        chain_next = self.nonces.chain_next()
        held = {int(tx["nonce"], 16) for tx in known if isinstance(tx, dict) and int(tx["nonce"], 16) > chain_next}
        if held & held_before:
            self.fill_gap(chain_next)
        return held

    def fill_gap(self, nonce: int) -> None:
        """Sends nothing to ourselves at `nonce`, so the transactions queued above it can be mined.
        A refusal means the nonce was taken after all: nothing to fill."""
        max_fee, priority_fee = self._fees()
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain_id,
            "nonce": nonce,
            "to": self.address,
            "data": "0x",
            "gas": 21_000,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": priority_fee,
            "value": 0,
        }
        raw = "0x" + self.account.sign_transaction(tx).raw_transaction.hex()
        (answer,) = self.rpc.batch([("eth_sendRawTransaction", [raw])])
        log.warning(
            "nonce %d of %s was never sent: %s",
            nonce,
            self.address,
            "filled it" if not isinstance(answer, RpcError) else f"not filled ({answer.message})",
        )

    def transact(self, to: str | None, data: str, decode_error: ErrorDecoderFn, *, timeout: float = 120.0) -> Receipt:
        """Estimate (which surfaces reverts as typed errors), sign, send and wait for one call.
        A refusal of the nonce (another sender of the key got in between) signs again."""
        gas = self.estimate_gas(to, data, decode_error)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            tx = self.sign(to, data, gas)
            refused = self.broadcast([tx])
            if not refused:
                break
            if attempt == SEND_ATTEMPTS or not _nonce_refusal(refused[tx.hash]):
                raise errors.ChainError(f"node refused transaction {tx.hash}: {refused[tx.hash]}", tx=tx.hash)
        receipt = self.wait([tx.hash], timeout=timeout)[tx.hash]
        if receipt.status != 1:
            raise self.revert_reason(tx, receipt, decode_error)
        return receipt

    def revert_reason(
        self, tx: SignedTransaction, receipt: Receipt, decode_error: ErrorDecoderFn
    ) -> errors.LedgerError:
        """Replays a reverted transaction as a call on its block's parent state to learn why."""
        try:
            call = {"from": self.address, "data": tx.data} | ({"to": tx.to} if tx.to else {})
            self.rpc.call("eth_call", call, hex(receipt.block_number - 1))
        except RpcCallError as exc:
            return _typed(exc.error, decode_error)
        return errors.ContractReverted("transaction reverted (out of gas?)", tx=tx.hash, gas_used=receipt.gas_used)

    def _fees(self) -> tuple[int, int]:
        """Fee caps, asked of the node at most once a second: a burst of transactions shares them."""
        now = time.monotonic()
        if self._fees_cache is None or now - self._fees_cache[0] > FEE_CACHE_SECONDS:
            self._fees_cache = (now, self._fetch_fees())
        return self._fees_cache[1]

    def _fetch_fees(self) -> tuple[int, int]:
        block = self.rpc.call("eth_getBlockByNumber", "latest", False)
        base_fee = int(block.get("baseFeePerGas") or "0x0", 16)
        try:
            priority_fee = int(self.rpc.call("eth_maxPriorityFeePerGas"), 16)
        except RpcCallError:
            priority_fee = 10**9
        # Twice the base fee survives six full blocks of EIP-1559 increases.
        return 2 * base_fee + priority_fee, priority_fee


def _nonce_refusal(message: str) -> bool:
    message = message.lower()
    return any(word in message for word in ("nonce", "replacement", "underpriced"))


def _typed(error: RpcError, decode_error: ErrorDecoderFn) -> errors.LedgerError:
    data = error.revert_data
    if data:
        return decode_error(data)
    return errors.ContractReverted(error.message, rpc_code=error.code)
