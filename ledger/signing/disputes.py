"""Statement lines as the Settlement contract sees them: run ids, Merkle leaves, and the EIP-712
`Dispute` a line's account signs.

Mirrors `contracts/libraries/SettlementStructs.sol` and `contracts/Settlement.sol`;
`tests/test_contract_settlement.py` proves the digest, the leaf and the run id equal the
contract's. Pure: no I/O, no web3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from ledger.domain.settlement import LEAF_ENCODING, run_id_of
from ledger.signing.eip712 import Domain, Fields, encode_type, hash_typed_data
from ledger.signing.trader import sign_digest

SETTLEMENT_DOMAIN_NAME = "GridLedger Settlement"
SETTLEMENT_DOMAIN_VERSION = "1"

# SETTLEMENT.md, "Merkle commitment": [runId, account, kind, ref, energyWh, amountMinor].
# One definition of each, in the settlement rules: the leaf a dispute names and the run it is in.
LINE_LEAF_ENCODING: tuple[str, ...] = LEAF_ENCODING
run_id = run_id_of

DISPUTE_FIELDS: Fields = (
    ("runId", "bytes32"),
    ("account", "address"),
    ("kind", "uint8"),
    ("ref", "bytes32"),
    ("energyWh", "int256"),
    ("amountMinor", "int256"),
    ("reasonHash", "bytes32"),
    ("deadline", "uint64"),
)
DISPUTE_TYPE = encode_type("Dispute", DISPUTE_FIELDS)


def settlement_domain(chain_id: int, verifying_contract: str) -> Domain:
    """The EIP-712 domain of a deployed Settlement contract."""
    return Domain(chain_id, verifying_contract, SETTLEMENT_DOMAIN_NAME, SETTLEMENT_DOMAIN_VERSION)


@dataclass(frozen=True)
class DisputeLine:
    """One statement line: `run_id` and `ref` as 0x hex of 32 bytes; energy in Wh and amount in
    minor units, signed (positive: delivered / receives)."""

    run_id: str
    account: str
    kind: int
    ref: str
    energy_wh: int
    amount_minor: int

    def leaf_values(self) -> list[Any]:
        """The leaf's values in `LINE_LEAF_ENCODING` order, as a StandardMerkleTree takes them."""
        return [self.run_id, to_checksum_address(self.account), self.kind, self.ref, self.energy_wh, self.amount_minor]

    def as_tuple(self) -> tuple[bytes, str, int, bytes, int, int]:
        """The Solidity `DisputeLine` struct, for eth_abi."""
        return (
            _bytes32(self.run_id),
            to_checksum_address(self.account),
            self.kind,
            _bytes32(self.ref),
            self.energy_wh,
            self.amount_minor,
        )

    def leaf_hash(self) -> bytes:
        """`keccak256(bytes.concat(keccak256(abi.encode(...))))`, the StandardMerkleTree leaf."""
        return keccak(keccak(encode(list(LINE_LEAF_ENCODING), list(self.as_tuple()))))

    def dispute_id(self) -> str:
        """`keccak256(abi.encode(runId, leafHash))`: a line is disputed at most once per run."""
        return "0x" + keccak(encode(["bytes32", "bytes32"], [_bytes32(self.run_id), self.leaf_hash()])).hex()


def dispute_message(line: DisputeLine, reason_hash: str, deadline: int) -> dict[str, Any]:
    """The `Dispute` message of EIP-712 JSON: bytes as 0x hex, integers as integers."""
    return {
        "runId": line.run_id,
        "account": to_checksum_address(line.account),
        "kind": line.kind,
        "ref": line.ref,
        "energyWh": line.energy_wh,
        "amountMinor": line.amount_minor,
        "reasonHash": reason_hash,
        "deadline": deadline,
    }


def dispute_digest(domain: Domain, line: DisputeLine, reason_hash: str, deadline: int) -> bytes:
    """The digest the line's account signs to dispute it until `deadline` (Unix seconds)."""
    return hash_typed_data(domain, "Dispute", DISPUTE_FIELDS, dispute_message(line, reason_hash, deadline))


def dispute_typed_data(domain: Domain, line: DisputeLine, reason_hash: str, deadline: int) -> dict[str, Any]:
    """The full EIP-712 JSON document of a dispute, for `eth_signTypedData_v4` wallets."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Dispute": [{"name": name, "type": solidity_type} for name, solidity_type in DISPUTE_FIELDS],
        },
        "primaryType": "Dispute",
        "domain": domain.as_dict(),
        "message": dispute_message(line, reason_hash, deadline),
    }


def sign_dispute(account: LocalAccount, domain: Domain, line: DisputeLine, reason_hash: str, deadline: int) -> bytes:
    """A 65-byte (r, s, v) signature of the dispute, as a wallet produces it."""
    return sign_digest(account, dispute_digest(domain, line, reason_hash, deadline))


def _bytes32(value: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes of hex, got {len(raw)}: {value}")
    return raw
