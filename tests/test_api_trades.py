"""The trade endpoints over HTTP, against the running service on a real chain and database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from sqlalchemy import update

from ledger.chain.node import LocalNode
from ledger.chain.trade_ledger import TRADE_RECORDED_TOPIC
from ledger.domain.trade import DEFAULT_TRADE_LIMITS
from ledger.domain.units import INTERVAL_SECONDS, to_datetime
from ledger.store import models
from tests.support.service import (
    RunningService,
    anvil_service,
    iso,
    running_service,
    signed_json,
    trade_json,
    wait_for,
)

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with anvil_service(tmp_path_factory.mktemp("api-trades")) as running:
        yield running


@pytest.fixture(scope="module")
def parties(api: RunningService) -> tuple[LocalAccount, LocalAccount]:
    return api.register("generator"), api.register("retailer")


def sign_typed(account: LocalAccount, typed_data: dict[str, Any]) -> str:
    """What MetaMask's eth_signTypedData_v4 and ethers' signTypedData do with the document."""
    return "0x" + bytes(Account.sign_typed_data(account.key, full_message=typed_data).signature).hex()


def assert_problem(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = dict(answer.json())
    assert problem["status"] == status
    assert problem["code"] == code
    assert problem["type"].endswith("/" + code)
    assert problem["title"] and problem["detail"]
    return problem


# --- the main flow, on both node kinds and both databases -------------------------------------


def test_a_trade_signed_by_wallets_is_recorded_and_auditable(
    node: LocalNode, database_url: str, tmp_path: Path
) -> None:
    with running_service(node.rpc_url, database_url, tmp_path) as api:
        seller, buyer = api.register("generator"), api.register("retailer")
        terms = trade_json(api.trade(seller, buyer))

        typed = api.client.post("/eip712/trade", json=terms)
        assert typed.status_code == 200, typed.text
        document = typed.json()["typedData"]
        body = {
            "trade": terms,
            "sellerSignature": sign_typed(seller, document),
            "buyerSignature": sign_typed(buyer, document),
        }

        answer = api.client.post("/trades", json=body)
        assert answer.status_code == 202, answer.text
        accepted = answer.json()
        trade_id = accepted["tradeId"]
        assert trade_id == typed.json()["tradeId"] == api.trade_id(body)
        assert accepted["status"] == "accepted"
        assert answer.headers["location"] == f"/submissions/{accepted['submissionId']}"

        submission = api.wait_recorded(accepted["submissionId"])
        trade = api.wait_indexed(f"/trades/{trade_id}")

        receipt = api.market.rpc.call("eth_getTransactionReceipt", submission["transactionHash"])
        (log,) = [entry for entry in receipt["logs"] if entry["topics"][:2] == [TRADE_RECORDED_TOPIC, trade_id]]
        assert trade["provenance"] | {"confirmations": None} == {
            "blockNumber": int(receipt["blockNumber"], 16),
            "blockHash": receipt["blockHash"],
            "transactionHash": receipt["transactionHash"],
            "transactionIndex": int(receipt["transactionIndex"], 16),
            "logIndex": int(log["logIndex"], 16),
            "confirmations": None,
        }
        assert submission["blockNumber"] == trade["provenance"]["blockNumber"]
        assert trade["provenance"]["confirmations"] >= 1
        block = api.market.rpc.call("eth_getBlockByNumber", receipt["blockNumber"], False)
        assert trade["recordedAt"] == iso(int(block["timestamp"], 16))
        assert {key: trade[key] for key in terms if key != "replaces"} == {
            key: value for key, value in terms.items() if key != "replaces"
        }
        assert trade["replaces"] is None and trade["status"] == "recorded"
        assert [(e["event"], e["provenance"]["logIndex"]) for e in trade["events"]] == [
            ("recorded", int(log["logIndex"], 16))
        ]

        # The same signed trade again: the same submission, 200 instead of 202.
        again = api.client.post("/trades", json=body)
        assert again.status_code == 200, again.text
        assert again.json() | {"status": None} == accepted | {"status": None}
        assert again.json()["status"] == "recorded"

        listed = api.client.get("/trades", params={"participant": seller.address, "side": "seller"}).json()
        assert [item["tradeId"] for item in listed["items"]] == [trade_id]
        assert api.client.get("/health").json()["status"] == "ok"


# --- rejections: a clear 4xx problem, nothing written ------------------------------------------


def _now(api: RunningService) -> int:
    return api.market.now()


def _aligned(moment: int) -> int:
    return moment // INTERVAL_SECONDS * INTERVAL_SECONDS


Breaker = Callable[[RunningService, LocalAccount, LocalAccount], dict[str, Any]]


def _terms(**terms: Any) -> Breaker:
    """A trade both parties signed, with `terms` (values or functions of chain time) overridden."""

    def build(api: RunningService, seller: LocalAccount, buyer: LocalAccount) -> dict[str, Any]:
        now = _now(api)
        return api.body(seller, buyer, **{k: v(now) if callable(v) else v for k, v in terms.items()})

    return build


def _edited(edit: Callable[[dict[str, Any], LocalAccount, LocalAccount], None]) -> Breaker:
    """A valid signed trade, then its JSON edited (after signing)."""

    def build(api: RunningService, seller: LocalAccount, buyer: LocalAccount) -> dict[str, Any]:
        body = api.body(seller, buyer)
        edit(body, seller, buyer)
        return body

    return build


def _high_s(body: dict[str, Any], _seller: LocalAccount, _buyer: LocalAccount) -> None:
    """The malleable twin (r, n - s, v ^ 1) of a valid signature: same signer for a naive ecrecover."""
    raw = bytes.fromhex(body["buyerSignature"][2:])
    s = SECP256K1_N - int.from_bytes(raw[32:64], "big")
    body["buyerSignature"] = "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes([raw[64] ^ 1])).hex()


def _signed_by_stranger(api: RunningService, seller: LocalAccount, buyer: LocalAccount) -> dict[str, Any]:
    """The buyer's place signed with another key."""
    return signed_json(api.sign(seller, Account.create(), api.trade(seller, buyer)))


