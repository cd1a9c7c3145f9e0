"""The running service's indexer follows the head through reorgs (anvil_reorg): an unconfirmed
trade is served with its confirmations, disappears from the API when a reorg drops it and comes
back when it is mined again; a reorg deeper than the confirmations halts the indexer and health
says why. Settlement inputs are final rows only. A relayed trade's submission, a cancellation and
a participant registration follow their transaction through reorgs (tests/test_reconcile.py has
the other records)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from eth_account import Account

from ledger.chain.node import LocalNode
from ledger.chain.trade_ledger import PARTICIPANT_REGISTERED_TOPIC, TRADE_CANCELLED_TOPIC, TRADE_RECORDED_TOPIC
from ledger.domain.trade import ParticipantKind
from ledger.signing.trader import sign_cancel_trade
from ledger.store.models import Trade
from tests.support.service import CHAIN_ID, RunningService, iso, running_service, wait_for
from tests.support.settled_world import world_with

CONFIRMATIONS = 3


def following_service(rpc_url: str, workdir: Path) -> AbstractContextManager[RunningService]:
    """The running service with blocks final after CONFIRMATIONS confirmations."""
    return running_service(rpc_url, f"sqlite:///{workdir / 'gridledger.db'}", workdir, confirmations=CONFIRMATIONS)


def trade_status(running: RunningService, trade_id: str) -> int:
    return running.client.get(f"/trades/{trade_id}").status_code


def test_an_unconfirmed_trade_leaves_the_api_with_a_reorg_and_returns_when_mined_again(tmp_path: Path) -> None:
    with LocalNode("anvil", chain_id=CHAIN_ID) as node, following_service(node.rpc_url, tmp_path) as running:
        seller, buyer = running.register("generator"), running.register("consumer")
        signed = running.sign(seller, buyer, running.trade(seller, buyer))
        trade_id = running.market.trade_id(signed.trade)
        running.record_directly(running.sign(seller, buyer, running.trade(seller, buyer)))  # the role, once
        recorder = running.market.ledger("direct_recorder")
        transaction = recorder.sender.sign(
            recorder.address, recorder.encode("recordTrade", [signed.as_tuple()]), 600_000
        )
        rpc = running.market.rpc

        rpc.call("eth_sendRawTransaction", transaction.raw)
        shown = running.wait_indexed(f"/trades/{trade_id}")
        # Served at once, and marked as not final: fewer confirmations than the service requires.
        assert shown["provenance"]["confirmations"] < CONFIRMATIONS
        mined_in = shown["provenance"]["blockHash"]

        rpc.call("anvil_reorg", 1, [])  # the trade's block is replaced by an empty one
        wait_for(lambda: trade_status(running, trade_id) == 404 or None, "the dropped trade to leave the API")
        health = running.client.get("/health")
        assert health.status_code == 200, health.text

        rpc.call("eth_sendRawTransaction", transaction.raw)  # mined again, in another block
        again = running.wait_indexed(f"/trades/{trade_id}")
        assert again["provenance"]["blockHash"] != mined_in
        rpc.call("anvil_mine", hex(CONFIRMATIONS))
        final = running.wait_indexed(
            f"/trades/{trade_id}", until=lambda body: body["provenance"]["confirmations"] > CONFIRMATIONS
        )
        assert final["provenance"]["blockHash"] == again["provenance"]["blockHash"]

        # A reorg deeper than the confirmations: the indexer halts, health says why.
        rpc.call("anvil_reorg", CONFIRMATIONS + 3, [])
        report: dict[str, Any] = wait_for(
            lambda: ((answer := running.client.get("/health")).status_code == 503 and answer.json()) or None,
            "health to report the halted indexer",
        )
        assert report["status"] == "unhealthy"
        assert report["error"]["code"] == "reorg_beyond_finality"
        assert report["workers"]["indexer"]["alive"] is False
        # Nothing was undone: the index still serves what it had, it does not invent a new chain.
        assert trade_status(running, trade_id) == 200


def test_a_settlement_run_takes_only_final_trades(anvil: LocalNode, database_url: str, tmp_path: Path) -> None:
    with world_with(anvil.rpc_url, database_url, tmp_path, confirmations=CONFIRMATIONS) as world:
        g, r = world.participant(ParticipantKind.GENERATOR), world.participant(ParticipantKind.CONSUMER)
        start, end = world.future_period(2)
        world.prices((start, end), 45_000)
        world.rpc.call("anvil_mine", hex(CONFIRMATIONS - 1))  # the prices final
        trade_id = world.record(g, r, start, end, 400_000, 50_000)
        world.index()
        with world.context.sessions() as session:
            assert session.get(Trade, trade_id) is not None  # indexed, in a block not final yet

        def inputs() -> list[str]:
            return [trade.trade_id for trade in world.settlement.gather_inputs(start, end).trades]

        assert inputs() == []
        world.rpc.call("anvil_mine", hex(CONFIRMATIONS - 1))
        world.index()
        assert inputs() == [trade_id]

        # A cancellation counts once it is final too: until then the trade is still an input.
        world.cancel(trade_id, g, r)
        world.index()
        with world.context.sessions() as session:
            stored = session.get(Trade, trade_id)
            assert stored is not None and stored.status.value == "cancelled"
        assert inputs() == [trade_id]
        world.rpc.call("anvil_mine", hex(CONFIRMATIONS - 1))
        world.index()
        assert inputs() == []


def test_a_relayed_trade_follows_its_transaction_through_reorgs_and_is_recorded_once(tmp_path: Path) -> None:
    """The service's own wiring: its indexer thread rolls back, its reconciler repairs the
    submission, its relayer sends a dropped trade again."""
    with LocalNode("anvil", chain_id=CHAIN_ID) as node, following_service(node.rpc_url, tmp_path) as running:
        seller, buyer = running.register("generator"), running.register("consumer")
        rpc = running.market.rpc
        accepted = running.client.post("/trades", json=running.body(seller, buyer))
        assert accepted.status_code == 202, accepted.text
        trade_id, submission_id = accepted.json()["tradeId"], accepted.json()["submissionId"]
        recorded = running.wait_recorded(submission_id)
        tx, mined_in = recorded["transactionHash"], recorded["blockNumber"]
        running.wait_indexed(f"/trades/{trade_id}")

        def submission() -> dict[str, Any]:
            return dict(running.client.get(f"/submissions/{submission_id}").json())

        # Mined again in the next block: the submission moves there.
        raw = rpc.call("eth_getRawTransactionByHash", tx)
        rpc.call("evm_mine")
        rpc.call("anvil_reorg", 2, [[raw, 1]])
        moved = wait_for(
            lambda: (s := submission())["blockNumber"] == mined_in + 1 and s, "the submission to follow its transaction"
        )
        assert (moved["status"], moved["transactionHash"]) == ("recorded", tx)

        # Dropped: accepted again, sent again by the relayer, recorded once, in a later block.
        rpc.call("anvil_reorg", 1, [])
        again = wait_for(
            lambda: (s := submission())["status"] == "recorded" and s["blockNumber"] > mined_in + 1 and s,
            "the dropped trade to be recorded again",
        )
        shown = running.wait_indexed(
            f"/trades/{trade_id}", until=lambda body: body["provenance"]["blockNumber"] == again["blockNumber"]
        )
        assert shown["provenance"]["transactionHash"] == again["transactionHash"]
        ledger = running.market.deployment.contracts["TradeLedger"].address
        logs = rpc.call(
            "eth_getLogs",
            {"address": ledger, "fromBlock": "0x0", "toBlock": "latest", "topics": [TRADE_RECORDED_TOPIC, trade_id]},
        )
        assert len(logs) == 1
        assert running.client.get("/health").status_code == 200


def test_a_relayed_cancellation_follows_its_transaction_through_reorgs_and_is_recorded_once(tmp_path: Path) -> None:
    """A cancellation's record follows its block like a trade's submission: moved where its
    transaction was mined again, and once dropped, accepted again and sent again by the relayer."""
    with LocalNode("anvil", chain_id=CHAIN_ID) as node, following_service(node.rpc_url, tmp_path) as running:
        seller, buyer = running.register("generator"), running.register("consumer")
        rpc = running.market.rpc
        accepted = running.client.post("/trades", json=running.body(seller, buyer)).json()
        trade_id = accepted["tradeId"]
        running.wait_recorded(accepted["submissionId"])
        running.wait_indexed(f"/trades/{trade_id}")
        rpc.call("anvil_mine", hex(CONFIRMATIONS))  # the trade's block is out of the reorgs' reach
        deadline = running.market.now() + 600
        domain = running.market.domain
        body = {
            "deadline": iso(deadline),
            "sellerSignature": "0x" + sign_cancel_trade(seller, domain, trade_id, deadline).hex(),
            "buyerSignature": "0x" + sign_cancel_trade(buyer, domain, trade_id, deadline).hex(),
        }
        answer = running.client.post(f"/trades/{trade_id}/cancel", json=body)
        assert answer.status_code == 202, answer.text
        cancellation_id = answer.json()["cancellationId"]
        done = running.wait_cancelled(cancellation_id)
        tx, mined_in = done["transactionHash"], done["blockNumber"]
        # The indexer has seen the cancellation's block: a reorg of a block it never indexed is not
        # one it can notice (the trade's submission above is indexed before its reorg too).
        running.wait_indexed(f"/trades/{trade_id}", until=lambda t: t["status"] == "cancelled")

        def cancellation() -> dict[str, Any]:
            return dict(running.client.get(f"/cancellations/{cancellation_id}").json())

        raw = rpc.call("eth_getRawTransactionByHash", tx)
        rpc.call("evm_mine")
        rpc.call("anvil_reorg", 2, [[raw, 1]])
        moved = wait_for(
            lambda: (c := cancellation())["blockNumber"] == mined_in + 1 and c, "the cancellation to follow its block"
        )
        assert (moved["status"], moved["transactionHash"]) == ("recorded", tx)

        rpc.call("anvil_reorg", 1, [])
        again = wait_for(
            lambda: (c := cancellation())["status"] == "recorded" and c["blockNumber"] > mined_in + 1 and c,
            "the dropped cancellation to be recorded again",
        )
        running.wait_indexed(f"/trades/{trade_id}", until=lambda t: t["status"] == "cancelled")
        ledger = running.market.deployment.contracts["TradeLedger"].address
        logs = rpc.call(
            "eth_getLogs",
            {
                "address": ledger,
                "fromBlock": "0x0",
                "toBlock": "latest",
                "topics": [TRADE_CANCELLED_TOPIC, trade_id, "0x" + "00" * 32],
            },
        )
        assert [log["transactionHash"] for log in logs] == [again["transactionHash"]]


def test_a_registration_follows_its_transaction_through_reorgs_and_is_registered_once(tmp_path: Path) -> None:
    """The registrar's record follows its block as the relayer's do: moved where its transaction was
    mined again, and once dropped, accepted again and sent again by the registrar."""
    with LocalNode("anvil", chain_id=CHAIN_ID) as node, following_service(node.rpc_url, tmp_path) as running:
        rpc = running.market.rpc
        address = Account.create().address
        answer = running.client.post(
            "/participants",
            json={"address": address, "kind": "consumer", "identifier": f"GLN-{address[2:10]}"},
            headers=running.operator,
        )
        assert answer.status_code == 202, answer.text
        path = answer.json()["links"]["self"]
        done = running.wait_registered(path)
        tx, mined_in = done["transactionHash"], done["blockNumber"]
        running.wait_indexed(f"/participants/{address}", until=lambda p: p["status"] == "active")

        def registration() -> dict[str, Any]:
            return dict(running.client.get(path).json())

        raw = rpc.call("eth_getRawTransactionByHash", tx)
        rpc.call("evm_mine")
        rpc.call("anvil_reorg", 2, [[raw, 1]])
        moved = wait_for(
            lambda: (r := registration())["blockNumber"] == mined_in + 1 and r, "the registration to follow its block"
        )
        assert (moved["status"], moved["transactionHash"]) == ("registered", tx)

        rpc.call("anvil_reorg", 1, [])
        again = wait_for(
            lambda: (r := registration())["status"] == "registered" and r["blockNumber"] > mined_in + 1 and r,
            "the dropped registration to be registered again",
        )
        shown = running.wait_indexed(
            f"/participants/{address}",
            until=lambda p: p["status"] == "active" and p["provenance"]["blockNumber"] == again["blockNumber"],
        )
        assert shown["provenance"]["transactionHash"] == again["transactionHash"]
        ledger = running.market.deployment.contracts["TradeLedger"].address
        account_topic = "0x" + "00" * 12 + address[2:].lower()
        logs = rpc.call(
            "eth_getLogs",
            {
                "address": ledger,
                "fromBlock": "0x0",
                "toBlock": "latest",
                "topics": [PARTICIPANT_REGISTERED_TOPIC, account_topic],
            },
        )
        assert [log["transactionHash"] for log in logs] == [again["transactionHash"]]
        assert running.client.get("/health").status_code == 200
