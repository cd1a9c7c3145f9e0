"""The log decoder, and the indexer against an in-memory chain (plus one run against real nodes).

Logs here are encoded independently of the decoder: hand-written event signatures, eth_abi.encode
and keccak. The ABI comes from the real contracts, so decoder and contract cannot drift apart.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak, to_checksum_address
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from ledger.chain.contract_errors import ErrorDecoder, UndecodableRevert
from ledger.chain.log_source import JsonRpcLogSource
from ledger.chain.rpc import JsonRpc
from ledger.domain.trade import ParticipantKind
from ledger.errors import ChainError, ConfigurationError
from ledger.indexer.decoder import (
    EVENT_TYPES,
    IGNORED_EVENTS,
    ZERO_HASH,
    AbiDecodeError,
    LogDecoder,
    ParticipantRegistered,
    ParticipantReinstated,
    ParticipantSuspended,
    Provenance,
    TradeCancelled,
    TradeLimits,
    TradeLimitsUpdated,
    TradeRecorded,
    TradeRejected,
    _word_decoders,
)
from ledger.indexer.indexer import Indexer, MissingHistoryError, ReorgBeyondFinalityError, StepResult
from ledger.indexer.ports import BlockHeader
from ledger.store import queries
from ledger.store.models import (
    IndexedBlock,
    IndexerCheckpoint,
    Participant,
    ParticipantEvent,
    ParticipantEventKind,
    ParticipantStatus,
    Trade,
    TradeEvent,
    TradeEventKind,
    TradeStatus,
)
from tests.store_fixtures import *  # noqa: F403

REPO = Path(__file__).resolve().parents[1]

# --- the contract ABI ----------------------------------------------------------------------------

# Fallback while ledger.chain.compiler is not importable: solcjs over contracts/ (standard JSON).
_SOLCJS = r"""
const fs = require('fs'), path = require('path'), solc = require('solc');
const sources = {};
(function walk(dir) {
  for (const entry of fs.readdirSync(dir, {withFileTypes: true})) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) walk(file);
    else if (file.endsWith('.sol')) sources[path.relative('.', file)] = {content: fs.readFileSync(file, 'utf8')};
  }
})('contracts');
const input = {language: 'Solidity', sources, settings: {outputSelection: {'*': {'*': ['abi']}}}};
const imports = (p) => {
  try { return {contents: fs.readFileSync(path.join('node_modules', p), 'utf8')}; }
  catch (e) { return {error: 'not found: ' + p}; }
};
const output = JSON.parse(solc.compile(JSON.stringify(input), {import: imports}));
const errors = (output.errors || []).filter((e) => e.severity === 'error');
if (errors.length) { console.error(errors.map((e) => e.formattedMessage).join('\n')); process.exit(1); }
const abis = {};
for (const file of Object.keys(output.contracts))
  for (const name of Object.keys(output.contracts[file])) abis[name] = output.contracts[file][name].abi;
