"""The ledger contracts' events by topic, decoded generically from their ABI: what a log says in
the contract's own words (event and argument names as in the Solidity source).

The indexer has typed decoders of its own (`ledger.indexer.decoder`), tuned for volume; this is
for showing one transaction's logs as the chain holds them (`ledger.services.chain_view`), every
event of the ABI included (roles, pauses, limits). No I/O.

Values are made JSON-safe: integers as decimal strings (a uint256 does not fit a JSON number
that every client reads exactly), bytes as 0x hex, addresses checksummed, structs as objects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from eth_abi import decode
from eth_abi.exceptions import DecodingError
from eth_typing import ABIEvent
from eth_utils import event_abi_to_log_topic, to_checksum_address
from eth_utils.abi import collapse_if_tuple


@dataclass(frozen=True)
class DecodedLog:
    log_index: int
    address: str
    contract: str | None  # the ledger contract that emitted it; None for another address
    event: str | None  # None when the emitter is not ours or its topic is not in the ABI
    args: dict[str, Any]  # empty when `event` is None
    topics: list[str]
    data: str


class EventCatalog:
    """Events of deployed contracts: `contracts` maps name -> address, `abis` name -> ABI."""

    def __init__(self, contracts: Mapping[str, str], abis: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self._names = {address.lower(): name for name, address in contracts.items()}
        self._events: dict[tuple[str, str], Mapping[str, Any]] = {}
        for name, address in contracts.items():
            for entry in abis.get(name, ()):
                if entry["type"] == "event" and not entry.get("anonymous", False):
                    topic = "0x" + event_abi_to_log_topic(cast(ABIEvent, entry)).hex()
                    self._events[(address.lower(), topic)] = entry

    def contract_name(self, address: str | None) -> str | None:
        return None if address is None else self._names.get(address.lower())

    def decode(self, log: Mapping[str, Any]) -> DecodedLog:
        """A log as eth_getTransactionReceipt returns it (hex quantities)."""
        address = to_checksum_address(log["address"])
        topics = [topic.lower() for topic in log["topics"]]
        data = log["data"]
        entry = self._events.get((address.lower(), topics[0])) if topics else None
        event, args = None, {}
        if entry is not None:
            try:
                args = _arguments(entry, topics[1:], bytes.fromhex(data[2:]))
                event = entry["name"]
            except (DecodingError, ValueError):
                args = {}  # a log that does not fit its ABI is shown raw rather than guessed at
        return DecodedLog(int(log["logIndex"], 16), address, self.contract_name(address), event, args, topics, data)


def _arguments(entry: Mapping[str, Any], topics: Sequence[str], data: bytes) -> dict[str, Any]:
    inputs = entry["inputs"]
    indexed = [item for item in inputs if item["indexed"]]
    plain = [item for item in inputs if not item["indexed"]]
    if len(topics) != len(indexed):
        raise ValueError(f"{len(topics)} indexed topics for {len(indexed)} indexed arguments")
    values: dict[str, Any] = {}
    for item, topic in zip(indexed, topics, strict=True):
        # An indexed dynamic value (string, bytes, array, struct) is stored as its keccak hash.
        if item["type"] in ("string", "bytes") or item["type"].endswith("]") or item["type"].startswith("tuple"):
            values[item["name"]] = topic
        else:
            (value,) = decode([item["type"]], bytes.fromhex(topic[2:]))
            values[item["name"]] = _json_safe(item, value)
    decoded = decode([collapse_if_tuple(dict(item)) for item in plain], data)
    for item, value in zip(plain, decoded, strict=True):
        values[item["name"]] = _json_safe(item, value)
    return {item["name"]: values[item["name"]] for item in inputs}


def _json_safe(item: Mapping[str, Any], value: Any) -> Any:
    kind: str = item["type"]
    if kind.endswith("]"):
        element = {**item, "type": kind[: kind.rindex("[")]}
        return [_json_safe(element, v) for v in value]
    if kind == "tuple":
        return {c["name"]: _json_safe(c, v) for c, v in zip(item["components"], value, strict=True)}
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if kind == "address":
        return to_checksum_address(value)
    return value