def _swap_signatures(body: dict[str, Any], _seller: LocalAccount, _buyer: LocalAccount) -> None:
    body["sellerSignature"], body["buyerSignature"] = body["buyerSignature"], body["sellerSignature"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any], LocalAccount, LocalAccount], None]:
    def edit(body: dict[str, Any], _seller: LocalAccount, _buyer: LocalAccount) -> None:
        *parents, last = path.split(".")
        target = body
        for name in parents:
            target = target[name]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value(target[last]) if callable(value) else value

    return edit


_DELETE = object()


def _flip_first_letter(address: str) -> str:
    """A checksummed address with one letter's case flipped: no longer a valid EIP-55 checksum."""
    at = next(i for i, char in enumerate(address) if i > 1 and char.isalpha())
    return address[:at] + address[at].swapcase() + address[at + 1 :]


LIMITS = DEFAULT_TRADE_LIMITS

DOMAIN_REJECTIONS: dict[str, tuple[Breaker, int, str]] = {
    "expired deadline": (_terms(deadline=1), 422, "signature_expired"),
    "misaligned interval": (
        _terms(delivery_start=lambda now: _aligned(now) + 2 * 3600 + 60),
        422,
        "misaligned_interval",
    ),
    "empty window": (
        _terms(delivery_start=lambda now: _aligned(now) + 3 * 3600, delivery_end=lambda now: _aligned(now) + 3 * 3600),
        422,
        "empty_delivery_window",
    ),
    "gate closed": (
        _terms(
            delivery_start=lambda now: _aligned(now) + INTERVAL_SECONDS,
            delivery_end=lambda now: _aligned(now) + 4 * INTERVAL_SECONDS,
        ),
        422,
        "gate_closed",
    ),
    "beyond horizon": (
        _terms(delivery_end=lambda now: _aligned(now + LIMITS.horizon_seconds) + 4 * INTERVAL_SECONDS),
        422,
        "beyond_horizon",
    ),
    "energy zero": (_terms(energy_per_interval_wh=0), 422, "energy_out_of_bounds"),
    "energy too large": (
        _terms(energy_per_interval_wh=LIMITS.max_energy_per_interval_wh + 1),
        422,
        "energy_out_of_bounds",
    ),
    "price zero": (_terms(price_minor_per_mwh=0), 422, "price_out_of_bounds"),
    "price too large": (_terms(price_minor_per_mwh=LIMITS.max_price_minor_per_mwh + 1), 422, "price_out_of_bounds"),
    "signature of a stranger": (_signed_by_stranger, 422, "invalid_signature"),
    "signatures swapped": (_edited(_swap_signatures), 422, "invalid_signature"),
    "malleable high-s signature": (_edited(_high_s), 422, "invalid_signature"),
    "terms changed after signing": (
        _edited(_set("trade.energyPerIntervalWh", lambda v: v + 1)),
        422,
        "invalid_signature",
    ),
}

