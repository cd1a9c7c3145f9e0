"""Deploying the contracts, and the deployment file that the service and the scripts read."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_abi import encode
from eth_utils import to_checksum_address

from ledger import errors
from ledger.chain.abi import abi_type
from ledger.chain.contract_errors import ErrorDecoder
from ledger.chain.rpc import JsonRpc
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.chain.transactions import TransactionSender
from ledger.domain.trade import DEFAULT_TRADE_LIMITS, TradeLimits

DEPLOYMENT_FORMAT = 1


@dataclass(frozen=True)
class ContractDeployment:
    address: str
    block_number: int
    transaction_hash: str
    abi_hash: str


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    deployer: str
    deployed_at: int
    contracts: dict[str, ContractDeployment]
    roles: dict[str, str]

    @property
    def start_block(self) -> int:
        return min(c.block_number for c in self.contracts.values())

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"format": DEPLOYMENT_FORMAT, **asdict(self)}, indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise errors.ConfigurationError(f"no deployment file at {path}: run scripts/deploy.py") from exc
        if raw.get("format") != DEPLOYMENT_FORMAT:
            raise errors.ConfigurationError(f"deployment file {path} has an unknown format")
        return cls(
            chain_id=raw["chain_id"],
            deployer=raw["deployer"],
            deployed_at=raw["deployed_at"],
            contracts={name: ContractDeployment(**c) for name, c in raw["contracts"].items()},
            roles=raw["roles"],
        )

    def check(self, rpc: JsonRpc, abi_hashes: dict[str, str]) -> None:
        """Refuses a deployment made for another chain, another ABI, or a chain that was reset."""
        chain_id = int(rpc.call("eth_chainId"), 16)
        if chain_id != self.chain_id:
            raise errors.ConfigurationError(
                f"deployment is for chain {self.chain_id}, the node is chain {chain_id}",
                expected=self.chain_id,
                actual=chain_id,
            )
        for name, contract in self.contracts.items():
            if abi_hashes.get(name) != contract.abi_hash:
                raise errors.ConfigurationError(f"{name}'s ABI changed since deployment: redeploy", contract=name)
            if rpc.call("eth_getCode", contract.address, "latest") in ("0x", "0x0"):
                raise errors.ConfigurationError(
                    f"no code at {name}'s address {contract.address}: the chain was reset, redeploy",
                    contract=name,
                )


def deploy_trade_ledger(
    admin: TransactionSender,
    artifact: Any,
    *,
    roles: dict[str, str],
    limits: TradeLimits = DEFAULT_TRADE_LIMITS,
) -> Deployment:
    """Deploys TradeLedger from `admin` and grants each role in `roles` (role name -> account).

    `artifact` is a compiled contract (`ledger.chain.compiler.ContractArtifact`)."""
    constructor = next(item for item in artifact.abi if item["type"] == "constructor")
    args = encode([abi_type(i) for i in constructor["inputs"]], [admin.address, limits.as_tuple()])
    receipt = admin.transact(None, artifact.bytecode + args.hex(), ErrorDecoder(artifact.abi).decode)
    raw = admin.rpc.call("eth_getTransactionReceipt", receipt.transaction_hash)
    address = to_checksum_address(raw["contractAddress"])
    ledger = TradeLedgerContract(admin, address, artifact.abi)
    for role, account in roles.items():
        ledger.grant_role(role, account)
    return Deployment(
        chain_id=admin.chain_id,
        deployer=admin.address,
        deployed_at=int(time.time()),
        contracts={
            "TradeLedger": ContractDeployment(
                address=address,
                block_number=receipt.block_number,
                transaction_hash=receipt.transaction_hash,
                abi_hash=artifact.abi_hash,
            )
        },
        roles=dict(roles),
    )
