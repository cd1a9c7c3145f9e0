"""A deployed contract seen from one sender: the plumbing every contract wrapper shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import decode, encode
from eth_utils import keccak, to_checksum_address

from ledger.chain.abi import abi_type, plain_value
from ledger.chain.contract_errors import ErrorDecoder
from ledger.chain.rpc import RpcCallError
from ledger.chain.transactions import Receipt, TransactionSender

ROLES = {
    "admin": b"\x00" * 32,
    "operator": keccak(text="OPERATOR_ROLE"),
    "recorder": keccak(text="RECORDER_ROLE"),
    "meter_oracle": keccak(text="METER_ORACLE_ROLE"),
    "settler": keccak(text="SETTLER_ROLE"),
    "pauser": keccak(text="PAUSER_ROLE"),
}


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
                fields[i["name"]] = plain_value(raw, abi_type(i))
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


def hex32(value: str) -> bytes:
    """32 bytes from 0x hex, refusing any other length (eth_abi would pad a short value)."""
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes of hex, got {len(raw)}: {value}")
    return raw