SCHEMA_REJECTIONS: dict[str, tuple[Breaker, str]] = {
    "float energy": (_edited(_set("trade.energyPerIntervalWh", 250000.0)), "trade.energyPerIntervalWh"),
    "numeric string energy": (_edited(_set("trade.energyPerIntervalWh", "250000")), "trade.energyPerIntervalWh"),
    "boolean energy": (_edited(_set("trade.energyPerIntervalWh", True)), "trade.energyPerIntervalWh"),
    "energy beyond uint64": (_edited(_set("trade.energyPerIntervalWh", 2**64)), "trade.energyPerIntervalWh"),
    "negative price": (_edited(_set("trade.priceMinorPerMWh", -1)), "trade.priceMinorPerMWh"),
    "float price": (_edited(_set("trade.priceMinorPerMWh", 35000.5)), "trade.priceMinorPerMWh"),
    "naive datetime": (_edited(_set("trade.deliveryStart", lambda v: v.removesuffix("+00:00"))), "trade.deliveryStart"),
    "date without time": (_edited(_set("trade.deliveryEnd", lambda v: v[:10])), "trade.deliveryEnd"),
    "unix seconds as time": (_edited(_set("trade.deadline", 1_900_000_000)), "trade.deadline"),
    "fractional second": (_edited(_set("trade.deadline", lambda v: v.replace("+00:00", ".5+00:00"))), "trade.deadline"),
    "malformed address": (_edited(_set("trade.seller", "0x1234")), "trade.seller"),
    "bad checksum": (_edited(_set("trade.buyer", lambda v: _flip_first_letter(v))), "trade.buyer"),
    "short signature": (_edited(_set("sellerSignature", lambda v: v[:-2])), "sellerSignature"),
    "signature not hex": (_edited(_set("buyerSignature", lambda v: "0x" + "zz" * 65)), "buyerSignature"),
    "nonce negative": (_edited(_set("trade.nonce", "-1")), "trade.nonce"),
    "nonce float": (_edited(_set("trade.nonce", 1.5)), "trade.nonce"),
    "nonce beyond uint256": (_edited(_set("trade.nonce", str(2**256))), "trade.nonce"),
    "replaces malformed": (_edited(_set("trade.replaces", "0x00")), "trade.replaces"),
    "missing term": (_edited(_set("trade.buyer", _DELETE)), "trade.buyer"),
    "unknown member": (_edited(_set("trade.priceMinorPerMwh", 1)), "trade.priceMinorPerMwh"),
}


@pytest.mark.parametrize("case", DOMAIN_REJECTIONS)
def test_a_trade_that_fails_a_check_is_refused_with_its_code_and_nothing_is_written(
    api: RunningService, parties: tuple[LocalAccount, LocalAccount], case: str
) -> None:
    build, status, code = DOMAIN_REJECTIONS[case]
    body = build(api, *parties)
    before = api.submission_count()
    problem = assert_problem(api.client.post("/trades", json=body), status, code)
    assert problem["tradeId"] == api.trade_id(body)
    assert problem["instance"] == "/trades"
    assert api.submission_count() == before
    assert not api.has_submission(problem["tradeId"])


@pytest.mark.parametrize("case", SCHEMA_REJECTIONS)
def test_a_malformed_trade_is_refused_naming_the_field(
    api: RunningService, parties: tuple[LocalAccount, LocalAccount], case: str
) -> None:
    build, field = SCHEMA_REJECTIONS[case]
    before = api.submission_count()
    problem = assert_problem(api.client.post("/trades", json=build(api, *parties)), 422, "validation_error")
    assert [error["field"] for error in problem["errors"]] == [field]
    assert problem["errors"][0]["in"] == "body"
    assert problem["errors"][0]["pointer"] == "#/" + field.replace(".", "/")
    assert api.submission_count() == before


def test_a_trade_between_the_same_account_is_a_self_trade(
    api: RunningService, parties: tuple[LocalAccount, LocalAccount]
) -> None:
    seller, _ = parties
    body = api.body(seller, seller)
    problem = assert_problem(api.client.post("/trades", json=body), 422, "self_trade")
    assert problem["account"] == seller.address


def test_an_unregistered_party_is_refused(api: RunningService, parties: tuple[LocalAccount, LocalAccount]) -> None:
    seller, _ = parties
    stranger = Account.create()
    body = api.body(seller, stranger)
    problem = assert_problem(api.client.post("/trades", json=body), 422, "unknown_participant")
    assert problem["account"] == stranger.address
    assert not api.has_submission(api.trade_id(body))


