"""What the indexer needs from a chain: final blocks' headers and the logs in them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class BlockHeader:
    number: int
    hash: str  # 0x lowercase hex
    parent_hash: str
    timestamp: int  # UTC Unix seconds


class LogSource(Protocol):
    def head_block_number(self) -> int: ...

    def get_logs(self, addresses: Sequence[str], from_block: int, to_block: int) -> list[Mapping[str, Any]]:
        """Every log the contracts at `addresses` emitted in blocks from_block..to_block (inclusive),
        in chain order, as eth_getLogs returns them (hex strings)."""
        ...

    def get_blocks(self, numbers: Sequence[int]) -> list[BlockHeader]:
        """The headers of blocks `numbers`, in the order asked."""
        ...