process.stdout.write(JSON.stringify(abis));
"""


@functools.cache
def contract_abi(name: str) -> list[dict[str, Any]]:
    try:
        from ledger.chain.compiler import compile_contracts
    except ImportError:
        compiled = subprocess.run(["node", "-e", _SOLCJS], cwd=REPO, capture_output=True, text=True, check=True)
        abi: list[dict[str, Any]] = json.loads(compiled.stdout)[name]
        return abi
    return compile_contracts()[name].abi


@pytest.fixture(scope="module")
def abi() -> list[dict[str, Any]]:
    return contract_abi("TradeLedger")


# --- logs, encoded by hand -----------------------------------------------------------------------

CONTRACT = to_checksum_address("0x" + "5e" * 20)
ALICE = to_checksum_address("0x" + "a1" * 20)
BOB = to_checksum_address("0x" + "b2" * 20)
CAROL = to_checksum_address("0x" + "c3" * 20)

SIGNATURES = {
    "TradeRecorded": "TradeRecorded(bytes32,address,address,uint64,uint64,uint64,uint64,uint256,uint64,bytes32)",
    "TradeRejected": "TradeRejected(bytes32,bytes)",
    "TradeCancelled": "TradeCancelled(bytes32,bytes32)",
    "TradeLimitsUpdated": "TradeLimitsUpdated((uint64,uint64,uint64,uint64))",
    "ParticipantRegistered": "ParticipantRegistered(address,uint8,bytes32)",
    "ParticipantSuspended": "ParticipantSuspended(address)",
    "ParticipantReinstated": "ParticipantReinstated(address)",
    "RoleGranted": "RoleGranted(bytes32,address,address)",
}


def tid(n: int) -> str:
    return f"0x{n:064x}"


def b32(hex_id: str) -> bytes:
    return bytes.fromhex(hex_id[2:])


@dataclass(frozen=True)
class Emitted:
    """A log before it is in a block: topics and data."""

    topics: tuple[bytes, ...]
    data: bytes
    address: str = CONTRACT


def emitted(event: str, indexed: Sequence[tuple[str, Any]] = (), data: Sequence[tuple[str, Any]] = ()) -> Emitted:
    topics = (keccak(text=SIGNATURES[event]), *(encode([t], [v]) for t, v in indexed))
    return Emitted(topics, encode([t for t, _ in data], [v for _, v in data]))


def recorded(
    n: int,
    seller: str,
    buyer: str,
    start: int = 1_800_000_000,
    end: int = 1_800_003_600,
    *,
    energy_wh: int = 250_000,
    price: int = 35_000,
    nonce: int = 2**255 + 1,
    deadline: int = 2**64 - 1,
    replaces: str = ZERO_HASH,
) -> Emitted:
    return emitted(
        "TradeRecorded",
        [("bytes32", b32(tid(n))), ("address", seller), ("address", buyer)],
        [
            ("uint64", start),
            ("uint64", end),
            ("uint64", energy_wh),
            ("uint64", price),
            ("uint256", nonce),
            ("uint64", deadline),
            ("bytes32", b32(replaces)),
        ],
    )


def cancelled(n: int, replaced_by: str = ZERO_HASH) -> Emitted:
    return emitted("TradeCancelled", [("bytes32", b32(tid(n))), ("bytes32", b32(replaced_by))])


def custom_error(signature: str, types: Sequence[str], values: Sequence[Any]) -> bytes:
    return keccak(text=signature)[:4] + encode(list(types), list(values))


def gate_closed(n: int) -> bytes:
    return custom_error(
        "TradeLedgerGateClosed(bytes32,uint64,uint64)", ["bytes32", "uint64", "uint64"], [b32(tid(n)), 1800, 900]
    )


def rejected(n: int, reason: bytes) -> Emitted:
    return emitted("TradeRejected", [("bytes32", b32(tid(n)))], [("bytes", reason)])


def registered(account: str, kind: ParticipantKind, identifier: str) -> Emitted:
    return emitted(
        "ParticipantRegistered", [("address", account)], [("uint8", kind.ordinal), ("bytes32", b32(identifier))]
    )


def suspended(account: str) -> Emitted:
    return emitted("ParticipantSuspended", [("address", account)])


def reinstated(account: str) -> Emitted:
    return emitted("ParticipantReinstated", [("address", account)])


def limits_updated(*limits: int) -> Emitted:
    return emitted("TradeLimitsUpdated", data=[("(uint64,uint64,uint64,uint64)", limits)])


def role_granted(account: str) -> Emitted:
    role = keccak(text="RECORDER_ROLE")
    return emitted("RoleGranted", [("bytes32", role), ("address", account), ("address", ALICE)])


# --- an in-memory chain --------------------------------------------------------------------------

Transaction = Emitted | tuple[Emitted, ...]  # one log, or several logs of one transaction


class FakeChain:
    """A LogSource over blocks kept in memory, answering in eth_getLogs' hex format."""

    def __init__(self, genesis_time: int = 1_750_000_000) -> None:
        self.genesis_time = genesis_time
        self.headers: list[BlockHeader] = []
        self.transactions: list[list[tuple[Emitted, ...]]] = []
        self.logs: list[list[dict[str, Any]]] = []
        self.fork = 0
        self.mine()

    def mine(self, *transactions: Transaction) -> int:
        """A new block holding `transactions`; its number."""
        self.transactions.append([tx if isinstance(tx, tuple) else (tx,) for tx in transactions])
        self._seal(len(self.headers))
        return len(self.headers) - 1

    def mine_empty(self, count: int) -> None:
        for _ in range(count):
            self.mine()

    def reorg(self, from_block: int) -> None:
        """Replace block `from_block` and its descendants with blocks of the same content."""
        self.fork += 1
        del self.headers[from_block:], self.logs[from_block:]
        for number in range(from_block, len(self.transactions)):
            self._seal(number)

    def _seal(self, number: int) -> None:
        parent = self.headers[number - 1].hash if number else ZERO_HASH
        block_hash = "0x" + keccak(text=f"{number}/{self.fork}/{parent}").hex()
        self.headers.append(BlockHeader(number, block_hash, parent, self.genesis_time + 12 * number))
        logs, log_index = [], 0
        for tx_index, transaction in enumerate(self.transactions[number]):
            tx_hash = "0x" + keccak(text=f"{block_hash}/{tx_index}").hex()
            for log in transaction:
                logs.append(
                    {
                        "address": log.address.lower(),
                        "topics": ["0x" + topic.hex() for topic in log.topics],
                        "data": "0x" + log.data.hex(),
                        "blockNumber": hex(number),
                        "blockHash": block_hash,
                        "transactionHash": tx_hash,
                        "transactionIndex": hex(tx_index),
                        "logIndex": hex(log_index),
                        "removed": False,
                    }
                )
                log_index += 1
        self.logs.append(logs)

    # LogSource
    def head_block_number(self) -> int:
        return len(self.headers) - 1

    def get_logs(self, addresses: Sequence[str], from_block: int, to_block: int) -> list[Mapping[str, Any]]:
        wanted = {address.lower() for address in addresses}
        return [log for logs in self.logs[from_block : to_block + 1] for log in logs if log["address"] in wanted]

    def get_blocks(self, numbers: Sequence[int]) -> list[BlockHeader]:
        return [self.headers[number] for number in numbers]