def test_a_suspended_party_is_refused_until_reinstated(api: RunningService) -> None:
    seller, buyer = api.register(), api.register()
    suspended = api.client.post(f"/participants/{buyer.address}/suspend", headers=api.operator)
    assert suspended.status_code == 200, suspended.text
    api.wait_indexed(f"/participants/{buyer.address}", until=lambda p: p["status"] == "suspended")

    body = api.body(seller, buyer)
    problem = assert_problem(api.client.post("/trades", json=body), 422, "participant_suspended")
    assert problem["account"] == buyer.address
    assert not api.has_submission(api.trade_id(body))

    assert api.client.post(f"/participants/{buyer.address}/reinstate", headers=api.operator).status_code == 200
    api.wait_indexed(f"/participants/{buyer.address}", until=lambda p: p["status"] == "active")
    accepted = api.client.post("/trades", json=body)
    assert accepted.status_code == 202, accepted.text
    api.wait_recorded(accepted.json()["submissionId"])


def test_a_trade_recorded_elsewhere_is_a_duplicate(
    api: RunningService, parties: tuple[LocalAccount, LocalAccount]
) -> None:
    signed = api.sign(*parties, api.trade(*parties))
    api.record_directly(signed)
    body = {
        "trade": trade_json(signed.trade),
        "sellerSignature": "0x" + signed.seller_signature.hex(),
        "buyerSignature": "0x" + signed.buyer_signature.hex(),
    }
    trade_id = api.trade_id(body)
    api.wait_indexed(f"/trades/{trade_id}")
    problem = assert_problem(api.client.post("/trades", json=body), 409, "duplicate_trade")
    assert problem["tradeId"] == trade_id
    assert not api.has_submission(trade_id)


def test_while_paused_new_trades_get_409_and_resubmissions_their_submission(
    api: RunningService, parties: tuple[LocalAccount, LocalAccount]
) -> None:
    earlier = api.body(*parties)
    first = api.client.post("/trades", json=earlier).json()
    api.wait_recorded(first["submissionId"])
    pauser = api.market.ledger("pauser")
    pauser.pause()
    try:
        wait_for(api.service.trading.is_paused, "the service to see the pause")
        body = api.body(*parties)
        assert_problem(api.client.post("/trades", json=body), 409, "paused")
        assert not api.has_submission(api.trade_id(body))
        batch = api.client.post("/trades/batch", json={"trades": [body]}).json()
        assert batch["results"][0]["problem"]["code"] == "paused"
        again = api.client.post("/trades", json=earlier)
        assert again.status_code == 200 and again.json()["submissionId"] == first["submissionId"]
    finally:
        pauser.unpause()
        wait_for(lambda: not api.service.trading.is_paused(), "the service to see the unpause")
    resumed = api.client.post("/trades", json=body)
    assert resumed.status_code == 202, resumed.text
    api.wait_recorded(resumed.json()["submissionId"])


def test_a_trade_the_chain_rejects_after_acceptance_shows_why(
    api: RunningService, parties: tuple[LocalAccount, LocalAccount]
) -> None:
    """The pre-check judges by the latest block's time; the block that records the trade comes
    later. Here it comes 100 s later, after the signatures' deadline: accepted, then rejected."""
    latest = _now(api)
    body = api.body(*parties, deadline=latest + 50)
    api.market.rpc.call("evm_setNextBlockTimestamp", hex(latest + 100))
    answer = api.client.post("/trades", json=body)
    assert answer.status_code == 202, answer.text
    accepted = answer.json()

    def settled() -> dict[str, Any] | None:
        submission = dict(api.client.get(f"/submissions/{accepted['submissionId']}").json())
        return submission if submission["status"] in ("recorded", "rejected") else None

    submission = wait_for(settled, "the submission to settle")
    assert submission["status"] == "rejected"
    assert submission["errorCode"] == "signature_expired" and submission["errorDetail"]
    receipt = api.market.rpc.call("eth_getTransactionReceipt", submission["transactionHash"])
    assert int(receipt["blockNumber"], 16) == submission["blockNumber"]
    assert_problem(api.client.get(f"/trades/{accepted['tradeId']}"), 404, "not_found")
    again = api.client.post("/trades", json=body)
    assert again.status_code == 200 and again.json()["status"] == "rejected"


# --- batches ----------------------------------------------------------------------------------


