"""The MeterData contract, wrapped: one Python method per contract call.

Also home of `ContractCalls`, the ABI-driven plumbing shared with `ledger/chain/settlement.py`
(calldata through eth_abi, typed errors, decoded events), and of the reading and price leaf
encodings, which `contracts/interfaces/IMeterData.sol` documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_abi import decode, encode
from eth_utils import keccak, to_checksum_address

from ledger.chain.abi import abi_type
from ledger.chain.contract_errors import ErrorDecoder
from ledger.chain.rpc import RpcCallError
from ledger.chain.trade_ledger import ROLES
from ledger.chain.transactions import Receipt, TransactionSender
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


@dataclass(frozen=True)
class _Function:
    selector: bytes
    inputs: list[str]
    outputs: list[str]


@dataclass(frozen=True)
class _Event:
    topic: str
    inputs: list[dict[str, Any]]


class ContractCalls:
    """A deployed contract seen from one sender: calldata built with eth_abi from the ABI, reverts
    decoded into the typed errors of `ledger.errors`, logs decoded into plain values."""

    def __init__(self, sender: TransactionSender, address: str, abi: list[dict[str, Any]]) -> None:
        self.sender = sender
        self.address = to_checksum_address(address)
        self.errors = ErrorDecoder(abi)
        self._functions = {
            item["name"]: _Function(
                keccak(text=f"{item['name']}({','.join(abi_type(i) for i in item['inputs'])})")[:4],
                [abi_type(i) for i in item["inputs"]],
                [abi_type(o) for o in item["outputs"]],
            )
            for item in abi
            if item["type"] == "function"
        }
        self._events = {
            item["name"]: _Event(
                "0x" + keccak(text=f"{item['name']}({','.join(abi_type(i) for i in item['inputs'])})").hex(),
                item["inputs"],
            )
            for item in abi
            if item["type"] == "event"
        }

    def grant_role(self, role: str, account: str) -> Receipt:
        return self._transact("grantRole", [ROLES[role], account])

    def has_role(self, role: str, account: str) -> bool:
        return bool(self._call("hasRole", [ROLES[role], account]))

    def events(self, receipt: Receipt, name: str) -> list[dict[str, Any]]:
        """Every `name` event this contract emitted in `receipt`: {Solidity field name: value},
        addresses checksummed, bytes as 0x hex."""
        event = self._events[name]
        me = self.address.lower()
        found = []
        for log in receipt.logs:
            if log["address"].lower() != me or log["topics"][0] != event.topic:
                continue
            topics = iter(log["topics"][1:])
            unindexed = [i for i in event.inputs if not i["indexed"]]
            data = iter(decode([abi_type(i) for i in unindexed], bytes.fromhex(log["data"][2:])))
            fields = {}
            for i in event.inputs:
                raw = decode([abi_type(i)], bytes.fromhex(next(topics)[2:]))[0] if i["indexed"] else next(data)
                fields[i["name"]] = _plain(raw, abi_type(i))
            found.append(fields)
        return found

    def encode(self, fn: str, args: list[Any]) -> str:
        """Calldata of `fn(args)`."""
        function = self._functions[fn]
        return "0x" + (function.selector + encode(function.inputs, args)).hex()

    def _transact(self, fn: str, args: list[Any]) -> Receipt:
        return self.sender.transact(self.address, self.encode(fn, args), self.errors.decode)

    def _call(self, fn: str, args: list[Any]) -> Any:
        data = self.encode(fn, args)
        try:
            raw = self.sender.rpc.call("eth_call", {"to": self.address, "data": data}, "latest")
        except RpcCallError as exc:
            data_bytes = exc.error.revert_data
            raise (self.errors.decode(data_bytes) if data_bytes else exc) from exc
        values = decode(self._functions[fn].outputs, bytes.fromhex(raw[2:]))
        return values[0] if len(values) == 1 else values


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


def hex32(value: str) -> bytes:
    """32 bytes from 0x hex, refusing any other length (eth_abi would pad a short value)."""
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes of hex, got {len(raw)}: {value}")
    return raw


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


def _plain(value: Any, solidity_type: str) -> Any:
    if solidity_type == "address":
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value
