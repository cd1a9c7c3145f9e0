"""Small helpers over ABI JSON that eth_abi needs and web3 keeps private."""

from __future__ import annotations

from typing import Any


def abi_type(param: dict[str, Any]) -> str:
    """The canonical type of an ABI parameter, with tuples spelled out: `(address,uint64)[]`."""
    if param["type"].startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in param["components"]) + ")" + param["type"][5:]
    return str(param["type"])