def test_a_batch_answers_each_trade_in_its_place(
    api: RunningService, parties: tuple[LocalAccount, LocalAccount]
) -> None:
    seller, buyer = parties
    good, other_good = api.body(seller, buyer), api.body(seller, buyer)
    zero_energy = api.body(seller, buyer, energy_per_interval_wh=0)
    float_energy = api.body(seller, buyer)
    float_energy["trade"]["energyPerIntervalWh"] = 1.5
    unknown = api.body(seller, Account.create())
    items = [good, zero_energy, float_energy, other_good, good, unknown, "not an object"]

    answer = api.client.post("/trades/batch", json={"trades": items})
    assert answer.status_code == 200, answer.text
    batch = answer.json()
    results = batch["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["outcome"] for r in results] == [
        "accepted",
        "refused",
        "refused",
        "accepted",
        "accepted",
        "refused",
        "refused",
    ]
    assert (batch["accepted"], batch["refused"]) == (3, 4)

    assert results[0]["tradeId"] == api.trade_id(good) and results[0]["created"] is True
    assert results[4]["submissionId"] == results[0]["submissionId"] and results[4]["created"] is False
    assert results[1]["problem"]["code"] == "energy_out_of_bounds"
    assert results[1]["tradeId"] == api.trade_id(zero_energy)
    assert results[2]["problem"]["code"] == "validation_error"
    assert [e["field"] for e in results[2]["problem"]["errors"]] == ["trades[2].trade.energyPerIntervalWh"]
    assert results[2]["problem"]["errors"][0]["pointer"] == "#/trades/2/trade/energyPerIntervalWh"
    assert results[5]["problem"]["code"] == "unknown_participant"
    assert results[6]["problem"]["errors"][0]["field"] == "trades[6]"
    assert not api.has_submission(api.trade_id(zero_energy))
    assert not api.has_submission(api.trade_id(unknown))

    for result in (results[0], results[3]):
        api.wait_recorded(result["submissionId"])
    # Resubmitting the batch answers the same submissions.
    again = api.client.post("/trades/batch", json={"trades": [good, other_good]}).json()["results"]
    assert [(r["submissionId"], r["created"], r["status"]) for r in again] == [
        (results[0]["submissionId"], False, "recorded"),
        (results[3]["submissionId"], False, "recorded"),
    ]


@pytest.mark.parametrize(
    ("envelope", "field"),
    [
        ({"trades": []}, "trades"),
        ({"trades": [{}] * 1001}, "trades"),
        ({"trades": {"0": {}}}, "trades"),
        ({}, "trades"),
        ([], "body"),
    ],
    ids=["empty", "oversized", "not a list", "missing", "not an object"],
)
def test_an_empty_or_oversized_batch_is_refused(api: RunningService, envelope: Any, field: str) -> None:
    before = api.submission_count()
    problem = assert_problem(api.client.post("/trades/batch", json=envelope), 422, "validation_error")
    assert problem["errors"][0]["field"] == field
    assert api.submission_count() == before


# --- cancellation -----------------------------------------------------------------------------


def test_both_parties_cancel_a_recorded_trade(api: RunningService, parties: tuple[LocalAccount, LocalAccount]) -> None:
    seller, buyer = parties
    accepted = api.client.post("/trades", json=api.body(seller, buyer)).json()
    trade_id = accepted["tradeId"]
    api.wait_recorded(accepted["submissionId"])
    api.wait_indexed(f"/trades/{trade_id}")

    deadline = iso(_now(api) + 600)
    typed = api.client.post("/eip712/cancel", json={"tradeId": trade_id, "deadline": deadline})
    assert typed.status_code == 200, typed.text
    document = typed.json()["typedData"]
    assert document["primaryType"] == "CancelTrade"
    signatures = {"sellerSignature": sign_typed(seller, document), "buyerSignature": sign_typed(buyer, document)}

    one_sided = {"deadline": deadline, "sellerSignature": signatures["sellerSignature"]}
    one_sided["buyerSignature"] = signatures["sellerSignature"]
    problem = assert_problem(api.client.post(f"/trades/{trade_id}/cancel", json=one_sided), 422, "invalid_signature")
    assert problem["expectedSigner"] == buyer.address

    answer = api.client.post(f"/trades/{trade_id}/cancel", json={"deadline": deadline, **signatures})
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["tradeId"] == trade_id and accepted["status"] == "accepted"
    assert answer.headers["location"] == f"/cancellations/{accepted['cancellationId']}"
    cancelled = api.wait_cancelled(accepted["cancellationId"])
    receipt = api.market.rpc.call("eth_getTransactionReceipt", cancelled["transactionHash"])
    assert int(receipt["blockNumber"], 16) == cancelled["blockNumber"] and receipt["status"] == "0x1"

    trade = api.wait_indexed(f"/trades/{trade_id}", until=lambda t: t["status"] == "cancelled")
    assert [e["event"] for e in trade["events"]] == ["recorded", "cancelled"]
    assert trade["events"][1]["provenance"]["transactionHash"] == cancelled["transactionHash"]

    # The same signed cancellation again: the same resource, 200; another one is refused.
    again = api.client.post(f"/trades/{trade_id}/cancel", json={"deadline": deadline, **signatures})
    assert again.status_code == 200, again.text
    assert again.json() == accepted | {"status": "recorded"}
    later = iso(_now(api) + 700)
    document = api.client.post("/eip712/cancel", json={"tradeId": trade_id, "deadline": later}).json()["typedData"]
    other = {
        "deadline": later,
        "sellerSignature": sign_typed(seller, document),
        "buyerSignature": sign_typed(buyer, document),
    }
    assert_problem(api.client.post(f"/trades/{trade_id}/cancel", json=other), 422, "trade_not_active")
    unknown = "0x" + "ab" * 32
    assert_problem(
        api.client.post(f"/trades/{unknown}/cancel", json={"deadline": deadline, **signatures}), 404, "not_found"
    )
    assert_problem(
        api.client.post("/trades/0x12/cancel", json={"deadline": deadline, **signatures}), 422, "validation_error"
    )


