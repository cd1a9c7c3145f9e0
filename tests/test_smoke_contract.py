from ledger.domain.trade import TradeStatus
from tests.support.market import Market


def test_recorded_trade_has_status_and_id(market: Market) -> None:
    seller, buyer = market.participant(), market.participant()
    signed = market.signed(seller, buyer)
    receipt = market.ledger("recorder").record_trade(signed)
    tid = market.trade_id(signed.trade)
    assert market.ledger("outsider").trade_status(tid) is TradeStatus.RECORDED
    assert market.ledger("outsider").hash_trade(signed.trade) == tid
    assert receipt.status == 1
