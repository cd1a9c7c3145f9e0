"""Response bodies of the chain views (`ledger.services.chain_view`): the node's own answer about a
block or a transaction, camelCase JSON in the formats of `api.types`. The views' dataclasses carry
the same field names: `Model.model_validate(view, from_attributes=True)`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from api.schemas import ResponseModel
from api.types import UtcTime


class ChainBlockOut(ResponseModel):
    number: int
    hash: str
    parent_hash: str
    timestamp: UtcTime
    transaction_hashes: list[str]
    confirmations: int = Field(description="blocks on top of it, itself included, when read")
    final: bool = Field(description="it has the confirmations the service requires")


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