def _cancel_body(api: RunningService, seller: LocalAccount, buyer: LocalAccount, trade_id: str, **extra: Any) -> dict:
    deadline = iso(_now(api) + 600)
    document = api.client.post("/eip712/cancel", json={"tradeId": trade_id, "deadline": deadline}).json()["typedData"]
    return {
        "deadline": deadline,
        "sellerSignature": sign_typed(seller, document),
        "buyerSignature": sign_typed(buyer, document),
        **extra,
    }


def _recorded(api: RunningService, seller: LocalAccount, buyer: LocalAccount, count: int) -> list[str]:
    """`count` new trades between the parties, recorded and indexed: their ids."""
    bodies = [api.body(seller, buyer) for _ in range(count)]
    results = api.client.post("/trades/batch", json={"trades": bodies}).json()["results"]
    for result in results:
        api.wait_recorded(result["submissionId"])
        api.wait_indexed(f"/trades/{result['tradeId']}")
    return [result["tradeId"] for result in results]


def test_cancellations_in_a_batch_are_cancelled_in_one_transaction_each_judged_alone(
    api: RunningService, parties: tuple[LocalAccount, LocalAccount]
) -> None:
    seller, buyer = parties
    first, second, third = _recorded(api, seller, buyer, 3)
    good = [_cancel_body(api, seller, buyer, t, tradeId=t) for t in (first, second)]
    forged = _cancel_body(api, seller, buyer, third, tradeId=third)
    forged["buyerSignature"] = forged["sellerSignature"]
    unknown = "0x" + "cd" * 32
    items = [good[0], forged, {"tradeId": "0x12"}, _cancel_body(api, seller, buyer, unknown, tradeId=unknown)]
    items += [good[1], good[0]]
    answer = api.client.post("/trades/cancel/batch", json={"cancellations": items})
    assert answer.status_code == 200, answer.text
    batch = answer.json()
    assert (batch["accepted"], batch["refused"]) == (3, 3)
    results = batch["results"]
    assert [r["outcome"] for r in results] == ["accepted", "refused", "refused", "refused", "accepted", "accepted"]
    assert [r["problem"]["code"] for r in results if r["problem"]] == [
        "invalid_signature",
        "validation_error",
        "not_found",
    ]
    # The same signed cancellation twice in a request: one resource.
    assert results[5]["cancellationId"] == results[0]["cancellationId"] and results[5]["created"] is False

    done = [api.wait_cancelled(results[i]["cancellationId"]) for i in (0, 4)]
    assert done[0]["transactionHash"] == done[1]["transactionHash"]  # one cancelTrades transaction
    for trade_id in (first, second):
        api.wait_indexed(f"/trades/{trade_id}", until=lambda t: t["status"] == "cancelled")
    assert api.client.get(f"/trades/{third}").json()["status"] == "recorded"
    assert_problem(api.client.get("/cancellations/00000000-0000-4000-8000-000000000000"), 404, "not_found")
    assert_problem(api.client.get("/cancellations/not-a-uuid"), 422, "validation_error")


@pytest.mark.parametrize(
    ("envelope", "field"),
    [
        ({"cancellations": []}, "cancellations"),
        ({"cancellations": [{}] * 1001}, "cancellations"),
        ({"cancellations": {"0": {}}}, "cancellations"),
        ([], "body"),
    ],
    ids=["empty", "oversized", "not a list", "not an object"],
)
def test_an_empty_or_oversized_cancel_batch_is_refused(api: RunningService, envelope: Any, field: str) -> None:
    problem = assert_problem(api.client.post("/trades/cancel/batch", json=envelope), 422, "validation_error")
    assert problem["errors"][0]["field"] == field


