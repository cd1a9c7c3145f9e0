"""What the chain itself says of a block or a transaction, read from the node, not the index.

The explorer links every block and transaction of a trade's timeline here, so that an auditor
follows provenance to the node's own answer: the block's hash and parent, the transaction's
sender, status and logs decoded with the contracts' ABI (`ledger.chain.event_catalog`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.chain.event_catalog import DecodedLog, EventCatalog
from ledger.chain.rpc import JsonRpc, RpcCallError, RpcError


@dataclass(frozen=True)
class ChainBlock:
    number: int
    hash: str
    parent_hash: str
    timestamp: int
    transaction_hashes: list[str]
    confirmations: int  # head - number + 1 when read
    final: bool  # at least the service's confirmations


@dataclass(frozen=True)
class ChainTransaction:
    hash: str
    block_number: int
    block_hash: str
    block_time: int
    transaction_index: int
    sender: str
    to: str | None
    contract: str | None  # the ledger contract it called, if one
    succeeded: bool
    gas_used: int
    logs: list[DecodedLog]
    confirmations: int
    final: bool


class ChainView:
    def __init__(self, rpc: JsonRpc, catalog: EventCatalog, confirmations: int) -> None:
        self._rpc = rpc
        self._catalog = catalog
        self._confirmations = max(confirmations, 1)

    def block(self, number: int) -> ChainBlock | None:
        """The block at `number` on the node's chain now; None above the head."""
        answers = self._rpc.batch([("eth_getBlockByNumber", [hex(number), False]), ("eth_blockNumber", [])])
        block, head = (_result(method, answer) for method, answer in zip(_BLOCK_AND_HEAD, answers, strict=True))
        if block is None:
            return None
        confirmations = int(head, 16) - number + 1
        return ChainBlock(
            number=number,
            hash=block["hash"],
            parent_hash=block["parentHash"],
            timestamp=int(block["timestamp"], 16),
            transaction_hashes=list(block["transactions"]),
            confirmations=confirmations,
            final=confirmations >= self._confirmations,
        )

    def transaction(self, tx_hash: str) -> ChainTransaction | None:
        """The mined transaction `tx_hash` (0x + 64 hex) with its decoded logs; None when no block
        holds it."""
        receipt = self._rpc.call("eth_getTransactionReceipt", tx_hash)
        if receipt is None or receipt.get("blockNumber") is None:
            return None
        number = int(receipt["blockNumber"], 16)
        block = self.block(number)
        # A reorg between the two calls: the receipt's block is no longer the chain's.
        if block is None or block.hash != receipt["blockHash"]:
            return None
        return ChainTransaction(
            hash=tx_hash,
            block_number=number,
            block_hash=receipt["blockHash"],
            block_time=block.timestamp,
            transaction_index=int(receipt["transactionIndex"], 16),
            sender=receipt["from"],
            to=receipt.get("to"),
            contract=self._catalog.contract_name(receipt.get("to")),
            succeeded=int(receipt["status"], 16) == 1,
            gas_used=int(receipt["gasUsed"], 16),
            logs=[self._catalog.decode(log) for log in receipt["logs"]],
            confirmations=block.confirmations,
            final=block.final,
        )


_BLOCK_AND_HEAD = ("eth_getBlockByNumber", "eth_blockNumber")


def _result(method: str, answer: Any) -> Any:
    if isinstance(answer, RpcError):
        raise RpcCallError(method, answer)
    return answer
