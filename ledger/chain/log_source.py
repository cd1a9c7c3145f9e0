"""The indexer's LogSource over the node's JSON-RPC: the node's hex answers as they are, no web3 objects."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ledger.chain.rpc import JsonRpc, RpcCallError, RpcError
from ledger.errors import ChainError
from ledger.indexer.ports import BlockHeader


class JsonRpcLogSource:
    """A LogSource on one keep-alive JSON-RPC client; block headers are fetched in batch arrays.

    Failures are ChainErrors: retryable when the node is unreachable, not when it answers with
    an error (RpcCallError) or with something that is not a block.
    """

    def __init__(self, rpc_url: str, *, timeout_seconds: float = 30.0, batch_size: int = 200) -> None:
        self._rpc = JsonRpc(rpc_url, timeout=timeout_seconds)
        # Nodes cap the length of a batch (geth: 1000 calls), so long header requests are split.
        self._batch_size = batch_size

    def close(self) -> None:
        self._rpc.close()

    def __enter__(self) -> JsonRpcLogSource:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def head_block_number(self) -> int:
        return int(self._rpc.call("eth_blockNumber"), 16)

    def get_logs(self, addresses: Sequence[str], from_block: int, to_block: int) -> list[Mapping[str, Any]]:
        query = {"address": list(addresses), "fromBlock": hex(from_block), "toBlock": hex(to_block)}
        logs = self._rpc.call("eth_getLogs", query)
        if not isinstance(logs, list):
            raise ChainError("eth_getLogs did not answer with a list", method="eth_getLogs")
        return logs

    def get_blocks(self, numbers: Sequence[int]) -> list[BlockHeader]:
        headers: list[BlockHeader] = []
        for start in range(0, len(numbers), self._batch_size):
            chunk = numbers[start : start + self._batch_size]
            answers = self._rpc.batch([("eth_getBlockByNumber", [hex(number), False]) for number in chunk])
            headers += (_header(number, answer) for number, answer in zip(chunk, answers, strict=True))
        return headers


def _header(number: int, answer: Any) -> BlockHeader:
    if isinstance(answer, RpcError):
        raise RpcCallError("eth_getBlockByNumber", answer)
    if answer is None:
        raise ChainError(f"the node does not have block {number}", block_number=number)
    try:
        return BlockHeader(
            number=int(answer["number"], 16),
            hash=answer["hash"].lower(),
            parent_hash=answer["parentHash"].lower(),
            timestamp=int(answer["timestamp"], 16),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ChainError(f"block {number}: the node's answer is not a block ({exc!r})", block_number=number) from exc
