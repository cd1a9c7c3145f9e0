"""The Settlement contract's events, and finding one of its logs again when no receipt is at hand
(a commit or dispute sent by an invocation that died, or moved by a reorg)."""

from __future__ import annotations

from typing import Any

from eth_utils import keccak

from ledger.chain.transactions import Receipt
from ledger.services.context import LedgerContext

# ISettlement's events, by signature (topic 0 is its keccak-256).
RUN_COMMITTED = "RunCommitted(bytes32,uint64,uint64,uint32,bytes32,bytes32,uint32,uint256,uint256,uint64)"
DISPUTE_OPENED = "DisputeOpened(bytes32,bytes32,address,bytes32,bytes32)"
DISPUTE_RESOLVED = "DisputeResolved(bytes32,bool,bytes32)"

LOG_SEARCH_WINDOW = 5_000  # blocks per eth_getLogs when looking for a lost commit's log


def find_log(context: LedgerContext, event_signature: str, first_topic: str) -> dict[str, Any] | None:
    """The Settlement contract's log of this event with this first indexed argument, searched
    backwards from the head (what we look for is recent) in windows public nodes accept."""
    contract = context.deployment.contracts["Settlement"]
    topics = ["0x" + keccak(text=event_signature).hex(), first_topic]
    to_block = int(context.rpc.call("eth_blockNumber"), 16)
    while to_block >= contract.block_number:
        from_block = max(contract.block_number, to_block - LOG_SEARCH_WINDOW + 1)
        logs = context.rpc.call(
            "eth_getLogs",
            {"address": contract.address, "fromBlock": hex(from_block), "toBlock": hex(to_block), "topics": topics},
        )
        if logs:
            return dict(logs[-1])
        to_block = from_block - 1
    return None


def receipt_of_log(log: dict[str, Any]) -> Receipt:
    """A receipt holding one log, for `ContractCalls.events` (gas unknown: 0)."""
    return Receipt(log["transactionHash"], int(log["blockNumber"], 16), log["blockHash"], 1, 0, [log])
