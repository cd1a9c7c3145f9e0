"""A freshly deployed TradeLedger on a real node, with one wrapper per role, for tests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.chain.compiler import compile_contracts
from ledger.chain.deployment import Deployment, deploy_contracts
from ledger.chain.node import DEV_ACCOUNT_KEYS
from ledger.chain.rpc import JsonRpc
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.chain.transactions import TransactionSender
from ledger.domain.trade import DEFAULT_TRADE_LIMITS, ParticipantKind, SignedTrade, Trade, TradeLimits
from ledger.domain.units import INTERVAL_SECONDS
from ledger.signing.eip712 import Domain, trade_id
from ledger.signing.trader import countersigned, new_nonce, sign_cancel_trade

ROLE_KEYS = {"admin": 0, "operator": 1, "recorder": 2, "pauser": 3, "meter_oracle": 4, "settler": 5, "outsider": 9}


@dataclass
class Market:
    rpc: JsonRpc
    chain_id: int
    deployment: Deployment
    abi: list[dict[str, Any]]
    senders: dict[str, TransactionSender]
    ledgers: dict[str, TradeLedgerContract] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return self.deployment.contracts["TradeLedger"].address

    @property
    def domain(self) -> Domain:
        return Domain(self.chain_id, self.address)

    def ledger(self, role: str) -> TradeLedgerContract:
        """The contract as seen by the account holding `role` ("outsider" holds none)."""
        if role not in self.ledgers:
            self.ledgers[role] = TradeLedgerContract(self.senders[role], self.address, self.abi)
        return self.ledgers[role]

    def participant(self, kind: ParticipantKind = ParticipantKind.PROSUMER) -> LocalAccount:
        account: LocalAccount = Account.create()
        self.ledger("operator").register_participant(account.address, kind, secrets.token_bytes(32))
        return account

    def now(self) -> int:
        return int(self.rpc.call("eth_getBlockByNumber", "latest", False)["timestamp"], 16)

    def advance(self, seconds: int) -> None:
        self.rpc.call("evm_increaseTime", hex(seconds))
        self.rpc.call("evm_mine")

    def trade(self, seller: LocalAccount, buyer: LocalAccount, **terms: Any) -> Trade:
        return valid_trade(seller, buyer, self.now(), **terms)

    def signed(self, seller: LocalAccount, buyer: LocalAccount, **terms: Any) -> SignedTrade:
        return countersigned(seller, buyer, self.domain, self.trade(seller, buyer, **terms))

    def cancel(self, seller: LocalAccount, buyer: LocalAccount, trade_id: str) -> None:
        """Cancels a recorded trade with both parties' signatures, through the recorder."""
        deadline = self.now() + 600
        self.ledger("recorder").cancel_trade(
            trade_id,
            seller.address,
            buyer.address,
            deadline,
            sign_cancel_trade(seller, self.domain, trade_id, deadline),
            sign_cancel_trade(buyer, self.domain, trade_id, deadline),
        )

    def trade_id(self, trade: Trade) -> str:
        return trade_id(self.domain, trade)


def valid_trade(seller: LocalAccount, buyer: LocalAccount, now: int, **terms: Any) -> Trade:
    """A trade the contract accepts at chain time `now`: one hour of delivery starting two
    intervals after gate closure; `terms` override any field."""
    start = (now + DEFAULT_TRADE_LIMITS.gate_closure_seconds) // INTERVAL_SECONDS * INTERVAL_SECONDS
    start += 2 * INTERVAL_SECONDS
    base = Trade(
        seller=seller.address,
        buyer=buyer.address,
        delivery_start=start,
        delivery_end=start + 4 * INTERVAL_SECONDS,
        energy_per_interval_wh=250_000,
        price_minor_per_mwh=35_000,
        nonce=new_nonce(),
        deadline=now + 3600,
    )
    return replace(base, **terms)


def deploy_market(rpc_url: str, chain_id: int, limits: TradeLimits = DEFAULT_TRADE_LIMITS) -> Market:
    rpc = JsonRpc(rpc_url)
    senders = {
        role: TransactionSender(rpc, Account.from_key(DEV_ACCOUNT_KEYS[index]), chain_id)
        for role, index in ROLE_KEYS.items()
    }
    artifacts = compile_contracts()
    deployment = deploy_contracts(
        senders["admin"],
        artifacts,
        roles={role: senders[role].address for role in ("operator", "recorder", "pauser")},
        limits=limits,
        names=["TradeLedger"],
    )
    return Market(rpc, chain_id, deployment, artifacts["TradeLedger"].abi, senders)
