"""The TradeLedger contract, wrapped: one Python method per contract call."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi import decode
from eth_utils import keccak, to_checksum_address

from ledger import errors
from ledger.chain.contract import ContractCalls
from ledger.chain.rpc import RpcError
from ledger.chain.transactions import Receipt, SignedTransaction
from ledger.domain.trade import (
    ParticipantKind,
    ParticipantStatus,
    SignedCancellation,
    SignedTrade,
    Trade,
    TradeLimits,
    TradeStatus,
)
from ledger.signing.eip712 import Domain

TRADE_RECORDED_TOPIC = (
    "0x"
    + keccak(text="TradeRecorded(bytes32,address,address,uint64,uint64,uint64,uint64,uint256,uint64,bytes32)").hex()
)
TRADE_REJECTED_TOPIC = "0x" + keccak(text="TradeRejected(bytes32,bytes)").hex()
TRADE_CANCELLED_TOPIC = "0x" + keccak(text="TradeCancelled(bytes32,bytes32)").hex()
TRADE_CANCEL_REJECTED_TOPIC = "0x" + keccak(text="TradeCancelRejected(bytes32,bytes)").hex()
ZERO_TOPIC = "0x" + "00" * 32
PARTICIPANT_REGISTERED_TOPIC = "0x" + keccak(text="ParticipantRegistered(address,uint8,bytes32)").hex()
PARTICIPANT_REJECTED_TOPIC = "0x" + keccak(text="ParticipantRejected(address,bytes)").hex()


@dataclass(frozen=True)
class Participant:
    address: str
    kind: ParticipantKind
    status: ParticipantStatus
    registered_at: int
    identifier_hash: str


@dataclass
class BatchOutcome:
    """What one `recordTrades` transaction did to each trade it carried."""

    receipt: Receipt
    recorded: dict[str, int] = field(default_factory=dict)  # trade id -> log index
    # Every TradeRejected log in order: a trade sent twice in one batch is rejected twice.
    rejections: list[tuple[str, errors.LedgerError]] = field(default_factory=list)

    @property
    def rejected(self) -> dict[str, errors.LedgerError]:
        """The first rejection of each trade id."""
        first: dict[str, errors.LedgerError] = {}
        for trade_id, reason in self.rejections:
            first.setdefault(trade_id, reason)
        return first


@dataclass
class CancelOutcome:
    """What one `cancelTrades` transaction did to each cancellation it carried, in its order:
    every cancellation emits one event, `TradeCancelled` (done) or `TradeCancelRejected`."""

    receipt: Receipt
    results: list[tuple[str, errors.LedgerError | None]] = field(default_factory=list)


@dataclass(frozen=True)
class Registration:
    """One entry of a `registerParticipants` batch. `kind` is the contract's ordinal."""

    account: str
    kind: int
    identifier_hash: bytes


@dataclass
class RegistrationOutcome:
    """What one `registerParticipants` transaction did to each account it carried."""

    receipt: Receipt
    registered: dict[str, int] = field(default_factory=dict)  # checksummed account -> log index
    rejected: dict[str, errors.LedgerError] = field(default_factory=dict)  # the first rejection of each


# Gas for a `recordTrades` batch, without asking the node to simulate it (eth_estimateGas on a
# 200-trade batch costs ~0.4 s: a binary search of executions). A recorded trade costs ~42,000
# gas; the bound covers cold participant slots and an amendment's extra write. Unused gas is not
# charged.
BATCH_BASE_GAS = 100_000
BATCH_GAS_PER_TRADE = 60_000
# A cancellation costs ~21,000 gas in a batch (two signature recoveries, one write of a warm slot,
# the event); the bound covers cold participant slots, with the same margin.
BATCH_GAS_PER_CANCEL = 35_000
# A registration writes two fresh storage slots (~44,000 gas) and a log; the bound covers the loop.
REGISTRATION_BASE_GAS = 60_000
REGISTRATION_GAS_PER_ENTRY = 55_000


