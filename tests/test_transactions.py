"""Sending many transactions from one key at once, on both node kinds."""

from __future__ import annotations

from ledger.domain.trade import TradeStatus
from tests.support.market import Market


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
