"""The chain views: a block and a transaction as the node has them, with every log decoded by the
contracts' ABI, where the explorer's provenance links lead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import event_abi_to_log_topic, to_checksum_address

from ledger.chain.compiler import compile_contracts
from ledger.chain.event_catalog import EventCatalog
from tests.support.service import RunningService, anvil_service

LEDGER = to_checksum_address("0x" + "11" * 20)
OTHER = to_checksum_address("0x" + "22" * 20)


def _abi() -> list[dict[str, Any]]:
    return [dict(entry) for entry in compile_contracts()["TradeLedger"].abi]


def _event(name: str) -> dict[str, Any]:
    return next(entry for entry in _abi() if entry["type"] == "event" and entry["name"] == name)


def _log(address: str, topics: list[bytes], data: bytes, log_index: int = 3) -> dict[str, Any]:
    return {
        "address": address.lower(),
        "topics": ["0x" + topic.hex() for topic in topics],
        "data": "0x" + data.hex(),
        "logIndex": hex(log_index),
    }


@pytest.fixture(scope="module")
def catalog() -> EventCatalog:
    return EventCatalog({"TradeLedger": LEDGER}, {"TradeLedger": _abi()})


def test_a_log_is_decoded_with_the_abis_names_and_json_safe_values(catalog: EventCatalog) -> None:
    entry = _event("TradeRecorded")
    trade_id, seller, buyer = b"\xab" * 32, "0x" + "33" * 20, "0x" + "44" * 20
    big_nonce = 2**255 + 7  # beyond what a JSON number holds exactly
    data = encode(
        ["uint64", "uint64", "uint64", "uint64", "uint256", "uint64", "bytes32"],
        [1_800_000_900, 1_800_001_800, 250_000, 41_000, big_nonce, 2**64 - 1, b"\x00" * 32],
    )
    topics = [
        event_abi_to_log_topic(entry),
        trade_id,
        bytes(12) + bytes.fromhex(seller[2:]),
        bytes(12) + bytes.fromhex(buyer[2:]),
    ]
    decoded = catalog.decode(_log(LEDGER, topics, data))
    assert (decoded.contract, decoded.event, decoded.log_index, decoded.address) == (
        "TradeLedger",
        "TradeRecorded",
        3,
        LEDGER,
    )
    assert decoded.args == {
        "tradeId": "0x" + "ab" * 32,
        "seller": to_checksum_address(seller),
        "buyer": to_checksum_address(buyer),
        "deliveryStart": "1800000900",
        "deliveryEnd": "1800001800",
        "energyPerIntervalWh": "250000",
        "priceMinorPerMWh": "41000",
        "nonce": str(big_nonce),
        "deadline": str(2**64 - 1),
        "replaces": "0x" + "00" * 32,
    }
    assert list(decoded.args) == [item["name"] for item in entry["inputs"]]  # in the ABI's order


def test_a_struct_argument_becomes_an_object(catalog: EventCatalog) -> None:
    entry = _event("TradeLimitsUpdated")
    (limits,) = entry["inputs"]
    values = [index + 1 for index in range(len(limits["components"]))]
    types = "(" + ",".join(component["type"] for component in limits["components"]) + ")"
    decoded = catalog.decode(_log(LEDGER, [event_abi_to_log_topic(entry)], encode([types], [values])))
    assert decoded.event == "TradeLimitsUpdated"
    assert decoded.args == {"limits": {c["name"]: str(v) for c, v in zip(limits["components"], values, strict=True)}}


def test_logs_of_other_contracts_or_that_do_not_fit_the_abi_are_shown_raw(catalog: EventCatalog) -> None:
    entry = _event("ParticipantSuspended")
    topics = [event_abi_to_log_topic(entry), bytes(12) + b"\x55" * 20]
    other = catalog.decode(_log(OTHER, topics, b""))
    assert (other.contract, other.event, other.args) == (None, None, {})
    assert other.topics == ["0x" + topic.hex() for topic in topics]
    unknown = catalog.decode(_log(LEDGER, [b"\x99" * 32], b""))
    assert (unknown.contract, unknown.event, unknown.args) == ("TradeLedger", None, {})
    misfit = catalog.decode(_log(LEDGER, topics[:1], b""))  # an indexed argument missing
    assert (misfit.event, misfit.args) == (None, {})


# --- over HTTP, on a running service ----------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with anvil_service(tmp_path_factory.mktemp("chain-view")) as running:
        yield running


def test_a_trades_provenance_leads_to_the_chains_own_block_and_transaction(api: RunningService) -> None:
    seller, buyer = api.register("generator"), api.register("consumer")
    body = api.body(seller, buyer, energy_per_interval_wh=120_000, price_minor_per_mwh=45_500)
    accepted = api.public.post("/trades", json=body).json()
    api.wait_recorded(accepted["submissionId"])
    trade = api.wait_indexed(f"/trades/{accepted['tradeId']}")
    provenance = trade["provenance"]

    block = api.public.get(f"/chain/blocks/{provenance['blockNumber']}")  # headers are public
    assert block.status_code == 200, block.text
    assert block.json()["hash"] == provenance["blockHash"]
    assert provenance["transactionHash"] in block.json()["transactionHashes"]
    assert block.json()["confirmations"] >= 1

    answer = api.client.get(f"/chain/transactions/{provenance['transactionHash']}")
    assert answer.status_code == 200, answer.text
    tx = answer.json()
    assert (tx["blockNumber"], tx["blockHash"], tx["contract"], tx["succeeded"]) == (
        provenance["blockNumber"],
        provenance["blockHash"],
        "TradeLedger",
        True,
    )
    (log,) = [log for log in tx["logs"] if log["logIndex"] == provenance["logIndex"]]
    assert log["event"] == "TradeRecorded"
    assert log["args"]["tradeId"] == trade["tradeId"]
    assert (log["args"]["seller"], log["args"]["buyer"]) == (seller.address, buyer.address)
    assert (log["args"]["energyPerIntervalWh"], log["args"]["priceMinorPerMWh"]) == ("120000", "45500")

    # A transaction carries any parties' trades: auditors only.
    assert api.public.get(f"/chain/transactions/{provenance['transactionHash']}").status_code == 401
    assert api.trader(seller).get(f"/chain/transactions/{provenance['transactionHash']}").status_code == 403


def test_what_the_chain_does_not_have_is_a_404(api: RunningService) -> None:
    missing = api.client.get("/chain/transactions/0x" + "00" * 32)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    beyond = api.public.get(f"/chain/blocks/{2**40}")
    assert (beyond.status_code, beyond.json()["code"]) == (404, "not_found")
    assert api.public.get("/chain/blocks/-1").status_code == 422
    assert api.client.get("/chain/transactions/0x1234").status_code == 422