def make_indexer(chain: Any, factory: sessionmaker[Session], abi: list[dict[str, Any]], **options: Any) -> Indexer:
    settings: dict[str, Any] = {"addresses": [CONTRACT], "abi": abi, "start_block": 0, "confirmations": 1}
    return Indexer(chain, factory, **(settings | options))


def market(chain: FakeChain) -> FakeChain:
    """Three participants; trade 1 cancelled, trade 2 amended by trade 3, trade 9 rejected."""
    chain.mine(
        registered(ALICE, ParticipantKind.GENERATOR, tid(0xA)),
        registered(BOB, ParticipantKind.CONSUMER, tid(0xB)),
        registered(CAROL, ParticipantKind.PROSUMER, tid(0xC)),
        role_granted(BOB),
        limits_updated(3600, 86400, 10**6, 10**6),
    )
    chain.mine(recorded(1, ALICE, BOB), recorded(2, BOB, CAROL), rejected(9, gate_closed(9)))
    chain.mine(cancelled(1))
    chain.mine((recorded(3, BOB, CAROL, replaces=tid(2)), cancelled(2, replaced_by=tid(3))))
    chain.mine(suspended(BOB), reinstated(BOB), suspended(CAROL))
    return chain


def snapshot(factory: sessionmaker[Session]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the indexer writes, in a comparable form."""
    with factory() as session:
        return {
            model.__tablename__: sorted(
                (tuple(row) for row in session.execute(select(*model.__table__.columns))), key=repr
            )
            for model in (Trade, TradeEvent, Participant, ParticipantEvent, IndexedBlock, IndexerCheckpoint)
        }


def checkpoint(factory: sessionmaker[Session], name: str = "main") -> tuple[int, str] | None:
    with factory() as session:
        row = session.get(IndexerCheckpoint, name)
        return None if row is None else (row.block_number, row.block_hash)


def count(factory: sessionmaker[Session], model: Any) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


# --- decoder -------------------------------------------------------------------------------------


def test_every_event_in_the_abi_has_a_decoder(abi: list[dict[str, Any]]) -> None:
    events = {entry["name"] for entry in abi if entry["type"] == "event"}
    assert events <= EVENT_TYPES.keys() | IGNORED_EVENTS, events - EVENT_TYPES.keys() - IGNORED_EVENTS
    # The ledger's own events are all decoded into dataclasses, none ignored.
    for interface in ("ITradeLedger", "IParticipantRegistry"):
        own = {entry["name"] for entry in contract_abi(interface) if entry["type"] == "event"}
        assert own <= EVENT_TYPES.keys()
    LogDecoder(abi)  # builds, so every dataclass matches its event's fields


def test_hand_written_signatures_match_the_abi(abi: list[dict[str, Any]]) -> None:
    # Guards this module's encodings: they must be of the real events.
    from eth_utils import abi_to_signature

    by_name = {entry["name"]: abi_to_signature(entry) for entry in abi if entry["type"] == "event"}
    assert {name: by_name[name] for name in SIGNATURES} == SIGNATURES


def raw_log(log: Emitted, *, block: int = 7, log_index: int = 3) -> dict[str, Any]:
    return {
        "address": log.address.lower(),
        "topics": ["0x" + topic.hex() for topic in log.topics],
        "data": "0x" + log.data.hex(),
        "blockNumber": hex(block),
        "blockHash": "0x" + "BB" * 32,
        "transactionHash": "0x" + "CC" * 32,
        "transactionIndex": "0x1",
        "logIndex": hex(log_index),
    }


PROVENANCE = Provenance(CONTRACT, 7, "0x" + "bb" * 32, "0x" + "cc" * 32, 1, 3)


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        (
            recorded(1, ALICE, BOB, 900, 4500, energy_wh=7, price=11, nonce=2**256 - 1, replaces=tid(5)),
            TradeRecorded(PROVENANCE, tid(1), ALICE, BOB, 900, 4500, 7, 11, 2**256 - 1, 2**64 - 1, tid(5)),
        ),
        (cancelled(1), TradeCancelled(PROVENANCE, tid(1), ZERO_HASH)),
        (cancelled(1, tid(2)), TradeCancelled(PROVENANCE, tid(1), tid(2))),
        (rejected(4, gate_closed(4)), TradeRejected(PROVENANCE, tid(4), gate_closed(4))),
        (
            registered(CAROL, ParticipantKind.PROSUMER, tid(0xC)),
            ParticipantRegistered(PROVENANCE, CAROL, 3, tid(0xC)),
        ),
        (suspended(BOB), ParticipantSuspended(PROVENANCE, BOB)),
        (reinstated(BOB), ParticipantReinstated(PROVENANCE, BOB)),
        (limits_updated(1, 2, 3, 4), TradeLimitsUpdated(PROVENANCE, TradeLimits(1, 2, 3, 4))),
        (role_granted(BOB), None),
    ],
)
def test_decodes_each_event(abi: list[dict[str, Any]], log: Emitted, expected: Any) -> None:
    assert LogDecoder(abi).decode(raw_log(log)) == expected


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda log: log | {"topics": ["0x" + "ee" * 32, *log["topics"][1:]]},  # an event the ABI lacks
        lambda log: log | {"topics": []},  # anonymous
        lambda log: log | {"topics": log["topics"][:2]},  # a topic missing
        lambda log: log | {"data": log["data"][:-64]},  # a word missing
        lambda log: log | {"data": "0x" + "ff" * 32 + log["data"][66:]},  # uint64 with high bits set
    ],
)
def test_logs_that_do_not_fit_the_abi_are_errors(
    abi: list[dict[str, Any]], corrupt: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    with pytest.raises(AbiDecodeError):
        LogDecoder(abi).decode(corrupt(raw_log(recorded(1, ALICE, BOB))))


def test_a_changed_event_fails_when_the_decoder_is_built(abi: list[dict[str, Any]]) -> None:
    renamed = [
        entry | {"inputs": [p | {"name": "buyerAccount"} if p["name"] == "buyer" else p for p in entry["inputs"]]}
        if entry.get("name") == "TradeRecorded"
        else entry
        for entry in abi
    ]
    with pytest.raises(ConfigurationError, match="TradeRecorded"):
        LogDecoder(renamed)
    added = [*abi, {"type": "event", "name": "TradeSettled", "anonymous": False, "inputs": []}]
    with pytest.raises(ConfigurationError, match="TradeSettled"):
        LogDecoder(added)


def decode_custom_error(abi: list[dict[str, Any]], data: bytes) -> tuple[str, dict[str, Any]]:
    return ErrorDecoder(abi).describe(data)


def test_decode_custom_error(abi: list[dict[str, Any]]) -> None:
    assert decode_custom_error(abi, gate_closed(4)) == (
        "TradeLedgerGateClosed",
        {"trade_id": tid(4), "delivery_start": 1800, "gate_closed_at": 900},
    )
    mismatch = custom_error(
        "TradeLedgerPartiesMismatch(bytes32,address,address)",
        ["bytes32", "address", "address"],
        [b32(tid(1)), ALICE.lower(), BOB.lower()],
    )
    assert decode_custom_error(abi, mismatch)[1] == {"trade_id": tid(1), "seller": ALICE, "buyer": BOB}
    not_active = custom_error("TradeLedgerTradeNotActive(bytes32,uint8)", ["bytes32", "uint8"], [b32(tid(1)), 2])
    assert decode_custom_error(abi, not_active) == ("TradeLedgerTradeNotActive", {"trade_id": tid(1), "status": 2})
    assert decode_custom_error(abi, keccak(text="TradeLedgerEmptyBatch()")[:4]) == ("TradeLedgerEmptyBatch", {})
    # Solidity's built-in errors, which reverts may carry.
    assert decode_custom_error(abi, custom_error("Error(string)", ["string"], ["boom"])) == (
        "Error",
        {"message": "boom"},
    )
    for unknown in (b"", b"\x01\x02", b"\xde\xad\xbe\xef", gate_closed(4)[:-1]):
        with pytest.raises(UndecodableRevert):
            decode_custom_error(abi, unknown)


@given(
    trade=st.binary(min_size=32, max_size=32),
    energy=st.integers(0, 2**64 - 1),
    maximum=st.integers(0, 2**64 - 1),
)
def test_custom_errors_round_trip(trade: bytes, energy: int, maximum: int) -> None:
    data = custom_error(
        "TradeLedgerEnergyOutOfBounds(bytes32,uint64,uint64)", ["bytes32", "uint64", "uint64"], [trade, energy, maximum]
    )
    assert decode_custom_error(contract_abi("TradeLedger"), data) == (
        "TradeLedgerEnergyOutOfBounds",
        {"trade_id": "0x" + trade.hex(), "energy_per_interval_wh": energy, "max_energy_per_interval_wh": maximum},
    )


# --- indexer -------------------------------------------------------------------------------------


def test_indexes_trades_and_participants(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = market(FakeChain())
    result = make_indexer(chain, store_session_factory, abi).step()
    # 3 registrations, limits, 2 recorded, 1 rejected, 1 cancelled, recorded + amended, 3 statuses
    assert result == StepResult(from_block=0, to_block=5, events=13, head=5)
    assert checkpoint(store_session_factory) == (5, chain.headers[5].hash)

    with store_session_factory() as session:
        one, two, three = (queries.get_trade(session, tid(n)) for n in (1, 2, 3))
        assert one is not None and two is not None and three is not None
        assert (one.status, one.replaced_by) == (TradeStatus.CANCELLED, None)
        assert (two.status, two.replaced_by) == (TradeStatus.AMENDED, tid(3))
        assert (three.status, three.replaces) == (TradeStatus.RECORDED, tid(2))
        assert (one.seller, one.buyer, one.delivery_start, one.delivery_end) == (
            ALICE,
            BOB,
            1_800_000_000,
            1_800_003_600,
        )
        assert (one.energy_per_interval_wh, one.price_minor_per_mwh) == (250_000, 35_000)
        assert (one.nonce, one.deadline) == (str(2**255 + 1), str(2**64 - 1))
        assert one.recorded_at == chain.headers[2].timestamp
        assert (one.block_number, one.block_hash, one.transaction_index, one.log_index) == (
            2,
            chain.headers[2].hash,
            0,
            0,
        )
        assert [(e.event, e.related_trade_id) for e in one.events] == [
            (TradeEventKind.RECORDED, None),
            (TradeEventKind.CANCELLED, None),
        ]
        assert [(e.event, e.related_trade_id) for e in two.events] == [
            (TradeEventKind.RECORDED, None),
            (TradeEventKind.AMENDED, tid(3)),
        ]
        assert [(e.event, e.related_trade_id, e.log_index) for e in three.events] == [
            (TradeEventKind.RECORDED, tid(2), 0)
        ]
        assert two.events[1].transaction_hash == three.events[0].transaction_hash  # one transaction

        [rejection] = session.scalars(select(TradeEvent).where(TradeEvent.trade_id == tid(9)))
        assert (rejection.event, rejection.reason_name) == (TradeEventKind.REJECTED, "TradeLedgerGateClosed")
        assert rejection.reason_selector == "0x" + gate_closed(9)[:4].hex()
        assert rejection.reason_data == "0x" + gate_closed(9).hex()
        assert queries.get_trade(session, tid(9)) is None  # rejected trades are not trades

        people = {p.address: p for p in queries.list_participants(session).items}
        assert {a: (p.kind, p.status) for a, p in people.items()} == {
            ALICE: (ParticipantKind.GENERATOR, ParticipantStatus.ACTIVE),
            BOB: (ParticipantKind.CONSUMER, ParticipantStatus.ACTIVE),
            CAROL: (ParticipantKind.PROSUMER, ParticipantStatus.SUSPENDED),
        }
        assert (people[ALICE].identifier_hash, people[ALICE].registered_at) == (tid(0xA), chain.headers[1].timestamp)
        bob = queries.get_participant(session, BOB)
        assert bob is not None
        assert [e.event for e in bob.events] == [
            ParticipantEventKind.REGISTERED,
            ParticipantEventKind.SUSPENDED,
            ParticipantEventKind.REINSTATED,
        ]
        assert (bob.events[0].kind, bob.events[1].kind) == (ParticipantKind.CONSUMER, None)
    assert count(store_session_factory, IndexedBlock) == 6


def test_only_final_blocks_are_indexed(store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]) -> None:
    chain = FakeChain()
    chain.mine(recorded(1, ALICE, BOB))  # block 1
    chain.mine(recorded(2, ALICE, BOB))  # block 2
    chain.mine_empty(1)  # head 3
    indexer = make_indexer(chain, store_session_factory, abi, confirmations=3)
    # Final: head - n + 1 >= 3, so up to block 1.
    assert indexer.step() == StepResult(from_block=0, to_block=1, events=1, head=3)
    assert indexer.step() == StepResult(from_block=2, to_block=1, events=0, head=3)  # nothing new is final
    chain.mine()
    assert indexer.step() == StepResult(from_block=2, to_block=2, events=1, head=4)
    assert count(store_session_factory, Trade) == 2


def test_zero_confirmations_index_up_to_the_head(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = FakeChain()
    chain.mine(recorded(1, ALICE, BOB))
    assert make_indexer(chain, store_session_factory, abi, confirmations=0).step().to_block == chain.head_block_number()


def test_steps_are_bounded_and_resume_from_the_checkpoint(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = market(FakeChain())
    chain.mine_empty(5)  # head 10
    ranges = []
    for _ in range(4):  # a new Indexer each time: a restart resumes from the checkpoint
        result = make_indexer(chain, store_session_factory, abi, max_blocks_per_step=4).step()
        ranges.append((result.from_block, result.to_block))
    assert ranges == [(0, 3), (4, 7), (8, 10), (11, 10)]
    assert count(store_session_factory, Trade) == 3
    assert count(store_session_factory, ParticipantEvent) == 6


def test_start_block_is_where_a_new_index_begins(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = FakeChain()
    chain.mine(recorded(1, ALICE, BOB))
    chain.mine(recorded(2, ALICE, BOB))
    assert make_indexer(chain, store_session_factory, abi, start_block=2).step().from_block == 2
    assert count(store_session_factory, Trade) == 1


@pytest.mark.parametrize("rewind", ["to_block_2", "delete"])
def test_rerunning_indexed_blocks_changes_nothing(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]], rewind: str
) -> None:
    chain = market(FakeChain())
    make_indexer(chain, store_session_factory, abi).step()
    before = snapshot(store_session_factory)
    with store_session_factory.begin() as session:  # an operator rolls the checkpoint back by hand
        if rewind == "delete":
            session.delete(session.get(IndexerCheckpoint, "main"))
        else:
            session.execute(update(IndexerCheckpoint).values(block_number=2, block_hash=chain.headers[2].hash))
    result = make_indexer(chain, store_session_factory, abi).step()
    assert (result.from_block, result.to_block) == ((0, 5) if rewind == "delete" else (3, 5))
    assert snapshot(store_session_factory) == before


def test_a_failed_step_leaves_the_previous_checkpoint(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = FakeChain()
    chain.mine(registered(ALICE, ParticipantKind.GENERATOR, tid(0xA)))
    indexer = make_indexer(chain, store_session_factory, abi)
    indexer.step()
    before = snapshot(store_session_factory)
    chain.mine(recorded(1, ALICE, BOB), suspended(ALICE))

    def crash(*_args: Any) -> None:
        raise RuntimeError("the process died after the event rows were written")

    monkeypatch.setattr("ledger.indexer.indexer._remember_blocks", crash)
    with pytest.raises(RuntimeError):
        indexer.step()
    assert snapshot(store_session_factory) == before
    monkeypatch.undo()
    assert indexer.step().events == 2
    assert count(store_session_factory, Trade) == 1


def test_a_reorg_of_final_blocks_halts_and_indexes_nothing(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = market(FakeChain())
    indexer = make_indexer(chain, store_session_factory, abi)
    indexer.step()
    before = snapshot(store_session_factory)
    old_hash = chain.headers[5].hash
    chain.reorg(from_block=4)
    with pytest.raises(ReorgBeyondFinalityError):
        indexer.step()  # no new block is final, and the checkpoint block is checked all the same
    chain.mine(recorded(20, ALICE, BOB))
    with pytest.raises(ReorgBeyondFinalityError) as reorg:
        indexer.step()
    assert reorg.value.code == "reorg_beyond_finality"
    assert (reorg.value.block_number, reorg.value.expected_hash, reorg.value.actual_hash) == (
        5,
        old_hash,
        chain.headers[5].hash,
    )
    assert str(5) in str(reorg.value) and old_hash in str(reorg.value)
    assert snapshot(store_session_factory) == before


def test_headers_that_do_not_chain_halt(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = FakeChain()
    chain.mine_empty(4)
    chain.headers[2] = replace(chain.headers[2], hash="0x" + "99" * 32)  # block 3 does not build on it
    with pytest.raises(ReorgBeyondFinalityError) as reorg:
        make_indexer(chain, store_session_factory, abi).step()
    assert (reorg.value.block_number, reorg.value.expected_hash) == (2, chain.headers[3].parent_hash)
    assert checkpoint(store_session_factory) is None


def test_a_log_from_another_fork_halts(store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]) -> None:
    chain = FakeChain()
    chain.mine(recorded(1, ALICE, BOB))
    chain.logs[1][0]["blockHash"] = "0x" + "77" * 32
    with pytest.raises(ReorgBeyondFinalityError) as reorg:
        make_indexer(chain, store_session_factory, abi).step()
    assert (reorg.value.block_number, reorg.value.actual_hash) == (1, "0x" + "77" * 32)
    assert count(store_session_factory, Trade) == 0


def test_events_about_history_before_start_block_are_an_error(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]
) -> None:
    chain = FakeChain()
    chain.mine(recorded(1, ALICE, BOB))
    chain.mine(cancelled(1))
    with pytest.raises(MissingHistoryError, match=tid(1)):
        make_indexer(chain, store_session_factory, abi, start_block=2).step()
    assert checkpoint(store_session_factory) is None


def test_invalid_settings_are_refused(store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]]) -> None:
    for options in ({"start_block": -1}, {"confirmations": -1}, {"max_blocks_per_step": 0}):
        with pytest.raises(ConfigurationError):
            make_indexer(FakeChain(), store_session_factory, abi, **options)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class FlakyChain(FakeChain):
    """A node that is unreachable for its first `failures` requests."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def head_block_number(self) -> int:
        if self.failures:
            self.failures -= 1
            raise ChainError("connection refused")
        return super().head_block_number()


def test_run_follows_the_chain_until_stopped(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    chain = market(FlakyChain(failures=2))
    indexer = make_indexer(chain, store_session_factory, abi)
    stop = threading.Event()
    worker = threading.Thread(target=indexer.run, args=(stop, 0.01))
    with caplog.at_level(logging.INFO, logger="ledger.indexer.indexer"):
        worker.start()
        try:
            wait_for(lambda: checkpoint(store_session_factory) == (5, chain.headers[5].hash))
            chain.mine(recorded(4, ALICE, CAROL))
            wait_for(lambda: count(store_session_factory, Trade) == 4)
        finally:
            stop.set()
            worker.join(5)
    assert not worker.is_alive()
    assert "retrying" in caplog.text and "connection refused" in caplog.text


def test_run_halts_on_a_reorg_beyond_finality(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    chain = market(FakeChain())
    indexer = make_indexer(chain, store_session_factory, abi)
    indexer.step()
    chain.reorg(from_block=1)
    with pytest.raises(ReorgBeyondFinalityError), caplog.at_level(logging.CRITICAL):
        indexer.run(threading.Event(), poll_interval=0.01)
    assert "halted" in caplog.text


def test_indexes_twenty_thousand_trades_in_one_step(
    store_session_factory: sessionmaker[Session], abi: list[dict[str, Any]], record_property: Any
) -> None:
    chain = FakeChain()
    for block in range(100):
        chain.mine(*(recorded(block * 200 + n + 1, ALICE, BOB, nonce=n) for n in range(200)))
    indexer = make_indexer(chain, store_session_factory, abi, max_blocks_per_step=1000)
    started = time.perf_counter()
    result = indexer.step()
    elapsed = time.perf_counter() - started
    record_property("events_per_second", round(result.events / elapsed))
    assert result.events == 20_000
    assert count(store_session_factory, Trade) == 20_000
    assert count(store_session_factory, TradeEvent) == 20_000


# --- against real nodes (Hardhat and anvil, from tests/conftest.py) ------------------------------


def test_indexes_a_deployed_ledger(market: Any, store_session_factory: sessionmaker[Session]) -> None:
    seller, buyer = market.participant(ParticipantKind.GENERATOR), market.participant(ParticipantKind.CONSUMER)
    signed = market.signed(seller, buyer)
    market.ledger("recorder").record_trade(signed)
    trade_id = market.trade_id(signed.trade)
    with JsonRpcLogSource(market.rpc.url, batch_size=2) as source:
        indexer = Indexer(
            source,
            store_session_factory,
            addresses=[market.address],
            abi=market.abi,
            start_block=market.deployment.start_block,
            confirmations=1,
        )
        result = indexer.step()
        head = source.get_blocks([result.to_block])[0]
    assert result.events >= 3  # two registrations and the trade (plus the deployment's limits)
    assert checkpoint(store_session_factory) == (head.number, head.hash)
    with store_session_factory() as session:
        trade = queries.get_trade(session, trade_id)
        assert trade is not None
        assert (trade.seller, trade.buyer, trade.status) == (seller.address, buyer.address, TradeStatus.RECORDED)
        assert trade.nonce == str(signed.trade.nonce)
        assert [p.address for p in queries.list_participants(session).items] == [seller.address, buyer.address]


def test_json_rpc_log_source_against_a_node(node: Any) -> None:
    miner = JsonRpc(node.rpc_url)
    for _ in range(4):
        miner.call("evm_mine")
    miner.close()
    with JsonRpcLogSource(node.rpc_url, batch_size=3) as source:
        head = source.head_block_number()
        headers = source.get_blocks(list(range(head + 1)))
        assert [h.number for h in headers] == list(range(head + 1))
        assert all(child.parent_hash == parent.hash for parent, child in pairwise(headers))
        assert source.get_logs([CONTRACT], 0, head) == []
        with pytest.raises(ChainError):
            source.get_blocks([head + 1000])
    with JsonRpcLogSource("http://127.0.0.1:9", timeout_seconds=2) as unreachable, pytest.raises(ChainError) as down:
        unreachable.head_block_number()
    assert down.value.retryable


# --- the hand-written word decoders equal eth_abi's ----------------------------------------------

WORD_TYPES = ["address", "bool", "uint8", "uint64", "uint256", "int8", "int256", "int128", "bytes4", "bytes32"]


def _words(abi_type: str) -> st.SearchStrategy[bytes]:
    # Valid encodings, and arbitrary words (mostly invalid padding for narrow types).
    valid = {
        "address": st.binary(min_size=20, max_size=20).map(lambda b: encode(["address"], ["0x" + b.hex()])),
        "bool": st.booleans().map(lambda v: encode(["bool"], [v])),
        "uint8": st.integers(0, 255).map(lambda v: encode(["uint8"], [v])),
        "uint64": st.integers(0, 2**64 - 1).map(lambda v: encode(["uint64"], [v])),
        "uint256": st.integers(0, 2**256 - 1).map(lambda v: encode(["uint256"], [v])),
        "int8": st.integers(-128, 127).map(lambda v: encode(["int8"], [v])),
        "int256": st.integers(-(2**255), 2**255 - 1).map(lambda v: encode(["int256"], [v])),
        "int128": st.integers(-(2**127), 2**127 - 1).map(lambda v: encode(["int128"], [v])),
        "bytes4": st.binary(min_size=4, max_size=4).map(lambda b: encode(["bytes4"], [b])),
        "bytes32": st.binary(min_size=32, max_size=32).map(lambda b: encode(["bytes32"], [b])),
    }[abi_type]
    return st.one_of(valid, st.binary(min_size=32, max_size=32))


@given(st.sampled_from(WORD_TYPES).flatmap(lambda t: st.tuples(st.just(t), _words(t))))
def test_hand_decoded_words_equal_eth_abi(case: tuple[str, bytes]) -> None:
    abi_type, word = case
    (fast,) = _word_decoders([abi_type]) or ()
    try:
        (expected,) = decode([abi_type], word, strict=True)
    except DecodingError:
        with pytest.raises(DecodingError):
            fast(word)
        return
    assert fast(word) == expected
