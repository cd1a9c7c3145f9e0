"""Read-your-writes for the chain facts of MeterData and Settlement.

A service that has a receipt of its own transaction (a batch or run commitment, a dispute) writes
the rows the indexer will derive from the same logs, through the indexer's own projection
(`ledger.indexer.indexer.write_receipt_logs`), in the transaction that records its own outcome.
The API then shows the fact at once, and the indexer finds it stored already (or replaces it, if
a reorg moved it): one definition of each row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from ledger.chain.compiler import compile_contracts
from ledger.chain.deployment import Deployment
from ledger.chain.rpc import JsonRpc
from ledger.indexer.decoder import LogDecoder
from ledger.indexer.indexer import indexed_sources, write_receipt_logs
from ledger.indexer.ports import BlockHeader


class ChainFacts:
    def __init__(self, rpc: JsonRpc, deployment: Deployment) -> None:
        self._rpc = rpc
        addresses, abi = indexed_sources(
            {name: contract.address for name, contract in deployment.contracts.items()},
            {name: artifact.abi for name, artifact in compile_contracts().items()},
        )
        self._addresses = {address.lower() for address in addresses}
        self._decoder = LogDecoder(abi)

    def block(self, block_hash: str) -> BlockHeader | None:
        """The header of the block a receipt names (by hash: the block at that height may differ
        now); None when the node no longer has it (a reorg took it: the indexer has the truth)."""
        answer = self._rpc.call("eth_getBlockByHash", block_hash, False)
        if answer is None:
            return None
        return BlockHeader(
            number=int(answer["number"], 16),
            hash=answer["hash"].lower(),
            parent_hash=answer["parentHash"].lower(),
            timestamp=int(answer["timestamp"], 16),
        )

    def write(self, session: Session, logs: Sequence[Mapping[str, Any]], block: BlockHeader | None) -> None:
        """The rows of `logs` (of one receipt, in `block`), in the caller's transaction; nothing for
        a block the node no longer has."""
        if block is None:
            return
        ours = [log for log in logs if str(log["address"]).lower() in self._addresses]
        write_receipt_logs(session, self._decoder, ours, block)
