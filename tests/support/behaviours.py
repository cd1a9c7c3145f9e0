"""Reusable behaviour checks for the TradeLedger contract tests (the `.behavior.js` of OZ tests).

A test says how to break a trade; the checks here submit it through an entry point (one trade
through `recordTrade`, or inside a `recordTrades` batch between two valid trades) and hand back
the typed error, so the same table of failures is asserted against both entry points.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from eth_abi import decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from ledger import errors
from ledger.chain.abi import abi_type
from ledger.chain.trade_ledger import BatchOutcome, CancelOutcome, TradeLedgerContract
from ledger.chain.transactions import Receipt, SignedTransaction
from ledger.domain.trade import ParticipantKind, SignedCancellation, SignedTrade, Trade, TradeStatus
from ledger.signing.trader import sign_cancel_trade
from tests.support.market import Market

# Registering costs ~75,000 gas; unused gas is not charged.
REGISTRATION_GAS = 200_000
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


# --- errors and events ----------------------------------------------------------------------------


def context_of(exc: errors.LedgerError) -> dict[str, Any]:
    """The error's context, less the `field=None` every ValidationError carries when no single
    input field is to blame (a `field` that names one stays, to be compared)."""
    context = dict(exc.context)
    if isinstance(exc, errors.ValidationError) and context.get("field", "absent") is None:
        del context["field"]
    return context


def assert_error(
    exc: BaseException,
    error: type[errors.LedgerError],
    code: str,
    context: dict[str, Any],
    *,
    solidity_error: str | None = None,
) -> None:
    """`exc` is exactly `error`, with the stable `code` and exactly `context` (plus the name of
    the Solidity error it was decoded from, when it came from the chain)."""
    assert type(exc) is error, f"expected {error.__name__}, got {type(exc).__name__}: {exc!r}"
    assert isinstance(exc, errors.LedgerError)
    assert exc.code == code
    expected = context if solidity_error is None else {"solidity_error": solidity_error, **context}
    assert context_of(exc) == expected


def status_index(status: TradeStatus) -> int:
    """The Solidity enum value of a trade status, as a custom error carries it."""
    return list(TradeStatus).index(status)


def role_id(name: str) -> str:
    """`keccak256("<NAME>_ROLE")`, as `contracts/libraries/Roles.sol` defines each role."""
    return "0x" + keccak(text=f"{name.upper()}_ROLE").hex()


def _plain(value: Any, solidity_type: str) -> Any:
    if solidity_type == "address":
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def events(market: Market, receipt: Receipt, name: str) -> list[dict[str, Any]]:
    """Every `name` event the market's contract emitted in `receipt`, decoded with eth_abi from
    the ABI alone: {field name: value}, addresses checksummed, bytes as 0x hex, tuples as tuples."""
    event = next(i for i in market.abi if i["type"] == "event" and i["name"] == name)
    inputs = event["inputs"]
    topic0 = "0x" + keccak(text=f"{name}({','.join(abi_type(i) for i in inputs)})").hex()
    found = []
    for log in receipt.logs:
        if log["address"].lower() != market.address.lower() or log["topics"][0] != topic0:
            continue
        topics = iter(log["topics"][1:])
        unindexed = [i for i in inputs if not i["indexed"]]
        data = iter(decode([abi_type(i) for i in unindexed], bytes.fromhex(log["data"][2:])))
        fields = {}
        for i in inputs:
            raw = decode([abi_type(i)], bytes.fromhex(next(topics)[2:]))[0] if i["indexed"] else next(data)
            fields[i["name"]] = _plain(raw, abi_type(i))
        found.append(fields)
    return found


def block_timestamp(market: Market, block_number: int) -> int:
    return int(market.rpc.call("eth_getBlockByNumber", hex(block_number), False)["timestamp"], 16)


def pin_next_block(market: Market) -> int:
    """Fixes the timestamp of the next block, which `eth_estimateGas` simulates too, so a check
    that depends on `block.timestamp` has a known value in both entry points."""
    at = market.now() + 1
    market.rpc.call("evm_setNextBlockTimestamp", hex(at))
    return at


# --- signatures -----------------------------------------------------------------------------------


def high_s(signature: bytes) -> bytes:
    """The malleable twin of a 65-byte (r, s, v) signature: (r, n - s, v flipped). It is an
    equally valid ECDSA signature of the same digest by the same key."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


# --- entry points ---------------------------------------------------------------------------------


def record_batch(market: Market, batch: list[SignedTrade], role: str = "recorder") -> BatchOutcome:
    """Sends one `recordTrades` transaction, as the relayer does, and returns what it did to each
    trade. A refusal of the whole call (role, pause, empty batch) reverts the transaction; its
    typed reason is raised."""
    ledger = market.ledger(role)
    return ledger.batch_outcome(_mined(market, ledger, ledger.sign_record_trades(batch)))


def _mined(market: Market, ledger: TradeLedgerContract, tx: SignedTransaction) -> Receipt:
    """The receipt of a batch transaction sent on its own; a reverted one raises its typed reason."""
    refused = ledger.sender.broadcast([tx])
    # Hardhat's automine answers a transaction that reverted with an error, yet mines it.
    if refused and market.rpc.call("eth_getTransactionReceipt", tx.hash) is None:
        raise errors.ChainError(f"node refused the batch: {refused[tx.hash]}")
    receipt = ledger.sender.wait([tx.hash])[tx.hash]
    if receipt.status != 1:
        raise ledger.sender.revert_reason(tx, receipt, ledger.errors.decode)
    return receipt


def count_logs(market: Market, receipt: Receipt, name: str) -> int:
    return len(events(market, receipt, name))


