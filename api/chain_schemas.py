"""Response bodies of the chain views (`ledger.services.chain_view`): the node's own answer about a
block or a transaction, camelCase JSON in the formats of `api.types`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from api.schemas import ResponseModel
from api.types import UtcTime
from ledger.chain.event_catalog import DecodedLog
from ledger.services.chain_view import ChainBlock, ChainTransaction


class ChainBlockOut(ResponseModel):
    number: int
    hash: str
    parent_hash: str
    timestamp: UtcTime
    transaction_hashes: list[str]
    confirmations: int = Field(description="blocks on top of it, itself included, when read")
    final: bool = Field(description="it has the confirmations the service requires")

    @classmethod
    def of(cls, block: ChainBlock) -> ChainBlockOut:
        return cls(
            number=block.number,
            hash=block.hash,
            parent_hash=block.parent_hash,
            timestamp=block.timestamp,
            transaction_hashes=block.transaction_hashes,
            confirmations=block.confirmations,
            final=block.final,
        )


class ChainLogOut(ResponseModel):
    log_index: int
    address: str
    contract: str | None = Field(description="the ledger contract that emitted it; null for another address")
    event: str | None = Field(description="the event's name in the contract's ABI; null when not one of ours")
    args: dict[str, Any] = Field(
        description="by the ABI's argument names; integers as decimal strings, bytes as 0x hex, structs as objects"
    )
    topics: list[str]
    data: str

    @classmethod
    def of(cls, log: DecodedLog) -> ChainLogOut:
        return cls(
            log_index=log.log_index,
            address=log.address,
            contract=log.contract,
            event=log.event,
            args=log.args,
            topics=log.topics,
            data=log.data,
        )


class ChainTransactionOut(ResponseModel):
    hash: str
    block_number: int
    block_hash: str
    block_time: UtcTime
    transaction_index: int
    sender: str = Field(serialization_alias="from")
    to: str | None
    contract: str | None = Field(description="the ledger contract it called, if one")
    succeeded: bool = Field(description="false: the transaction reverted")
    gas_used: int
    logs: list[ChainLogOut]
    confirmations: int
    final: bool

    @classmethod
    def of(cls, tx: ChainTransaction) -> ChainTransactionOut:
        return cls(
            hash=tx.hash,
            block_number=tx.block_number,
            block_hash=tx.block_hash,
            block_time=tx.block_timestamp,
            transaction_index=tx.transaction_index,
            sender=tx.sender,
            to=tx.to,
            contract=tx.contract,
            succeeded=tx.succeeded,
            gas_used=tx.gas_used,
            logs=[ChainLogOut.of(log) for log in tx.logs],
            confirmations=tx.confirmations,
            final=tx.final,
        )
