"""The MeterData contract, wrapped: one Python method per contract call.

Also home of `ContractCalls`, the ABI-driven plumbing shared with `ledger/chain/settlement.py`
(calldata through eth_abi, typed errors, decoded events), and of the reading and price leaf
encodings, which `contracts/interfaces/IMeterData.sol` documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_utils import to_checksum_address

from ledger.chain.contract import ContractCalls, hex32
from ledger.chain.transactions import Receipt
from ledger.domain.units import ZERO_ID

# [participant, intervalStart, injectedWh, withdrawnWh, quality]
READING_LEAF_ENCODING: tuple[str, ...] = ("address", "uint64", "uint64", "uint64", "uint8")
# [intervalStart, priceMinorPerMWh]
PRICE_LEAF_ENCODING: tuple[str, ...] = ("uint64", "uint64")


class ReadingQuality(IntEnum):
    MEASURED = 0
    ESTIMATED = 1
    SUBSTITUTED = 2


@dataclass(frozen=True)
class ReadingLeaf:
    participant: str
    interval_start: int
    injected_wh: int
    withdrawn_wh: int
    quality: ReadingQuality = ReadingQuality.MEASURED

    def leaf_values(self) -> list[Any]:
        """The values in `READING_LEAF_ENCODING` order, as a StandardMerkleTree takes them."""
        return [
            to_checksum_address(self.participant),
            self.interval_start,
            self.injected_wh,
            self.withdrawn_wh,
            int(self.quality),
        ]


@dataclass(frozen=True)
class PriceLeaf:
    interval_start: int
    price_minor_per_mwh: int

    def leaf_values(self) -> list[Any]:
        return [self.interval_start, self.price_minor_per_mwh]


@dataclass(frozen=True)
class MeterBatch:
    """A committed batch; an unknown batch has `root` zero. Ids and hashes as 0x hex."""

    batch_id: str
    root: str
    period_start: int
    period_end: int
    count: int
    committed_at: int
    supersedes: str
    superseded_by: str

    @property
    def exists(self) -> bool:
        return self.root != ZERO_ID


class MeterDataContract(ContractCalls):
    # --- writes ---------------------------------------------------------------------------

    def commit_reading_batch(
        self,
        batch_id: str,
        period_start: int,
        period_end: int,
        root: str,
        reading_count: int,
        supersedes: str = ZERO_ID,
    ) -> Receipt:
        """Commits a batch of readings (meter oracle) or raises the typed reason it was refused."""
        return self._transact(
            "commitReadingBatch",
            [hex32(batch_id), period_start, period_end, hex32(root), reading_count, hex32(supersedes)],
        )

    def commit_price_batch(
        self,
        batch_id: str,
        period_start: int,
        period_end: int,
        root: str,
        price_count: int,
        supersedes: str = ZERO_ID,
    ) -> Receipt:
        """Commits the reference prices of a period, one per interval (operator)."""
        return self._transact(
            "commitPriceBatch",
            [hex32(batch_id), period_start, period_end, hex32(root), price_count, hex32(supersedes)],
        )

    # --- reads ----------------------------------------------------------------------------

    def reading_batch(self, batch_id: str) -> MeterBatch:
        return _batch(batch_id, self._call("readingBatch", [hex32(batch_id)]))

    def price_batch(self, batch_id: str) -> MeterBatch:
        return _batch(batch_id, self._call("priceBatch", [hex32(batch_id)]))

    def verify_reading(self, batch_id: str, reading: ReadingLeaf, proof: list[str]) -> bool:
        return bool(self._call("verifyReading", [hex32(batch_id), *reading.leaf_values(), [hex32(p) for p in proof]]))

    def verify_price(self, batch_id: str, price: PriceLeaf, proof: list[str]) -> bool:
        return bool(self._call("verifyPrice", [hex32(batch_id), *price.leaf_values(), [hex32(p) for p in proof]]))


def _batch(batch_id: str, values: tuple[Any, ...]) -> MeterBatch:
    root, period_start, period_end, count, committed_at, supersedes, superseded_by = values
    return MeterBatch(
        batch_id,
        "0x" + root.hex(),
        period_start,
        period_end,
        count,
        committed_at,
        "0x" + supersedes.hex(),
        "0x" + superseded_by.hex(),
    )
