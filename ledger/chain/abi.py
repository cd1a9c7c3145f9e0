"""Small helpers over ABI JSON that eth_abi needs and web3 keeps private."""

from __future__ import annotations

from typing import Any

from eth_utils import to_checksum_address


def abi_type(param: dict[str, Any]) -> str:
    """The canonical type of an ABI parameter, with tuples spelled out: `(address,uint64)[]`."""
    if param["type"].startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in param["components"]) + ")" + param["type"][5:]
    return str(param["type"])


def plain_value(value: Any, solidity_type: str) -> Any:
    """A decoded ABI value as the ledger passes it around: checksummed addresses, 0x hex bytes."""
    if solidity_type == "address":
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value
