"""Wiring: from validated settings to connected collaborators. The one place that builds them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from eth_account import Account
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ledger.chain.compiler import compile_contracts
from ledger.chain.contract import ContractCalls
from ledger.chain.deployment import Deployment
from ledger.chain.meter_data import MeterDataContract
from ledger.chain.rpc import JsonRpc
from ledger.chain.settlement import SettlementContract
from ledger.chain.trade_ledger import TradeLedgerContract
from ledger.chain.transactions import TransactionSender
from ledger.config import Settings
from ledger.errors import ConfigurationError
from ledger.services.clock import ChainClock
from ledger.store.db import make_engine, make_session_factory, migrate

C = TypeVar("C", bound=ContractCalls)


@dataclass
class LedgerContext:
    settings: Settings
    rpc: JsonRpc
    deployment: Deployment
    abi: list[dict[str, Any]]
    engine: Engine
    sessions: sessionmaker[Session]
    read_sessions: sessionmaker[Session]
    clock: ChainClock
    recorder: TradeLedgerContract
    operator: TradeLedgerContract
    pauser: TradeLedgerContract
    meter_oracle: MeterDataContract  # commits reading batches
    price_publisher: MeterDataContract  # the operator, committing reference-price batches
    settler: SettlementContract
    settlement_operator: SettlementContract  # the operator, resolving disputes

    @classmethod
    def open(cls, settings: Settings, *, rpc_url: str | None = None) -> LedgerContext:
        """Connects to the chain of the deployment file and to the (migrated) index database.

        Refuses to start when the node's chain id, the contract code or the ABI do not match the
        deployment: serving one chain's index for another would be silently wrong."""
        url = rpc_url or settings.rpc_url
        if url is None:
            raise ValueError("an RPC URL is needed: settings.rpc_url, or a started local node's")
        rpc = JsonRpc(url)
        artifacts = compile_contracts()
        deployment = Deployment.load(settings.deployment_file)
        deployment.check(rpc, {name: a.abi_hash for name, a in artifacts.items()})
        if deployment.chain_id != settings.chain_id:
            raise ConfigurationError(
                f"settings say chain {settings.chain_id}, the deployment is on chain {deployment.chain_id}"
            )
        abi = artifacts["TradeLedger"].abi
        engine = make_engine(settings.database_url)
        migrate(engine)
        sessions = make_session_factory(engine)
        senders: dict[str, TransactionSender] = {}

        def contract(cls: type[C], name: str, role: str) -> C:
            # One sender per key in this process, shared by every contract it calls; its nonces
            # come from the database, shared with every other process using the key.
            if role not in senders:
                key = getattr(settings, f"{role}_key").get_secret_value()
                senders[role] = TransactionSender(rpc, Account.from_key(key), settings.chain_id, sessions=sessions)
            return cls(senders[role], deployment.contracts[name].address, artifacts[name].abi)

        return cls(
            settings=settings,
            rpc=rpc,
            deployment=deployment,
            abi=abi,
            engine=engine,
            sessions=sessions,
            read_sessions=make_session_factory(engine, read_only=True),
            clock=ChainClock(rpc),
            recorder=contract(TradeLedgerContract, "TradeLedger", "recorder"),
            operator=contract(TradeLedgerContract, "TradeLedger", "operator"),
            pauser=contract(TradeLedgerContract, "TradeLedger", "pauser"),
            meter_oracle=contract(MeterDataContract, "MeterData", "meter_oracle"),
            price_publisher=contract(MeterDataContract, "MeterData", "operator"),
            settler=contract(SettlementContract, "Settlement", "settler"),
            settlement_operator=contract(SettlementContract, "Settlement", "operator"),
        )

    def close(self) -> None:
        self.rpc.close()
        self.engine.dispose()
