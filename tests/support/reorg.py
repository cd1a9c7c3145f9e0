"""Reorgs on a real anvil node for the services' records (tests/test_reconcile.py): the raw form
of a mined transaction (to put it into the replacing blocks), indexing through a rollback, and
the index verified against the chain."""

from __future__ import annotations

from typing import Any

from ledger.chain.log_source import JsonRpcLogSource
from ledger.services.verification import Difference, verify
from scripts.reindex import index_name, index_sources
from tests.test_settlement_service import World


def raw_transaction(world: World, tx_hash: str) -> str:
    return str(world.rpc.call("eth_getRawTransactionByHash", tx_hash))


def block_number_of(world: World, tx_hash: str) -> int:
    return int(world.rpc.call("eth_getTransactionReceipt", tx_hash)["blockNumber"], 16)


def move_into_next_block(world: World, tx_hash: str) -> int:
    """Replaces the transaction's block (the head) and mines it again in the block after: returns
    that block's number."""
    mined_in = block_number_of(world, tx_hash)
    assert mined_in == int(world.rpc.call("eth_blockNumber"), 16), "the transaction must be in the head block"
    raw = raw_transaction(world, tx_hash)
    world.rpc.call("evm_mine")
    world.rpc.call("anvil_reorg", 2, [[raw, 1]])
    return mined_in + 1


def index_through_reorg(world: World) -> int:
    """Steps the service's indexer up to the head; returns the fork point it rolled back to."""
    forks: list[int] = []
    while True:
        step = world.ledger.indexer.step()
        if step.rolled_back_to is not None:
            forks.append(step.rolled_back_to)
        if step.to_block >= step.head:
            break
    assert forks, "the indexer saw no reorg"
    return min(forks)


def differences(world: World) -> list[Difference]:
    deployment = world.context.deployment
    addresses, abi = index_sources(deployment)
    with JsonRpcLogSource(world.context.rpc.url) as source:
        return verify(
            source,
            world.context.read_sessions,
            name=index_name(deployment),
            addresses=addresses,
            abi=abi,
            start_block=deployment.start_block,
        )


def about(found: list[Difference], table: str) -> list[Any]:
    return [d for d in found if d.table == table]
