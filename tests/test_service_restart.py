"""An accepted trade survives a restart of the service and is recorded exactly once."""

from __future__ import annotations

from pathlib import Path

from eth_account import Account

from ledger.chain.node import LocalNode
from ledger.chain.rpc import JsonRpc
from ledger.chain.trade_ledger import TRADE_RECORDED_TOPIC
from ledger.domain.trade import ParticipantKind
from ledger.services.context import LedgerContext
from ledger.services.runtime import LedgerService
from ledger.signing.eip712 import trade_id
from ledger.signing.trader import countersigned
from ledger.store import outbox, queries
from tests.support.market import valid_trade
from tests.support.service import deployed_settings, wait_for


def test_a_trade_accepted_before_a_crash_is_recorded_after_the_restart(
    anvil: LocalNode, database_url: str, tmp_path: Path
) -> None:
    settings = deployed_settings(anvil.rpc_url, database_url, tmp_path)
    first = LedgerService(LedgerContext.open(settings))
    seller, buyer = Account.create(), Account.create()
    for account in (seller, buyer):
        first.participants.register(account.address, ParticipantKind.GENERATOR, f"licence-{account.address}")
    terms = valid_trade(seller, buyer, first.context.clock.now())
    signed = countersigned(seller, buyer, first.context.recorder.domain, terms)
    accepted = first.trading.submit(signed)
    assert accepted.status == "accepted"
    first.context.close()  # the process dies before its relayer ever ran

    second = LedgerService(LedgerContext.open(settings))
    second.start()
    try:
        sessions = second.context.sessions

        def recorded() -> bool:
            with sessions() as session:
                row = outbox.get_submission(session, accepted.submission_id)
                return row is not None and row.status.value == "recorded"

        def indexed() -> bool:
            with sessions() as session:
                return queries.get_trade(session, accepted.trade_id) is not None

        wait_for(recorded, "the trade recorded after the restart")
        wait_for(indexed, "the trade indexed after the restart")
        again = second.trading.submit(signed)
        assert (again.submission_id, again.trade_id, again.status) == (
            accepted.submission_id,
            accepted.trade_id,
            "recorded",
        )
    finally:
        second.stop()
        second.context.close()
    logs = JsonRpc(anvil.rpc_url).call(
        "eth_getLogs",
        {
            "address": second.context.deployment.contracts["TradeLedger"].address,
            "fromBlock": "0x0",
            "toBlock": "latest",
            "topics": [TRADE_RECORDED_TOPIC, trade_id(second.context.recorder.domain, terms)],
        },
    )
    assert len(logs) == 1