def test_malformed_cancellations_are_refused_in_their_place(api: RunningService) -> None:
    valid_id = "0x" + "ab" * 32
    items: list[Any] = [
        None,
        7,
        {"tradeId": "0x" + "\u0000" * 64, "deadline": iso(_now(api)), "sellerSignature": "0x", "buyerSignature": "0x"},
        {"tradeId": valid_id, "deadline": "99999-01-01T00:00:00+00:00"},
        {"tradeId": valid_id, "deadline": iso(_now(api) + 60), "sellerSignature": "0x" + "11" * 65, "extra": 1},
    ]
    answer = api.client.post("/trades/cancel/batch", json={"cancellations": items})
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["outcome"] for r in results] == ["refused"] * len(items)
    assert {r["problem"]["code"] for r in results} == {"validation_error"}
    assert results[2]["problem"]["errors"][0]["field"].startswith("cancellations[2]")
    assert api.client.get("/health").json()["status"] == "ok"


def test_an_amendment_of_a_cancelled_trade_is_refused_even_before_the_index_sees_it(
    api: RunningService, parties: tuple[LocalAccount, LocalAccount]
) -> None:
    seller, buyer = parties
    (trade_id,) = _recorded(api, seller, buyer, 1)
    accepted = api.client.post(f"/trades/{trade_id}/cancel", json=_cancel_body(api, seller, buyer, trade_id))
    assert accepted.status_code == 202, accepted.text
    # While the cancellation is on its way, and once the chain has it:
    amendment = api.body(seller, buyer, replaces=trade_id)
    assert_problem(api.client.post("/trades", json=amendment), 422, "trade_not_active")
    api.wait_cancelled(accepted.json()["cancellationId"])
    api.wait_indexed(f"/trades/{trade_id}", until=lambda t: t["status"] == "cancelled")
    # An index a block behind (the trade still recorded there): the chain answers.
    with api.service.context.sessions.begin() as session:
        session.execute(
            update(models.Trade).where(models.Trade.trade_id == trade_id).values(status=models.TradeStatus.RECORDED)
        )
        session.execute(
            update(models.Cancellation).where(models.Cancellation.trade_id == trade_id).values(status="rejected")
        )
    problem = assert_problem(
        api.client.post("/trades", json=api.body(seller, buyer, replaces=trade_id)), 422, "trade_not_active"
    )
    assert problem["tradeId"] == trade_id
    assert not api.has_submission(api.trade_id(amendment))


def test_a_party_suspended_a_moment_ago_is_refused_though_the_index_says_active(api: RunningService) -> None:
    seller, buyer = api.register("generator"), api.register("retailer")
    answer = api.client.post(f"/participants/{buyer.address}/suspend", headers=api.operator)
    assert answer.status_code == 200, answer.text
    api.wait_indexed(f"/participants/{buyer.address}", until=lambda p: p["status"] == "suspended")
    with api.service.context.sessions.begin() as session:  # the index a block behind
        session.execute(
            update(models.Participant)
            .where(models.Participant.address == buyer.address)
            .values(status=models.ParticipantStatus.ACTIVE)
        )
    body = api.body(seller, buyer)
    problem = assert_problem(api.client.post("/trades", json=body), 422, "participant_suspended")
    assert problem["account"] == buyer.address
    batch = api.client.post("/trades/batch", json={"trades": [body, api.body(seller, seller)]}).json()
    assert [r["problem"]["code"] for r in batch["results"]] == ["participant_suspended", "self_trade"]
    assert not api.has_submission(api.trade_id(body))
    # A trade that cancels with the suspended party is refused the same way.
    other = api.register("retailer")
    (trade_id,) = _recorded(api, seller, other, 1)
    api.client.post(f"/participants/{other.address}/suspend", headers=api.operator)
    cancel = _cancel_body(api, seller, other, trade_id)
    assert_problem(api.client.post(f"/trades/{trade_id}/cancel", json=cancel), 422, "participant_suspended")


# --- reading: one trade, lists, filters, pages ------------------------------------------------


def test_unknown_and_malformed_ids_are_404_and_422(api: RunningService) -> None:
    assert_problem(api.client.get("/trades/0x" + "00" * 32), 404, "not_found")
    problem = assert_problem(api.client.get("/trades/0xnothex"), 422, "validation_error")
    assert problem["errors"][0] == problem["errors"][0] | {"in": "path", "field": "tradeId"}
    assert_problem(api.client.get("/submissions/00000000-0000-4000-8000-000000000000"), 404, "not_found")
    assert_problem(api.client.get("/submissions/not-a-uuid"), 422, "validation_error")


