"""Freshly deployed MeterData and Settlement contracts on a real node, one wrapper per role, and
StandardMerkleTrees to commit, for the metering and settlement contract tests.

`settlement_market` is the fixture (import `settlement_market_fixture` into a test module); trees come from
`ledger.domain.merkle` when it is importable, else from `@openzeppelin/merkle-tree` through Node.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.chain.compiler import PROJECT_ROOT, compile_contracts
from ledger.chain.deployment import ContractDeployment, deploy_contracts
from ledger.chain.meter_data import MeterDataContract
from ledger.chain.node import DEV_ACCOUNT_KEYS, LocalNode
from ledger.chain.rpc import JsonRpc
from ledger.chain.settlement import SettlementContract
from ledger.chain.transactions import Receipt, TransactionSender
from ledger.domain.merkle import StandardMerkleTree
from ledger.domain.units import INTERVAL_SECONDS
from ledger.signing.eip712 import Domain

CHAIN_ID = 31337
# "relayer" holds no role: anyone may relay a signed dispute.
ROLE_KEYS = {"admin": 0, "operator": 1, "meter_oracle": 4, "settler": 5, "relayer": 6, "outsider": 9}
GRANTED_ROLES = ("operator", "meter_oracle", "settler")


@dataclass
class SettlementMarket:
    rpc: JsonRpc
    chain_id: int
    deployments: dict[str, ContractDeployment]
    abis: dict[str, list[dict[str, Any]]]
    senders: dict[str, TransactionSender]
    _wrappers: dict[tuple[str, str], Any] = field(default_factory=dict)

    def address(self, contract: str) -> str:
        return self.deployments[contract].address

    @property
    def domain(self) -> Domain:
        return self.settlement("outsider").domain

    def meter_data(self, role: str) -> MeterDataContract:
        """MeterData as seen by the account holding `role` ("outsider" and "relayer" hold none)."""
        key = ("MeterData", role)
        if key not in self._wrappers:
            self._wrappers[key] = MeterDataContract(
                self.senders[role], self.address("MeterData"), self.abis["MeterData"]
            )
        wrapper: MeterDataContract = self._wrappers[key]
        return wrapper

    def settlement(self, role: str) -> SettlementContract:
        key = ("Settlement", role)
        if key not in self._wrappers:
            self._wrappers[key] = SettlementContract(
                self.senders[role], self.address("Settlement"), self.abis["Settlement"]
            )
        wrapper: SettlementContract = self._wrappers[key]
        return wrapper

    def now(self) -> int:
        return int(self.rpc.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)

    def block_timestamp(self, receipt: Receipt) -> int:
        return int(self.rpc.call("eth_getBlockByNumber", hex(receipt.block_number), False)["timestamp"], 16)

    def advance(self, seconds: int) -> None:
        self.rpc.call("evm_increaseTime", hex(seconds))
        self.rpc.call("evm_mine")

    def pin_next_block(self, at: int) -> None:
        """Fixes the timestamp of the next block, which `eth_estimateGas` simulates too."""
        self.rpc.call("evm_setNextBlockTimestamp", hex(at))

    def mine_at(self, at: int) -> None:
        """Mines an empty block with timestamp `at`: views then see `block.timestamp == at`."""
        self.pin_next_block(at)
        self.rpc.call("evm_mine")

    def period(self, intervals: int = 4) -> tuple[int, int]:
        """A fresh period of `intervals` intervals ending before now (a random day of the past
        year), so tests never collide on a period."""
        start = (self.now() - secrets.randbelow(365 * 96) * INTERVAL_SECONDS - 86_400) // INTERVAL_SECONDS
        start *= INTERVAL_SECONDS
        return start, start + intervals * INTERVAL_SECONDS


def deploy_settlement_market(rpc_url: str, chain_id: int = CHAIN_ID) -> SettlementMarket:
    rpc = JsonRpc(rpc_url)
    senders = {
        role: TransactionSender(rpc, Account.from_key(DEV_ACCOUNT_KEYS[index]), chain_id)
        for role, index in ROLE_KEYS.items()
    }
    artifacts = compile_contracts()
    deployments = deploy_contracts(
        senders["admin"],
        artifacts,
        roles={role: senders[role].address for role in GRANTED_ROLES},
        names=["MeterData", "Settlement"],
    ).contracts
    abis = {name: artifacts[name].abi for name in deployments}
    return SettlementMarket(rpc, chain_id, deployments, abis, senders)


@pytest.fixture(name="settlement_market")
def settlement_market_fixture(node: LocalNode) -> SettlementMarket:
    """A new deployment on each node of the session (`node`: Hardhat and anvil)."""
    return deploy_settlement_market(node.rpc_url)


def new_id() -> str:
    return "0x" + secrets.token_hex(32)


def account() -> LocalAccount:
    created: LocalAccount = Account.create()
    return created


# --- Merkle trees -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """A StandardMerkleTree's root and, for each value in input order, its proof."""

    root: str
    proofs: list[list[str]]


_NODE_TREE = """
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');
let input = '';
process.stdin.on('data', c => (input += c));
process.stdin.on('end', () => {
  const { values, encoding } = JSON.parse(input);
  const tree = StandardMerkleTree.of(values, encoding);
  process.stdout.write(JSON.stringify({ root: tree.root, proofs: values.map((_, i) => tree.getProof(i)) }));
});
"""


def js_tree(values: Sequence[Sequence[Any]], encoding: Sequence[str]) -> Tree:
    """The tree `@openzeppelin/merkle-tree` builds; integers travel as decimal strings."""
    payload = {
        "values": [[str(v) if isinstance(v, int) else v for v in value] for value in values],
        "encoding": list(encoding),
    }
    proc = subprocess.run(
        ["node", "-e", _NODE_TREE],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    out = json.loads(proc.stdout)
    return Tree(out["root"], out["proofs"])


def merkle_tree(values: Sequence[Sequence[Any]], encoding: Sequence[str]) -> Tree:
    """The tree `ledger.domain.merkle` builds."""
    tree = StandardMerkleTree.of([list(v) for v in values], list(encoding))
    return Tree(_hex(tree.root), [[_hex(p) for p in tree.get_proof(i)] for i in range(len(values))])


def _hex(value: str | bytes) -> str:
    return value if isinstance(value, str) else "0x" + value.hex()
