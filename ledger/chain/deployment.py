"""Deploying the contracts, and the deployment file that the service and the scripts read."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_abi import encode
from eth_utils import to_checksum_address

from ledger import errors
from ledger.chain.abi import abi_type
from ledger.chain.contract import ROLES, ContractCalls
from ledger.chain.contract_errors import ErrorDecoder
from ledger.chain.rpc import JsonRpc
from ledger.chain.settlement import SettlementContract
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


# The roles each contract checks; deploying grants a contract only the roles it uses.
CONTRACT_ROLES = {
    "TradeLedger": ("operator", "recorder", "pauser"),
    "MeterData": ("meter_oracle", "operator"),
    "Settlement": ("settler", "operator"),
}


def deploy_contracts(
    admin: TransactionSender,
    artifacts: Mapping[str, Any],
    *,
    roles: Mapping[str, str],
    limits: TradeLimits = DEFAULT_TRADE_LIMITS,
    dispute_window_seconds: int | None = None,
    names: Collection[str] = tuple(CONTRACT_ROLES),
) -> Deployment:
    """Deploys the contracts `names` (all by default) from `admin` (their admin) and grants each
    the roles of `roles` (role name -> account) that it checks. `artifacts` are the compiled
    contracts (`ledger.chain.compiler.compile_contracts()`)."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise errors.ConfigurationError(f"unknown roles {unknown}", roles=unknown)
    constructor_args: dict[str, list[Any]] = {
        "TradeLedger": [admin.address, limits.as_tuple()],
        "MeterData": [admin.address],
        "Settlement": [admin.address],
    }
    contracts = {name: _deploy(admin, artifacts[name], constructor_args[name]) for name in names}
    for name, deployed in contracts.items():
        contract = ContractCalls(admin, deployed.address, artifacts[name].abi)
        for role in CONTRACT_ROLES[name]:
            if role in roles:
                contract.grant_role(role, roles[role])
    if dispute_window_seconds is not None and "Settlement" in contracts:
        settlement = SettlementContract(admin, contracts["Settlement"].address, artifacts["Settlement"].abi)
        settlement.set_dispute_window(dispute_window_seconds)
    return Deployment(
        chain_id=admin.chain_id,
        deployer=admin.address,
        deployed_at=int(time.time()),
        contracts=contracts,
        roles=dict(roles),
    )


def _deploy(admin: TransactionSender, artifact: Any, constructor_args: list[Any]) -> ContractDeployment:
    constructor = next(item for item in artifact.abi if item["type"] == "constructor")
    args = encode([abi_type(i) for i in constructor["inputs"]], constructor_args)
    receipt = admin.transact(None, artifact.bytecode + args.hex(), ErrorDecoder(artifact.abi).decode)
    raw = admin.rpc.call("eth_getTransactionReceipt", receipt.transaction_hash)
    return ContractDeployment(
        address=to_checksum_address(raw["contractAddress"]),
        block_number=receipt.block_number,
        transaction_hash=receipt.transaction_hash,
        abi_hash=artifact.abi_hash,
    )