@dataclass(frozen=True)
class Refusal:
    error: errors.LedgerError
    at: int
    """The timestamp of the block the checks ran in (the horizon is measured from it)."""


def _refused_by_record_trade(market: Market, signed: SignedTrade) -> Refusal:
    at = pin_next_block(market)
    with pytest.raises(errors.LedgerError) as refused:
        market.ledger("recorder").record_trade(signed)
    return Refusal(refused.value, at)


def _refused_in_batch(market: Market, signed: SignedTrade) -> Refusal:
    """Puts the bad trade between two valid ones (of two other participants): the batch records
    the valid ones, rejects the bad one with one `TradeRejected`, and loses none."""
    ledger = market.ledger("recorder")
    bad_id = market.trade_id(signed.trade)
    status_before = ledger.trade_status(bad_id)
    seller, buyer = register(market, 2)
    good = [market.signed(seller, buyer), market.signed(seller, buyer)]
    batch = [good[0], signed, good[1]]
    at = pin_next_block(market)
    outcome = record_batch(market, batch)

    good_ids = {market.trade_id(s.trade) for s in good}
    assert set(outcome.recorded) == good_ids
    assert list(outcome.rejected) == [bad_id]
    assert len(outcome.recorded) + len(outcome.rejected) == len(batch)
    assert count_logs(market, outcome.receipt, "TradeRecorded") == len(good)
    assert count_logs(market, outcome.receipt, "TradeRejected") == 1
    assert all(ledger.trade_status(i) is TradeStatus.RECORDED for i in good_ids)
    assert ledger.trade_status(bad_id) is status_before
    assert block_timestamp(market, outcome.receipt.block_number) == at
    return Refusal(outcome.rejected[bad_id], at)


def _submit_one(market: Market, role: str, signed: SignedTrade) -> Receipt:
    return market.ledger(role).record_trade(signed)


def _submit_in_batch(market: Market, role: str, signed: SignedTrade) -> Receipt:
    """A batch of one: returns the receipt if the trade was recorded, raises its reason if not."""
    outcome = record_batch(market, [signed], role)
    for reason in outcome.rejected.values():
        raise reason
    assert list(outcome.recorded) == [market.trade_id(signed.trade)]
    return outcome.receipt


@dataclass(frozen=True)
class EntryPoint:
    name: str
    submit: Callable[[Market, str, SignedTrade], Receipt]
    """Records the trade from the account holding the role; raises the typed reason if refused."""
    refuse: Callable[[Market, SignedTrade], Refusal]
    """Submits a trade that must be refused; returns why, after checking nothing else changed."""

    def __str__(self) -> str:
        return self.name


RECORD_TRADE = EntryPoint("recordTrade", _submit_one, _refused_by_record_trade)
RECORD_TRADES = EntryPoint("recordTrades", _submit_in_batch, _refused_in_batch)
ENTRY_POINTS = [RECORD_TRADE, RECORD_TRADES]


# --- cancellation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CancelRequest:
    """One `cancelTrade` call: the parties it names (`trade.seller`, `trade.buyer`), the id, the
    deadline, and who actually signs the `CancelTrade` for each side."""

    trade: Trade
    trade_id: str
    deadline: int
    seller_signer: LocalAccount
    buyer_signer: LocalAccount
    role: str = "recorder"
    seller_signature: bytes | None = None
    """A signature to send instead of the seller signer's `CancelTrade` signature."""

    def signed(self, market: Market) -> SignedCancellation:
        domain = market.domain
        return SignedCancellation(
            self.trade_id,
            self.trade.seller,
            self.trade.buyer,
            self.deadline,
            self.seller_signature or sign_cancel_trade(self.seller_signer, domain, self.trade_id, self.deadline),
            sign_cancel_trade(self.buyer_signer, domain, self.trade_id, self.deadline),
        )

    def submit(self, market: Market) -> Receipt:
        c = self.signed(market)
        return market.ledger(self.role).cancel_trade(
            c.trade_id, c.seller, c.buyer, c.deadline, c.seller_signature, c.buyer_signature
        )


def cancel_batch(market: Market, batch: list[SignedCancellation], role: str = "recorder") -> CancelOutcome:
    """Sends one `cancelTrades` transaction, as the relayer does (see `record_batch`)."""
    ledger = market.ledger(role)
    return ledger.cancel_outcome(_mined(market, ledger, ledger.sign_cancel_trades(batch)))


def cancel_request(market: Market, trade: Trade, seller: LocalAccount, buyer: LocalAccount) -> CancelRequest:
    """A valid request to cancel `trade`, signed by both its parties."""
    return CancelRequest(trade, market.trade_id(trade), market.now() + 600, seller, buyer)


def register(market: Market, count: int, kind: ParticipantKind = ParticipantKind.PROSUMER) -> list[LocalAccount]:
    """`count` fresh participants, registered by the operator: the transactions are sent one
    after the other (Hardhat's automine refuses a nonce gap, which a JSON-RPC batch can open),
    then their receipts are awaited together instead of one `transact` each."""
    operator = market.ledger("operator")
    accounts = [stranger() for _ in range(count)]
    kind_index = list(ParticipantKind).index(kind)
    txs = [
        operator.sender.sign(
            operator.address,
            operator.encode("registerParticipant", [a.address, kind_index, secrets.token_bytes(32)]),
            REGISTRATION_GAS,
        )
        for a in accounts
    ]
    for tx in txs:
        assert operator.sender.broadcast([tx]) == {}
    receipts = operator.sender.wait([tx.hash for tx in txs])
    assert all(r.status == 1 for r in receipts.values())
    return accounts


def stranger() -> LocalAccount:
    """A fresh key that is not registered anywhere."""
    account: LocalAccount = Account.create()
    return account
