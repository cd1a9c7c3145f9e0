"""The relayer on a real chain and a real database: batches, rejections, and crashes at every
step between claiming a submission and settling it, without a trade recorded twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from eth_account import Account
from sqlalchemy.orm import Session, sessionmaker

from ledger.chain.trade_ledger import TRADE_RECORDED_TOPIC, TradeLedgerContract
from ledger.chain.transactions import TransactionSender
from ledger.domain.trade import SignedCancellation, SignedTrade, TradeStatus
from ledger.services.relayer import MAX_ATTEMPTS, Relayer
from ledger.signing.eip712 import cancel_trade_digest
from ledger.signing.trader import countersigned, sign_cancel_trade
from ledger.store import outbox
from ledger.store.models import Cancellation, SubmissionStatus
from tests.support.market import Market


def make_relayer(market: Market, sessions: sessionmaker[Session], **options: int) -> Relayer:
    return Relayer(
        market.ledger("recorder"), sessions, start_block=market.deployment.start_block, batch_window=0, **options
    )


def accept(sessions: sessionmaker[Session], market: Market, trades: list[SignedTrade]) -> list[str]:
    with sessions.begin() as session:
        return [outbox.add_submission(session, market.trade_id(t.trade), t.to_json())[0].id for t in trades]


def statuses(sessions: sessionmaker[Session], ids: list[str]) -> list[SubmissionStatus]:
    with sessions() as session:
        return [outbox.get_submission(session, i).status for i in ids]  # type: ignore[union-attr]


def recorded_logs(market: Market, trade_id: str) -> list[dict]:
    return market.rpc.call(
        "eth_getLogs",
        {
            "address": market.address,
            "fromBlock": "0x0",
            "toBlock": "latest",
            "topics": [TRADE_RECORDED_TOPIC, trade_id],
        },
    )


@pytest.fixture
def traders(anvil_market: Market) -> tuple:
    return anvil_market.participant(), anvil_market.participant()


def test_accepted_trades_are_recorded_in_batches_with_their_transaction(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    trades = [market.signed(*traders) for _ in range(5)]
    ids = accept(sessions, market, trades)

    result = make_relayer(market, sessions, batch_size=2).relay_round()

    assert (result.sent, result.recorded, result.rejected) == (5, 5, 0)
    with sessions() as session:
        rows = [outbox.get_submission(session, i) for i in ids]
    assert {r.status for r in rows} == {SubmissionStatus.RECORDED}
    assert len({r.transaction_hash for r in rows}) == 3  # batches of 2, 2 and 1
    for trade, row in zip(trades, rows, strict=True):
        (log,) = recorded_logs(market, row.trade_id)
        assert log["transactionHash"] == row.transaction_hash
        assert int(log["blockNumber"], 16) == row.block_number
        assert market.ledger("outsider").trade_status(market.trade_id(trade.trade)) is TradeStatus.RECORDED


def test_a_trade_the_contract_refuses_is_rejected_with_its_reason_and_the_rest_recorded(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    stranger = Account.create()  # never registered: the service's pre-check is bypassed here
    good = market.signed(*traders)
    bad = countersigned(traders[0], stranger, market.domain, market.trade(traders[0], stranger))
    good_id, bad_id = accept(sessions, market, [good, bad])

    result = make_relayer(market, sessions).relay_round()

    assert (result.recorded, result.rejected) == (1, 1)
    with sessions() as session:
        rejected = outbox.get_submission(session, bad_id)
        assert rejected.status is SubmissionStatus.REJECTED
        assert rejected.error_code == "unknown_participant"
        assert rejected.transaction_hash is not None
        assert outbox.get_submission(session, good_id).status is SubmissionStatus.RECORDED


def test_crash_after_marking_pending_before_broadcast_resends_after_restart(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    trades = [market.signed(*traders) for _ in range(3)]
    ids = accept(sessions, market, trades)
    make_relayer(market, sessions)._prepare()  # signed and committed as pending; never sent
    assert statuses(sessions, ids) == [SubmissionStatus.PENDING] * 3

    market.ledger("recorder").sender.nonces.resync()  # a new process starts from the chain's nonce
    restarted = make_relayer(market, sessions)
    assert restarted.recover().requeued == 3
    restarted.relay_round()

    assert statuses(sessions, ids) == [SubmissionStatus.RECORDED] * 3
    assert all(len(recorded_logs(market, market.trade_id(t.trade))) == 1 for t in trades)


def test_crash_after_broadcast_before_settling_is_resolved_from_the_receipt(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    trades = [market.signed(*traders) for _ in range(3)]
    ids = accept(sessions, market, trades)
    relayer = make_relayer(market, sessions)
    batches = relayer._prepare()
    sender = relayer._ledger.sender
    sender.broadcast([b.tx for b in batches if b.tx is not None])
    sender.wait([b.tx_hash for b in batches])  # mined, but the process dies before settling

    result = make_relayer(market, sessions).recover()

    assert result.recorded == 3
    with sessions() as session:
        rows = [outbox.get_submission(session, i) for i in ids]
    assert {r.transaction_hash for r in rows} == {batches[0].tx_hash}
    assert all(len(recorded_logs(market, market.trade_id(t.trade))) == 1 for t in trades)


def test_a_batch_still_in_the_mempool_at_restart_is_settled_once_mined_by_the_running_relayer(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    trades = [market.signed(*traders) for _ in range(2)]
    ids = accept(sessions, market, trades)
    relayer = make_relayer(market, sessions)
    batches = relayer._prepare()
    stop = threading.Event()
    market.rpc.call("evm_setAutomine", False)
    try:
        relayer._ledger.sender.broadcast([b.tx for b in batches if b.tx is not None])
        # The process dies here; the next one starts while the node still holds the transaction.
        restarted = make_relayer(market, sessions)
        assert restarted.recover().waiting == 2
        running = threading.Thread(target=restarted.run, args=(stop,))
        running.start()
        assert statuses(sessions, ids) == [SubmissionStatus.PENDING] * 2
        market.rpc.call("evm_mine")
    finally:
        market.rpc.call("evm_setAutomine", True)
    try:
        deadline = time.monotonic() + 10
        while statuses(sessions, ids) != [SubmissionStatus.RECORDED] * 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        running.join(timeout=10)
    assert statuses(sessions, ids) == [SubmissionStatus.RECORDED] * 2
    assert all(len(recorded_logs(market, market.trade_id(t.trade))) == 1 for t in trades)


def test_a_trade_sent_but_never_marked_is_recognised_as_recorded_not_recorded_twice(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    trades = [market.signed(*traders) for _ in range(2)]
    ids = accept(sessions, market, trades)
    # An earlier process sent the batch and died before committing "pending".
    ledger = market.ledger("recorder")
    tx = ledger.sign_record_trades(trades)
    ledger.sender.broadcast([tx])
    ledger.sender.wait([tx.hash])

    result = make_relayer(market, sessions).relay_round()

    assert (result.recorded, result.rejected) == (2, 0)
    with sessions() as session:
        assert {outbox.get_submission(session, i).transaction_hash for i in ids} == {tx.hash}
    assert all(len(recorded_logs(market, market.trade_id(t.trade))) == 1 for t in trades)


def test_a_batch_reverted_while_paused_is_retried_then_recorded(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    ids = accept(sessions, market, [market.signed(*traders)])
    market.ledger("pauser").pause()

    paused = make_relayer(market, sessions).relay_round()
    assert paused.requeued == 1
    with sessions() as session:
        row = outbox.get_submission(session, ids[0])
        assert (row.status, row.attempts) == (SubmissionStatus.ACCEPTED, 1)

    market.ledger("pauser").unpause()
    make_relayer(market, sessions).relay_round()
    assert statuses(sessions, ids) == [SubmissionStatus.RECORDED]


def test_a_batch_that_keeps_reverting_is_rejected_after_the_last_attempt(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    ids = accept(sessions, market, [market.signed(*traders)])
    market.ledger("pauser").pause()
    relayer = make_relayer(market, sessions)
    for _ in range(MAX_ATTEMPTS):
        relayer.relay_round()

    with sessions() as session:
        row = outbox.get_submission(session, ids[0])
    assert row.status is SubmissionStatus.REJECTED
    assert row.error_code == "paused"


def test_submissions_are_never_sent_twice_by_two_rounds(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    trades = [market.signed(*traders) for _ in range(4)]
    accept(sessions, market, trades)
    relayer = make_relayer(market, sessions)

    first, second = relayer.relay_round(), relayer.relay_round()

    assert (first.sent, second.sent) == (4, 0)
    assert all(len(recorded_logs(market, market.trade_id(t.trade))) == 1 for t in trades)


def test_payload_round_trips_through_json(anvil_market: Market, traders: tuple) -> None:
    signed = anvil_market.signed(*traders, nonce=2**255 + 7)
    assert SignedTrade.from_json(signed.to_json()) == signed
    assert SignedTrade.from_json(signed.to_json()) != replace(signed, seller_signature=signed.buyer_signature)


# --- cancellations -----------------------------------------------------------------------------


def accept_cancellations(
    sessions: sessionmaker[Session], market: Market, trades: list[SignedTrade], traders: tuple, later: int = 0
) -> list[str]:
    """Both parties' cancellations of recorded `trades` (deadline `later` s further), accepted
    into the outbox."""
    seller, buyer = traders
    ids = []
    with sessions.begin() as session:
        for signed in trades:
            trade_id = market.trade_id(signed.trade)
            deadline = market.now() + 600 + later
            cancellation = SignedCancellation(
                trade_id,
                signed.trade.seller,
                signed.trade.buyer,
                deadline,
                sign_cancel_trade(seller, market.domain, trade_id, deadline),
                sign_cancel_trade(buyer, market.domain, trade_id, deadline),
            )
            digest = "0x" + cancel_trade_digest(market.domain, trade_id, deadline).hex()
            ids.append(outbox.add_cancellation(session, digest, trade_id, cancellation.to_json())[0].id)
    return ids


def cancellation_rows(sessions: sessionmaker[Session], ids: list[str]) -> list[Cancellation]:
    with sessions() as session:
        return [outbox.get_cancellation(session, i) for i in ids]  # type: ignore[misc]


def test_trades_and_cancellations_go_in_one_round_from_one_nonce_sequence(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    """A round signs its `recordTrades` and `cancelTrades` batches with consecutive nonces of the
    recorder key; a refused cancellation is rejected with its reason, the others cancelled."""
    market, sessions = anvil_market, store_session_factory
    recorded = [market.signed(*traders) for _ in range(4)]
    accept(sessions, market, recorded)
    make_relayer(market, sessions).relay_round()
    cancel_ids = accept_cancellations(sessions, market, recorded, traders)
    new_ids = accept(sessions, market, [market.signed(*traders) for _ in range(3)])
    # A second cancellation of a trade, signed with another deadline: the first one wins.
    cancel_ids += accept_cancellations(sessions, market, recorded[:1], traders, later=60)

    result = make_relayer(market, sessions, batch_size=3).relay_round()

    assert (result.sent, result.recorded, result.rejected) == (3 + 5, 3 + 4, 1)
    assert statuses(sessions, new_ids) == [SubmissionStatus.RECORDED] * 3
    rows = cancellation_rows(sessions, cancel_ids)
    assert [r.status for r in rows] == [SubmissionStatus.RECORDED] * 4 + [SubmissionStatus.REJECTED]
    assert rows[-1].error_code == "trade_not_active"
    assert len({r.transaction_hash for r in rows}) == 2  # batches of 3 and 2
    for signed in recorded:
        assert market.ledger("outsider").trade_status(market.trade_id(signed.trade)) is TradeStatus.CANCELLED


def test_cancellations_pending_at_a_crash_are_resolved_or_resent_after_restart(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    recorded = [market.signed(*traders) for _ in range(4)]
    accept(sessions, market, recorded)
    make_relayer(market, sessions).relay_round()
    mined = accept_cancellations(sessions, market, recorded[:2], traders)
    relayer = make_relayer(market, sessions)
    batches = relayer._prepare()
    relayer._ledger.sender.broadcast([b.tx for b in batches if b.tx is not None])
    relayer._ledger.sender.wait([b.tx_hash for b in batches])  # mined; the process dies before settling
    never_sent = accept_cancellations(sessions, market, recorded[2:], traders)
    make_relayer(market, sessions)._prepare()  # committed as pending, never broadcast
    market.ledger("recorder").sender.nonces.resync()

    restarted = make_relayer(market, sessions)
    result = restarted.recover()
    assert (result.recorded, result.requeued) == (2, 2)
    restarted.relay_round()

    rows = cancellation_rows(sessions, mined + never_sent)
    assert [r.status for r in rows] == [SubmissionStatus.RECORDED] * 4
    assert {r.transaction_hash for r in rows[:2]} == {batches[0].tx_hash}


# --- a node that loses its mempool (a restart), and a stop while waiting -------------------------


def wait_until(probe: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_batch_the_node_lost_is_requeued_and_sent_again_at_the_chains_nonce(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    trades = [market.signed(*traders) for _ in range(2)]
    ids = accept(sessions, market, trades)
    relayer = make_relayer(market, sessions, receipt_timeout=10)
    market.rpc.call("evm_setAutomine", False)
    try:
        batches = relayer._prepare()
        assert relayer._ledger.sender.broadcast([b.tx for b in batches if b.tx is not None]) == {}
        market.rpc.call("anvil_dropAllTransactions")  # the node restarted: its mempool is gone
    finally:
        market.rpc.call("evm_setAutomine", True)

    assert relayer.recover().requeued == 2
    relayer.relay_round()  # before: sent at the nonce after the lost one, and never mined

    assert statuses(sessions, ids) == [SubmissionStatus.RECORDED] * 2
    assert all(len(recorded_logs(market, market.trade_id(t.trade))) == 1 for t in trades)


def test_the_running_relayer_sends_again_what_the_node_lost_while_it_waited(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    recorder = market.senders["recorder"]
    # Nonces from the database, as in the service.
    sender = TransactionSender(market.rpc, recorder.account, market.chain_id, sessions=sessions)
    relayer = Relayer(
        TradeLedgerContract(sender, market.address, market.abi),
        sessions,
        start_block=market.deployment.start_block,
        batch_window=0,
    )
    trades = [market.signed(*traders) for _ in range(3)]
    stop = threading.Event()
    running = threading.Thread(target=relayer.run, args=(stop,))
    market.rpc.call("evm_setAutomine", False)
    try:
        running.start()
        ids = accept(sessions, market, trades)
        assert wait_until(lambda: statuses(sessions, ids) == [SubmissionStatus.PENDING] * 3, 10)
        market.rpc.call("anvil_dropAllTransactions")
        market.rpc.call("evm_setAutomine", True)
        assert wait_until(lambda: statuses(sessions, ids) == [SubmissionStatus.RECORDED] * 3, 20)
    finally:
        market.rpc.call("evm_setAutomine", True)
        stop.set()
        running.join(timeout=10)
    assert all(len(recorded_logs(market, market.trade_id(t.trade))) == 1 for t in trades)


def test_a_stop_ends_the_relayer_while_it_waits_for_receipts(
    anvil_market: Market, store_session_factory: sessionmaker[Session], traders: tuple
) -> None:
    market, sessions = anvil_market, store_session_factory
    relayer = make_relayer(market, sessions)
    stop = threading.Event()
    running = threading.Thread(target=relayer.run, args=(stop,))
    market.rpc.call("evm_setAutomine", False)
    try:
        running.start()
        ids = accept(sessions, market, [market.signed(*traders)])
        assert wait_until(lambda: statuses(sessions, ids) == [SubmissionStatus.PENDING], 10)
        stop.set()
        running.join(timeout=5)
        assert not running.is_alive()
    finally:
        market.rpc.call("evm_setAutomine", True)
        stop.set()
        running.join(timeout=10)
    market.rpc.call("evm_mine")
    assert make_relayer(market, sessions).recover().recorded == 1  # the next start settles it
