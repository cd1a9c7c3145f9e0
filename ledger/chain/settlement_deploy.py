"""Deploying MeterData and Settlement next to the TradeLedger (to be folded into deployment.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eth_abi import encode
from eth_utils import to_checksum_address

from ledger import errors
from ledger.chain.abi import abi_type
from ledger.chain.contract import ROLES
from ledger.chain.contract_errors import ErrorDecoder
from ledger.chain.deployment import ContractDeployment
from ledger.chain.meter_data import MeterDataContract
from ledger.chain.settlement import SettlementContract
from ledger.chain.transactions import TransactionSender

# The roles each contract checks; `deploy_settlement_contracts` grants only these.
METER_DATA_ROLES = ("meter_oracle", "operator")
SETTLEMENT_ROLES = ("settler", "operator")


def deploy_settlement_contracts(
    admin: TransactionSender,
    artifacts: Mapping[str, Any],
    *,
    roles: Mapping[str, str],
    dispute_window_seconds: int | None = None,
) -> dict[str, ContractDeployment]:
    """Deploys MeterData and Settlement from `admin` (their admin) and grants each contract the
    roles of `roles` (role name -> account) that it uses; other roles (the recorder, the pauser)
    are the TradeLedger's and are skipped. `artifacts` are the compiled contracts
    (`ledger.chain.compiler.compile_contracts()`); `dispute_window_seconds` replaces the default
    72 h window. Returns {"MeterData": ..., "Settlement": ...}."""
    unknown = sorted(set(roles) - set(ROLES))
    if unknown:
        raise errors.ConfigurationError(f"unknown roles {unknown}", roles=unknown)
    deployed: dict[str, ContractDeployment] = {}
    for name, used in (("MeterData", METER_DATA_ROLES), ("Settlement", SETTLEMENT_ROLES)):
        artifact = artifacts[name]
        deployed[name] = _deploy(admin, artifact)
        contract = (MeterDataContract if name == "MeterData" else SettlementContract)(
            admin, deployed[name].address, artifact.abi
        )
        for role in used:
            if role in roles:
                contract.grant_role(role, roles[role])
    if dispute_window_seconds is not None:
        settlement = SettlementContract(admin, deployed["Settlement"].address, artifacts["Settlement"].abi)
        settlement.set_dispute_window(dispute_window_seconds)
    return deployed


def _deploy(admin: TransactionSender, artifact: Any) -> ContractDeployment:
    """Creates the contract with `constructor(address admin)`."""
    constructor = next(item for item in artifact.abi if item["type"] == "constructor")
    args = encode([abi_type(i) for i in constructor["inputs"]], [admin.address])
    receipt = admin.transact(None, artifact.bytecode + args.hex(), ErrorDecoder(artifact.abi).decode)
    raw = admin.rpc.call("eth_getTransactionReceipt", receipt.transaction_hash)
    return ContractDeployment(
        address=to_checksum_address(raw["contractAddress"]),
        block_number=receipt.block_number,
        transaction_hash=receipt.transaction_hash,
        abi_hash=artifact.abi_hash,
    )