class TradeLedgerContract(ContractCalls):
    @property
    def domain(self) -> Domain:
        return Domain(self.sender.chain_id, self.address)

    # --- writes ---------------------------------------------------------------------------

    def register_participant(self, account: str, kind: ParticipantKind, identifier_hash: bytes) -> Receipt:
        return self._transact("registerParticipant", [account, kind.ordinal, identifier_hash])

    def suspend_participant(self, account: str) -> Receipt:
        return self._transact("suspendParticipant", [account])

    def reinstate_participant(self, account: str) -> Receipt:
        return self._transact("reinstateParticipant", [account])

    def set_trade_limits(self, limits: TradeLimits) -> Receipt:
        return self._transact("setTradeLimits", [limits.as_tuple()])

    def pause(self) -> Receipt:
        return self._transact("pause", [])

    def unpause(self) -> Receipt:
        return self._transact("unpause", [])

    def record_trade(self, signed: SignedTrade) -> Receipt:
        """Records one trade or raises the typed reason the contract refused it."""
        return self._transact("recordTrade", [signed.as_tuple()])

    def cancel_trade(
        self, trade_id: str, seller: str, buyer: str, deadline: int, seller_signature: bytes, buyer_signature: bytes
    ) -> Receipt:
        """Cancels one trade or raises the typed reason the contract refused it."""
        cancellation = SignedCancellation(trade_id, seller, buyer, deadline, seller_signature, buyer_signature)
        return self._transact("cancelTrade", [cancellation.as_tuple()])

    def sign_record_trades(self, batch: Sequence[SignedTrade], gas: int | None = None) -> SignedTransaction:
        """A signed `recordTrades` transaction, not yet sent: the relayer stores its hash first."""
        data = self.encode("recordTrades", [[s.as_tuple() for s in batch]])
        return self.sender.sign(self.address, data, gas or BATCH_BASE_GAS + BATCH_GAS_PER_TRADE * len(batch))

    def sign_cancel_trades(self, batch: Sequence[SignedCancellation], gas: int | None = None) -> SignedTransaction:
        """A signed `cancelTrades` transaction, not yet sent: the relayer stores its hash first."""
        data = self.encode("cancelTrades", [[c.as_tuple() for c in batch]])
        return self.sender.sign(self.address, data, gas or BATCH_BASE_GAS + BATCH_GAS_PER_CANCEL * len(batch))

    def cancel_outcome(self, receipt: Receipt) -> CancelOutcome:
        """What a mined `cancelTrades` transaction did to each of its cancellations, in order."""
        outcome = CancelOutcome(receipt)
        for log in self._own_logs(receipt):
            topics = [t.lower() for t in log["topics"]]
            if topics[0] == TRADE_CANCELLED_TOPIC and topics[2] == ZERO_TOPIC:
                outcome.results.append((topics[1], None))
            elif topics[0] == TRADE_CANCEL_REJECTED_TOPIC:
                outcome.results.append((topics[1], self.errors.decode(_decode_bytes(log["data"]))))
        return outcome

    def sign_register_participants(self, batch: Sequence[Registration]) -> SignedTransaction:
        """A signed `registerParticipants` transaction, not yet sent: the registrar stores its hash first."""
        data = self.encode("registerParticipants", [[(r.account, r.kind, r.identifier_hash) for r in batch]])
        return self.sender.sign(self.address, data, REGISTRATION_BASE_GAS + REGISTRATION_GAS_PER_ENTRY * len(batch))

    def registration_outcome(self, receipt: Receipt) -> RegistrationOutcome:
        """Which accounts a mined `registerParticipants` transaction registered, and why it
        rejected the others (their custom errors, decoded)."""
        outcome = RegistrationOutcome(receipt)
        for log in self._own_logs(receipt):
            topic0 = log["topics"][0]
            if topic0 not in (PARTICIPANT_REGISTERED_TOPIC, PARTICIPANT_REJECTED_TOPIC):
                continue
            account = to_checksum_address("0x" + log["topics"][1][-40:])
            if topic0 == PARTICIPANT_REGISTERED_TOPIC:
                outcome.registered[account] = int(log["logIndex"], 16)
            else:
                outcome.rejected.setdefault(account, self.errors.decode(_decode_bytes(log["data"])))
        return outcome

    def _own_logs(self, receipt: Receipt) -> list[dict[str, Any]]:
        """The receipt's logs emitted by this contract (a transaction may touch others)."""
        me = self.address.lower()
        return [log for log in receipt.logs if log["address"].lower() == me]

    def batch_outcome(self, receipt: Receipt) -> BatchOutcome:
        """Which trades a mined `recordTrades` transaction recorded, and why it rejected the rest."""
        outcome = BatchOutcome(receipt)
        me = self.address.lower()
        for log in receipt.logs:
            if log["address"].lower() != me:
                continue
            topic0, trade_id = log["topics"][0], log["topics"][1]
            if topic0 == TRADE_RECORDED_TOPIC:
                outcome.recorded[trade_id] = int(log["logIndex"], 16)
            elif topic0 == TRADE_REJECTED_TOPIC:
                reason = _decode_bytes(log["data"])
                outcome.rejections.append((trade_id, self.errors.decode(reason)))
        return outcome

    # --- reads ----------------------------------------------------------------------------

    def trade_status(self, trade_id: str) -> TradeStatus:
        return TradeStatus.from_index(self._call("tradeStatus", [bytes.fromhex(trade_id[2:])]))

    def participant(self, account: str) -> Participant:
        kind, status, registered_at, identifier_hash = self._call("participant", [account])
        return Participant(
            to_checksum_address(account),
            ParticipantKind.from_index(kind),
            ParticipantStatus.from_index(status),
            registered_at,
            "0x" + identifier_hash.hex(),
        )

    def chain_state(
        self, accounts: Collection[str], trade_ids: Collection[str]
    ) -> tuple[dict[str, ParticipantStatus], dict[str, TradeStatus]]:
        """The participants' and the trades' statuses now, in one JSON-RPC batch of `eth_call`s
        (one round trip, however many): for checks that must not trust an index a block behind.
        Addresses as given, trade ids lower-case."""
        accounts, trade_ids = list(dict.fromkeys(accounts)), list(dict.fromkeys(t.lower() for t in trade_ids))
        calls = [("participant", [a]) for a in accounts] + [("tradeStatus", [bytes.fromhex(t[2:])]) for t in trade_ids]
        answers = self.sender.rpc.batch(
            [("eth_call", [{"to": self.address, "data": self.encode(fn, args)}, "latest"]) for fn, args in calls]
        )
        values = []
        for (fn, _), answer in zip(calls, answers, strict=True):
            if isinstance(answer, RpcError):
                raise errors.ChainError(f"eth_call {fn} failed: {answer.message}")
            values.append(decode(self._functions[fn].outputs, bytes.fromhex(answer[2:])))
        participants = {a: ParticipantStatus.from_index(v[0][1]) for a, v in zip(accounts, values, strict=False)}
        trades = {t: TradeStatus.from_index(v[0]) for t, v in zip(trade_ids, values[len(accounts) :], strict=True)}
        return participants, trades

    def trade_limits(self) -> TradeLimits:
        return TradeLimits(*self._call("tradeLimits", []))

    def hash_trade(self, trade: Trade) -> str:
        return "0x" + self._call("hashTrade", [trade.as_tuple()]).hex()

    def hash_cancel_trade(self, trade_id: str, deadline: int) -> str:
        return "0x" + self._call("hashCancelTrade", [bytes.fromhex(trade_id[2:]), deadline]).hex()

    def paused(self) -> bool:
        return bool(self._call("paused", []))

    def recorded_log(self, trade_id: str, from_block: int) -> dict[str, Any] | None:
        """The `TradeRecorded` log of a trade, found through its indexed id."""
        logs = self.sender.rpc.call(
            "eth_getLogs",
            {
                "address": self.address,
                "fromBlock": hex(from_block),
                "toBlock": "latest",
                "topics": [TRADE_RECORDED_TOPIC, trade_id],
            },
        )
        return logs[0] if logs else None

    def cancelled_log(self, trade_id: str, from_block: int) -> dict[str, Any] | None:
        """The `TradeCancelled` log of a trade's cancellation (not an amendment), by its id."""
        logs = self.sender.rpc.call(
            "eth_getLogs",
            {
                "address": self.address,
                "fromBlock": hex(from_block),
                "toBlock": "latest",
                "topics": [TRADE_CANCELLED_TOPIC, trade_id, ZERO_TOPIC],
            },
        )
        return logs[0] if logs else None


def _decode_bytes(data_hex: str) -> bytes:
    (value,) = decode(["bytes"], bytes.fromhex(data_hex[2:]))
    return bytes(value)
