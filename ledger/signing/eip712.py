"""The one definition of GridLedger's EIP-712 domain and types, and their hashes.

Mirrors `contracts/libraries/TradeStructs.sol`; `tests/test_eip712.py` proves that this module,
eth-account's generic EIP-712 encoder and the deployed contract compute the same digests.
Pure: no I/O, no web3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from ledger.domain.trade import Trade

DOMAIN_NAME = "GridLedger"
DOMAIN_VERSION = "1"

EIP712_DOMAIN_FIELDS = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
)
TRADE_FIELDS = (
    ("seller", "address"),
    ("buyer", "address"),
    ("deliveryStart", "uint64"),
    ("deliveryEnd", "uint64"),
    ("energyPerIntervalWh", "uint64"),
    ("priceMinorPerMWh", "uint64"),
    ("nonce", "uint256"),
    ("deadline", "uint64"),
    ("replaces", "bytes32"),
)
CANCEL_TRADE_FIELDS = (("tradeId", "bytes32"), ("deadline", "uint64"))

TYPES: dict[str, tuple[tuple[str, str], ...]] = {
    "EIP712Domain": EIP712_DOMAIN_FIELDS,
    "Trade": TRADE_FIELDS,
    "CancelTrade": CANCEL_TRADE_FIELDS,
}


def type_string(primary_type: str) -> str:
    fields = ",".join(f"{solidity_type} {name}" for name, solidity_type in TYPES[primary_type])
    return f"{primary_type}({fields})"


def type_hash(primary_type: str) -> bytes:
    return keccak(text=type_string(primary_type))


@dataclass(frozen=True)
class Domain:
    chain_id: int
    verifying_contract: str
    name: str = DOMAIN_NAME
    version: str = DOMAIN_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": to_checksum_address(self.verifying_contract),
        }

    @property
    def separator(self) -> bytes:
        return keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    type_hash("EIP712Domain"),
                    keccak(text=self.name),
                    keccak(text=self.version),
                    self.chain_id,
                    self.verifying_contract,
                ],
            )
        )


def _struct_hash(primary_type: str, message: dict[str, Any]) -> bytes:
    fields = TYPES[primary_type]
    return keccak(
        encode(
            ["bytes32", *(solidity_type for _, solidity_type in fields)],
            [type_hash(primary_type), *(_abi_value(solidity_type, message[name]) for name, solidity_type in fields)],
        )
    )


def _abi_value(solidity_type: str, value: Any) -> Any:
    if solidity_type == "bytes32" and isinstance(value, str):
        return bytes.fromhex(value.removeprefix("0x"))
    return value


def _digest(domain: Domain, primary_type: str, message: dict[str, Any]) -> bytes:
    return keccak(b"\x19\x01" + domain.separator + _struct_hash(primary_type, message))


def trade_digest(domain: Domain, trade: Trade) -> bytes:
    """The digest both counterparties sign; its hex form is the trade's id."""
    return _digest(domain, "Trade", trade.as_message())


def trade_id(domain: Domain, trade: Trade) -> str:
    return "0x" + trade_digest(domain, trade).hex()


def cancel_trade_digest(domain: Domain, trade_id_hex: str, deadline: int) -> bytes:
    return _digest(domain, "CancelTrade", {"tradeId": trade_id_hex, "deadline": deadline})


def typed_data(domain: Domain, primary_type: str, message: dict[str, Any]) -> dict[str, Any]:
    """The full EIP-712 JSON document (`eth_signTypedData_v4`, ethers' `signTypedData`)."""
    return {
        "types": {
            name: [{"name": field, "type": solidity_type} for field, solidity_type in fields]
            for name, fields in TYPES.items()
            if name in ("EIP712Domain", primary_type)
        },
        "primaryType": primary_type,
        "domain": domain.as_dict(),
        "message": message,
    }


# --- any struct type -------------------------------------------------------------------------------
# For signed types defined outside this module (ledger/signing/disputes.py): the same encoding as
# above, with the fields passed in instead of looked up in TYPES.

Fields = tuple[tuple[str, str], ...]


def encode_type(primary_type: str, fields: Fields) -> str:
    """`Name(type1 field1,...)`: the EIP-712 type string of a struct without nested structs."""
    return f"{primary_type}({','.join(f'{solidity_type} {name}' for name, solidity_type in fields)})"


def hash_struct(primary_type: str, fields: Fields, message: dict[str, Any]) -> bytes:
    """`keccak256(abi.encode(TYPEHASH, field values...))` for a struct of atomic fields."""
    return keccak(
        encode(
            ["bytes32", *(solidity_type for _, solidity_type in fields)],
            [
                keccak(text=encode_type(primary_type, fields)),
                *(_abi_value(solidity_type, message[name]) for name, solidity_type in fields),
            ],
        )
    )


def hash_typed_data(domain: Domain, primary_type: str, fields: Fields, message: dict[str, Any]) -> bytes:
    """The EIP-712 digest `keccak256(0x1901 || domainSeparator || hashStruct(message))`."""
    return keccak(b"\x19\x01" + domain.separator + hash_struct(primary_type, fields, message))
