"""Signing and sending transactions from one key: nonces, fees, receipts, revert reasons."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount

from ledger import errors
from ledger.chain.rpc import JsonRpc, RpcCallError, RpcError

# Gas estimates on a busy chain move with state (cold vs warm slots); a margin keeps a batch
# from running out of gas when an earlier transaction in the block warmed or changed storage.
GAS_MARGIN_PERCENT = 20

FEE_CACHE_SECONDS = 1.0

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
    """Hands out consecutive nonces for one sender without asking the node each time.

    The node is asked once, at the first use and again after `resync` (a nonce error means
    another process used this key, or a transaction was dropped)."""

    def __init__(self, rpc: JsonRpc, address: str) -> None:
        self._rpc = rpc
        self._address = address
        self._next: int | None = None
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            if self._next is None:
                self._next = int(self._rpc.call("eth_getTransactionCount", self._address, "pending"), 16)
            nonce = self._next
            self._next += 1
            return nonce

    def resync(self) -> None:
        with self._lock:
            self._next = None


class TransactionSender:
    def __init__(self, rpc: JsonRpc, account: LocalAccount, chain_id: int) -> None:
        self.rpc = rpc
        self.account = account
        self.chain_id = chain_id
        self.nonces = NonceManager(rpc, account.address)
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
        # nonce ahead of the next: those are sent again one by one, in nonce order.
        for tx in sorted(
            (t for t in transactions if "nonce too high" in refused.get(t.hash, "").lower()), key=lambda t: t.nonce
        ):
            try:
                self.rpc.call("eth_sendRawTransaction", tx.raw)
                del refused[tx.hash]
            except RpcCallError as exc:
                refused[tx.hash] = exc.error.message
        if refused:
            self.nonces.resync()
        return refused

    def wait(self, tx_hashes: list[str], *, timeout: float = 120.0, max_poll: float = 0.25) -> dict[str, Receipt]:
        """Receipts of all `tx_hashes`, polled in batches: at once, then backing off to `max_poll`
        (an automining node answers within milliseconds, an interval-mining one within a block)."""
        deadline = time.monotonic() + timeout
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
                time.sleep(poll)
                poll = min(poll * 2, max_poll)

    def transact(self, to: str | None, data: str, decode_error: ErrorDecoderFn, *, timeout: float = 120.0) -> Receipt:
        """Estimate (which surfaces reverts as typed errors), sign, send and wait for one call."""
        gas = self.estimate_gas(to, data, decode_error)
        tx = self.sign(to, data, gas)
        refused = self.broadcast([tx])
        if refused:
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


def _typed(error: RpcError, decode_error: ErrorDecoderFn) -> errors.LedgerError:
    data = error.revert_data
    if data:
        return decode_error(data)
    return errors.ContractReverted(error.message, rpc_code=error.code)