def test_trades_are_listed_by_party_window_and_status_in_pages(api: RunningService) -> None:
    a, b, c = api.register(), api.register(), api.register()
    start = _aligned(_now(api) + LIMITS.gate_closure_seconds) + 4 * INTERVAL_SECONDS
    hour = 4 * INTERVAL_SECONDS

    def window(first_hour: int) -> dict[str, int]:
        return {"delivery_start": start + first_hour * hour, "delivery_end": start + (first_hour + 1) * hour}

    bodies = [
        api.body(a, b, **window(0)),
        api.body(a, b, **window(1)),
        api.body(a, b, **window(2)),
        api.body(b, c, **window(0)),
        api.body(b, c, **window(3)),
    ]
    results = api.client.post("/trades/batch", json={"trades": bodies}).json()["results"]
    for result in results:
        api.wait_recorded(result["submissionId"])
    indexed = [api.wait_indexed(f"/trades/{result['tradeId']}") for result in results]
    ids = [trade["tradeId"] for trade in indexed]

    def chain_order(*indexes: int) -> list[str]:
        """The trades `indexes` (of `bodies`) in the order lists answer them: chain order."""
        chosen = [indexed[i] for i in indexes]
        chosen.sort(key=lambda t: (t["provenance"]["blockNumber"], t["provenance"]["logIndex"]))
        return [trade["tradeId"] for trade in chosen]

    def listed(**params: Any) -> list[str]:
        answer = api.client.get("/trades", params=params)
        assert answer.status_code == 200, answer.text
        return [item["tradeId"] for item in answer.json()["items"]]

    assert listed(participant=a.address, side="seller") == chain_order(0, 1, 2)
    assert listed(participant=a.address, side="buyer") == []
    assert listed(participant=b.address, side="buyer") == chain_order(0, 1, 2)
    assert listed(participant=b.address) == chain_order(0, 1, 2, 3, 4)
    assert listed(participant=c.address.lower(), side="any") == chain_order(3, 4)
    between = {"deliveryFrom": iso(start + hour), "deliveryTo": iso(start + 2 * hour)}
    assert listed(participant=b.address, **between) == [ids[1]]
    # Windows that overlap the range, not only those inside it; the end is exclusive.
    assert listed(participant=b.address, deliveryFrom=iso(start + hour)) == chain_order(1, 2, 4)
    assert listed(participant=b.address, deliveryFrom=iso(start + hour - 60)) == chain_order(0, 1, 2, 3, 4)
    # Another UTC offset names the same instant.
    assert listed(participant=b.address, deliveryFrom=to_local(start + 3 * hour)) == [ids[4]]
    assert listed(participant=b.address, status="recorded") == chain_order(0, 1, 2, 3, 4)
    assert listed(participant=b.address, status="cancelled") == []

    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"participant": b.address, "limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.client.get("/trades", params=params).json()
        pages.append([item["tradeId"] for item in page["items"]])
        cursor = page["nextCursor"]
        if cursor is None:
            break
    everything = chain_order(0, 1, 2, 3, 4)
    assert pages == [everything[0:2], everything[2:4], everything[4:5]]


def to_local(unix_seconds: int) -> str:
    """The same instant written with a +05:30 offset."""
    return to_datetime(unix_seconds).astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"participant": "0x1234"}, "participant"),
        ({"side": "both"}, "side"),
        ({"deliveryFrom": "2030-01-01T00:00:00"}, "deliveryFrom"),
        ({"deliveryTo": "yesterday"}, "deliveryTo"),
        ({"deliveryFrom": "2030-01-02T00:00:00Z", "deliveryTo": "2030-01-01T00:00:00Z"}, "deliveryTo"),
        ({"status": "lost"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "x" * 65}, "cursor"),
    ],
)
def test_a_bad_filter_is_422_naming_the_parameter(api: RunningService, params: dict[str, Any], field: str) -> None:
    problem = assert_problem(api.client.get("/trades", params=params), 422, "validation_error")
    assert [error["field"] for error in problem["errors"]] == [field]


def test_addresses_are_answered_checksummed(api: RunningService, parties: tuple[LocalAccount, LocalAccount]) -> None:
    seller, buyer = parties
    body = api.body(seller, buyer)
    body["trade"]["seller"] = body["trade"]["seller"].lower()
    accepted = api.client.post("/trades", json=body)
    assert accepted.status_code == 202, accepted.text
    api.wait_recorded(accepted.json()["submissionId"])
    trade = api.wait_indexed(f"/trades/{accepted.json()['tradeId']}")
    assert trade["seller"] == to_checksum_address(seller.address)
