"""Sending many transactions from one key at once, on both node kinds, from one process or several."""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest
from eth_account import Account
from sqlalchemy.orm import Session, sessionmaker

from ledger import errors
from ledger.chain.node import DEV_ACCOUNT_KEYS, LocalNode
from ledger.chain.rpc import JsonRpc
from ledger.chain.transactions import TransactionLost, TransactionSender, WaitInterrupted
from ledger.domain.trade import TradeStatus
from ledger.store.db import make_engine, make_session_factory, migrate
from tests.support.market import Market
from tests.support.service import CHAIN_ID


def test_a_round_of_batches_broadcast_at_once_is_all_mined(market: Market) -> None:
    """Hardhat's automine runs the calls of a JSON-RPC batch concurrently and refuses a nonce
    ahead of the next; the sender must still get every transaction in."""
    seller, buyer = market.participant(), market.participant()
    ledger = market.ledger("recorder")
    trades = [market.signed(seller, buyer) for _ in range(4)]
    txs = [ledger.sign_record_trades([trade]) for trade in trades]

    assert ledger.sender.broadcast(txs) == {}
    receipts = ledger.sender.wait([tx.hash for tx in txs])

    assert all(r.status == 1 for r in receipts.values())
    assert all(ledger.trade_status(market.trade_id(t.trade)) is TradeStatus.RECORDED for t in trades)


# --- one owner of a key's nonces ---------------------------------------------------------------

SHARED_KEY = DEV_ACCOUNT_KEYS[7]  # used by no other test
SENDS_PER_PROCESS = 15


def send_from_another_process(rpc_url: str, database_url: str, tag: int, start: Barrier, refusals: Queue) -> None:  # type: ignore[type-arg]
    """A process of its own with a sender of SHARED_KEY: signs and sends SENDS_PER_PROCESS
    transactions one after another (`tag` in their data, so no two processes sign the same
    transaction), reporting every refusal."""
    engine = make_engine(database_url)
    rpc = JsonRpc(rpc_url)
    try:
        sender = TransactionSender(rpc, Account.from_key(SHARED_KEY), CHAIN_ID, sessions=make_session_factory(engine))
        start.wait(60)  # both processes ready: they send at the same time
        hashes = []
        for _ in range(SENDS_PER_PROCESS):
            tx = sender.sign(sender.address, f"0x{tag:02x}", 30_000)
            refused = sender.broadcast([tx])
            refusals.put(list(refused.values()))
            hashes.append(tx.hash)
        sender.wait(hashes, timeout=60)
    finally:
        rpc.close()
        engine.dispose()


def test_two_processes_sending_from_one_key_get_no_nonce_refusal(node: LocalNode, database_url: str) -> None:
    """The API process, the workers' process and a CLI script sign with the same keys at the same
    time: the database hands out each nonce once, whoever asks."""
    migrate(database_url)
    spawn = multiprocessing.get_context("spawn")
    start, refusals = spawn.Barrier(2), spawn.Queue()
    processes = [
        spawn.Process(target=send_from_another_process, args=(node.rpc_url, database_url, tag, start, refusals))
        for tag in (1, 2)
    ]
    rpc = JsonRpc(node.rpc_url)
    try:
        first = int(rpc.call("eth_getTransactionCount", Account.from_key(SHARED_KEY).address, "latest"), 16)
        for process in processes:
            process.start()
        for process in processes:
            process.join(120)
        answers = [refusals.get(timeout=5) for _ in range(2 * SENDS_PER_PROCESS)]
        assert [a for a in answers if a] == []
        assert [p.exitcode for p in processes] == [0, 0]
        mined = int(rpc.call("eth_getTransactionCount", Account.from_key(SHARED_KEY).address, "latest"), 16)
        assert mined - first == 2 * SENDS_PER_PROCESS
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
        rpc.close()


def test_a_nonce_taken_but_never_sent_does_not_hold_later_transactions_back(
    node: LocalNode, store_session_factory: sessionmaker[Session]
) -> None:
    """A process that signed and died before sending leaves a gap below the next nonce."""
    sender = TransactionSender(
        JsonRpc(node.rpc_url), Account.from_key(DEV_ACCOUNT_KEYS[6]), CHAIN_ID, sessions=store_session_factory
    )
    sender.sign(sender.address, "0x", 21_000)  # never sent

    started = time.monotonic()
    receipt = sender.transact(sender.address, "0x", lambda data: errors.ContractReverted("?"), timeout=20)

    assert receipt.status == 1
    assert time.monotonic() - started < 15


def test_a_transaction_the_node_lost_is_reported_and_its_nonce_used_again(
    anvil: LocalNode, store_session_factory: sessionmaker[Session]
) -> None:
    rpc = JsonRpc(anvil.rpc_url)
    sender = TransactionSender(rpc, Account.from_key(DEV_ACCOUNT_KEYS[6]), CHAIN_ID, sessions=store_session_factory)
    rpc.call("evm_setAutomine", False)
    try:
        lost = sender.sign(sender.address, "0x", 21_000)
        assert sender.broadcast([lost]) == {}
        rpc.call("anvil_dropAllTransactions")  # what a restart of the node does to its mempool
        with pytest.raises(TransactionLost):
            sender.wait([lost.hash], timeout=20)
    finally:
        rpc.call("evm_setAutomine", True)

    again = sender.transact(sender.address, "0x", lambda data: errors.ContractReverted("?"), timeout=20)

    assert rpc.call("eth_getTransactionByHash", again.transaction_hash)["nonce"] == hex(lost.nonce)


def test_a_stop_ends_a_wait_for_receipts_at_once(anvil: LocalNode) -> None:
    rpc = JsonRpc(anvil.rpc_url)
    sender = TransactionSender(rpc, Account.from_key(DEV_ACCOUNT_KEYS[6]), CHAIN_ID)
    stop = threading.Event()
    rpc.call("evm_setAutomine", False)
    try:
        tx = sender.sign(sender.address, "0x", 21_000)
        assert sender.broadcast([tx]) == {}
        threading.Timer(0.5, stop.set).start()
        started = time.monotonic()
        with pytest.raises(WaitInterrupted):
            sender.wait([tx.hash], timeout=60, stop=stop)
        assert time.monotonic() - started < 2
    finally:
        rpc.call("evm_setAutomine", True)
    sender.wait([tx.hash])
