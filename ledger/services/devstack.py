"""The local stack of the quick start: a managed node, a fresh deployment, an index for it."""

from __future__ import annotations

import logging
from pathlib import Path

from eth_account import Account
from sqlalchemy.engine import make_url

from ledger.chain.compiler import compile_contracts
from ledger.chain.deployment import Deployment, deploy_contracts
from ledger.chain.node import LocalNode
from ledger.chain.rpc import JsonRpc
from ledger.chain.transactions import TransactionSender
from ledger.config import Settings
from ledger.errors import ConfigurationError

log = logging.getLogger(__name__)


def deploy(settings: Settings, rpc_url: str) -> Deployment:
    """Deploys the contracts with the settings' accounts in their roles and writes the deployment file."""
    rpc = JsonRpc(rpc_url)
    try:
        chain_id = int(rpc.call("eth_chainId"), 16)
        if chain_id != settings.chain_id:
            raise ConfigurationError(
                f"the node at {rpc_url} is chain {chain_id}, settings say {settings.chain_id}",
                expected=settings.chain_id,
                actual=chain_id,
            )
        admin = TransactionSender(rpc, Account.from_key(settings.admin_key.get_secret_value()), settings.chain_id)
        roles = {
            role: Account.from_key(getattr(settings, f"{role}_key").get_secret_value()).address
            for role in ("operator", "recorder", "pauser", "meter_oracle", "settler")
        }
        deployment = deploy_contracts(admin, compile_contracts(), roles=roles)
    finally:
        rpc.close()
    deployment.save(settings.deployment_file)
    for name, contract in deployment.contracts.items():
        log.info("deployed %s at %s", name, contract.address)
    return deployment


def start_local_chain(settings: Settings, log_path: Path | None = None) -> LocalNode:
    """A managed node for local development. Its chain lives as long as the process, so the
    deployment file and a SQLite index from an earlier run are stale: both are started afresh."""
    node = LocalNode(
        settings.node_kind, chain_id=settings.chain_id, block_time=settings.block_time_seconds, log_path=log_path
    )
    node.start()
    try:
        node.wait_ready()
        _reset_local_index(settings.database_url)
        deploy(settings, node.rpc_url)
    except BaseException:
        node.stop()
        raise
    return node


def _reset_local_index(database_url: str) -> None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise ValueError(
            "a managed local chain starts empty, so its index must be a SQLite file that can be reset; "
            "point GRIDLEDGER_RPC_URL at a persistent chain to use another database"
        )
    for suffix in ("", "-wal", "-shm"):
        Path(url.database + suffix).unlink(missing_ok=True)
