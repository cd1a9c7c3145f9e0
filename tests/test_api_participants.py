"""The participant registry over HTTP: operator-only writes, reads with provenance."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak

from ledger.domain.trade import ParticipantKind, ParticipantStatus
from tests.support.service import OPERATOR_TOKEN, RunningService, anvil_service, wait_for

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with anvil_service(tmp_path_factory.mktemp("api-participants")) as running:
        yield running


def assert_problem(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = dict(answer.json())
    assert (problem["status"], problem["code"]) == (status, code)
    return problem


WRONG_CREDENTIALS = {
    "no header": ({}, "token_required", "Bearer"),
    "wrong token": ({"Authorization": "Bearer not-the-token"}, "invalid_token", 'Bearer error="invalid_token"'),
    "token with a suffix": (
        {"Authorization": f"Bearer {OPERATOR_TOKEN}x"},
        "invalid_token",
        'Bearer error="invalid_token"',
    ),
    "basic scheme": ({"Authorization": f"Basic {OPERATOR_TOKEN}"}, "token_required", "Bearer"),
    "bearer without a token": ({"Authorization": "Bearer"}, "token_required", "Bearer"),
}


@pytest.mark.parametrize("case", WRONG_CREDENTIALS)
def test_operator_endpoints_refuse_without_the_token(api: RunningService, case: str) -> None:
    headers, code, challenge = WRONG_CREDENTIALS[case]
    account = Account.create()
    registration = {"address": account.address, "kind": "consumer", "identifier": "GLN-1"}
    for path, body in (
        ("/participants", registration),
        ("/participants/batch", {"participants": [registration]}),
        (f"/participants/{account.address}/suspend", None),
        (f"/participants/{account.address}/reinstate", None),
    ):
        answer = api.public.post(path, json=body, headers=headers)
        problem = assert_problem(answer, 401, code)
        assert answer.headers["www-authenticate"] == challenge
        assert OPERATOR_TOKEN not in answer.text
        assert problem["instance"] == path
        # An auditor's token is valid, but does not cover operator actions.
        refused = assert_problem(api.client.post(path, json=body), 403, "forbidden")
        assert refused["requiredScope"] == "operate"
    # The auth check comes before the body's: an invalid body without the token is still 401.
    assert_problem(api.public.post("/participants", json={"kind": 7}, headers=headers), 401, code)
    assert api.market.ledger("outsider").participant(account.address).status is ParticipantStatus.NONE


@contextmanager
def workers_stopped(api: RunningService) -> Iterator[None]:
    """The registrar (with the other workers) stopped: what is queued stays queued meanwhile."""
    api.service.stop()
    try:
        yield
    finally:
        api.service.start()


def registration(address: str, kind: str = "consumer", identifier: str = "GLN-1") -> dict[str, Any]:
    return {"address": address, "kind": kind, "identifier": identifier}


def test_the_operator_registers_suspends_and_reinstates(api: RunningService) -> None:
    account = Account.create()
    answer = api.client.post(
        "/participants",
        json=registration(account.address.lower(), "generator", "  GLN-5790000000001 "),
        headers=api.operator,
    )
    assert answer.status_code == 202, answer.text
    accepted = answer.json()
    assert accepted["address"] == account.address  # checksummed
    assert accepted["identifierHash"] == "0x" + keccak(text="GLN-5790000000001").hex()
    assert answer.headers["location"] == accepted["links"]["self"]
    assert accepted["links"]["self"] == f"/participant-registrations/{accepted['registrationId']}"

    registered = api.wait_registered(accepted["links"]["self"])
    assert registered["registrationId"] == accepted["registrationId"] and registered["errorCode"] is None
    receipt = api.market.rpc.call("eth_getTransactionReceipt", registered["transactionHash"])
    assert int(receipt["blockNumber"], 16) == registered["blockNumber"]

    participant = api.wait_indexed(f"/participants/{account.address}", until=lambda p: p["status"] == "active")
    assert participant["kind"] == "generator"
    assert participant["identifierHash"] == "0x" + keccak(text="GLN-5790000000001").hex()
    assert participant["provenance"]["transactionHash"] == registered["transactionHash"]
    assert participant["provenance"]["confirmations"] >= 1
    assert participant["registeredAt"].endswith("+00:00")

    # The same registration again is the same resource; another one of the account is refused.
    same = api.client.post(
        "/participants", json=registration(account.address, "generator", "GLN-5790000000001"), headers=api.operator
    )
    assert same.status_code == 200 and same.json()["registrationId"] == accepted["registrationId"]
    assert same.json()["status"] == "registered"
    again = api.client.post("/participants", json=registration(account.address, "generator", "x"), headers=api.operator)
    assert_problem(again, 409, "participant_already_registered")

    suspend = f"/participants/{account.address}/suspend"
    assert api.client.post(suspend, headers=api.operator).json()["status"] == "suspended"
    assert_problem(api.client.post(suspend, headers=api.operator), 409, "invalid_participant_status")
    reinstated = api.client.post(f"/participants/{account.address}/reinstate", headers=api.operator)
    assert reinstated.status_code == 200 and reinstated.json()["status"] == "active"

    history = api.wait_indexed(f"/participants/{account.address}", until=lambda p: len(p["events"]) == 3)
    assert [e["event"] for e in history["events"]] == ["registered", "suspended", "reinstated"]
    assert [e["provenance"]["transactionHash"] for e in history["events"]][2] == reinstated.json()["transactionHash"]
    assert history["status"] == "active"


def test_a_registration_is_stored_and_shown_pending_before_it_is_sent(api: RunningService) -> None:
    account = Account.create()
    with workers_stopped(api):
        answer = api.client.post("/participants", json=registration(account.address, "retailer"), headers=api.operator)
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "accepted" and answer.json()["transactionHash"] is None
        status_path = answer.json()["links"]["self"]
        assert api.client.get(status_path).json()["status"] == "accepted"

        shown = api.client.get(f"/participants/{account.address}")
        assert shown.status_code == 200, shown.text
        pending = shown.json()
        assert (pending["status"], pending["kind"], pending["provenance"], pending["registeredAt"]) == (
            "pending",
            "retailer",
            None,
            None,
        )
        assert pending["events"] == [] and pending["links"] == {"registration": status_path}
        listed = api.client.get("/participants", params={"status": "pending", "limit": 200}).json()["items"]
        assert account.address in [item["address"] for item in listed]
        everyone = api.client.get("/participants", params={"kind": "retailer", "limit": 200}).json()
        assert everyone["items"][-1]["address"] == account.address and everyone["items"][-1]["status"] == "pending"
        active = api.client.get("/participants", params={"status": "active", "limit": 200}).json()["items"]
        assert account.address not in [item["address"] for item in active]
        # A trade of a participant still pending is refused as the contract would refuse it.
        assert api.market.ledger("outsider").participant(account.address).status is ParticipantStatus.NONE

    registered = api.wait_registered(status_path)
    assert registered["transactionHash"] and registered["blockNumber"] and registered["attempts"] == 0
    api.wait_indexed(f"/participants/{account.address}", until=lambda p: p["status"] == "active")
    pending_now = api.client.get("/participants", params={"status": "pending", "limit": 200}).json()["items"]
    assert account.address not in [item["address"] for item in pending_now]


def test_pages_run_from_the_indexed_participants_to_the_pending_ones(api: RunningService) -> None:
    indexed = api.register("generator")
    # Until its block is indexed, a registered participant is pending too.
    api.wait_indexed(f"/participants/{indexed.address}", until=lambda p: p["status"] == "active")
    queued = [Account.create().address for _ in range(3)]
    with workers_stopped(api):
        for address in queued:
            answer = api.client.post("/participants", json=registration(address, "generator"), headers=api.operator)
            assert answer.status_code == 202
        found: list[tuple[str, str]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"kind": "generator", "limit": 2} | ({"cursor": cursor} if cursor else {})
            page = api.client.get("/participants", params=params)
            assert page.status_code == 200, page.text
            found += [(item["address"], item["status"]) for item in page.json()["items"]]
            cursor = page.json()["nextCursor"]
            if cursor is None:
                break
    assert found[-4:] == [(indexed.address, "active")] + [(a, "pending") for a in queued]
    assert len(found) == len(set(found))
    for bad in ("p.x", "p.not-a-registration", "p.\x00", "p.00000000-0000-4000-8000-000000000000"):
        assert_problem(api.client.get("/participants", params={"cursor": bad}), 422, "validation_error")


def test_a_batch_answers_each_item_in_order_and_a_bad_item_sinks_nothing(api: RunningService) -> None:
    known = api.register("consumer")
    good = [Account.create().address for _ in range(3)]
    items = [
        registration(good[0]),
        registration(good[1], "prosumer"),
        registration(known.address),  # registered already: refused at once
        registration("0x" + "00" * 20),  # the zero address
        registration(good[2], "utility"),  # no such kind
        registration(good[2], identifier="  "),
        {"address": good[2], "kind": "consumer"},
        registration(good[2]),
        registration(good[0]),  # the same registration twice in one batch: one resource
    ]
    answer = api.client.post("/participants/batch", json={"participants": items}, headers=api.operator)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    results = body["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    assert [r["outcome"] for r in results] == ["accepted"] * 2 + ["refused"] * 5 + ["accepted"] * 2
    assert (body["accepted"], body["refused"]) == (4, 5)
    assert results[2]["problem"]["code"] == "participant_already_registered"
    assert results[2]["problem"]["status"] == 409
    assert results[3]["problem"]["code"] == "validation_error"
    assert results[4]["problem"]["errors"][0]["field"] == "participants[4].kind"
    assert results[5]["problem"]["code"] == "validation_error"
    assert results[6]["problem"]["errors"][0]["field"] == "participants[6].identifier"
    assert results[8]["registration"]["registrationId"] == results[0]["registration"]["registrationId"]
    assert (results[0]["created"], results[8]["created"]) == (True, False)

    for result in (results[0], results[1], results[7]):
        done = api.wait_registered(result["registration"]["links"]["self"])
        assert done["address"] == result["registration"]["address"]
    # One transaction for the batch (the registrar takes what is queued together).
    hashes = {api.client.get(results[i]["registration"]["links"]["self"]).json()["transactionHash"] for i in (0, 1, 7)}
    assert len(hashes) == 1
    reader = api.market.ledger("outsider")
    assert reader.participant(good[1]).kind.value == "prosumer"
    assert reader.participant(good[2]).kind.value == "consumer"


@pytest.mark.parametrize("size", [0, 1001])
def test_a_batch_is_one_to_a_thousand_registrations(api: RunningService, size: int) -> None:
    items = [registration(Account.create().address) for _ in range(size)]
    answer = api.client.post("/participants/batch", json={"participants": items}, headers=api.operator)
    assert_problem(answer, 422, "validation_error")


def test_an_unknown_registration_is_404_and_a_malformed_id_422(api: RunningService) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    assert_problem(api.client.get(f"/participant-registrations/{missing}"), 404, "not_found")
    assert_problem(api.client.get("/participant-registrations/nope"), 422, "validation_error")


def test_actions_on_unknown_or_malformed_participants(api: RunningService) -> None:
    stranger = Account.create().address
    assert_problem(api.client.post(f"/participants/{stranger}/suspend", headers=api.operator), 404, "not_found")
    assert_problem(api.client.get(f"/participants/{stranger}"), 404, "not_found")
    problem = assert_problem(api.client.get("/participants/0xabc"), 422, "validation_error")
    assert problem["errors"][0]["field"] == "address" and problem["errors"][0]["in"] == "path"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"address": "0x" + "11" * 20, "kind": "utility", "identifier": "x"}, "kind"),
        ({"address": "0x" + "11" * 20, "kind": "consumer", "identifier": ""}, "identifier"),
        ({"address": "0x" + "11" * 20, "kind": "consumer", "identifier": "   "}, "identifier"),
        ({"address": "0x11", "kind": "consumer", "identifier": "x"}, "address"),
        ({"address": "0x" + "11" * 20, "kind": "consumer"}, "identifier"),
    ],
    ids=["unknown kind", "empty identifier", "blank identifier", "bad address", "missing identifier"],
)
def test_a_bad_registration_is_422_naming_the_field(api: RunningService, body: dict[str, Any], field: str) -> None:
    problem = assert_problem(api.client.post("/participants", json=body, headers=api.operator), 422, "validation_error")
    assert problem["errors"][0]["field"] == field


def test_the_registry_lists_by_kind_and_status_in_pages(api: RunningService) -> None:
    consumers = [api.register("consumer") for _ in range(3)]
    api.client.post(f"/participants/{consumers[1].address}/suspend", headers=api.operator)
    api.wait_indexed(f"/participants/{consumers[1].address}", until=lambda p: p["status"] == "suspended")

    def addresses(**params: Any) -> list[str]:
        found: list[str] = []
        cursor = None
        while True:
            page = api.client.get(
                "/participants", params=params | {"limit": 1} | ({"cursor": cursor} if cursor else {})
            )
            assert page.status_code == 200, page.text
            found += [item["address"] for item in page.json()["items"]]
            cursor = page.json()["nextCursor"]
            if cursor is None:
                return found

    mine = {account.address for account in consumers}
    assert [a for a in addresses(kind="consumer") if a in mine] == [account.address for account in consumers]
    assert [a for a in addresses(kind="consumer", status="suspended") if a in mine] == [consumers[1].address]
    assert not mine & set(addresses(kind="generator"))
    for params in ({"kind": "utility"}, {"status": "gone"}, {"limit": 0}, {"cursor": "%%%"}):
        assert_problem(api.client.get("/participants", params=params), 422, "validation_error")


def test_a_registration_the_chain_refuses_is_rejected_with_the_contracts_reason(api: RunningService) -> None:
    account = Account.create()
    with workers_stopped(api):
        # Registered on chain behind the service's back, before its index could know: accepted.
        api.service.participants.register(account.address, ParticipantKind.CONSUMER, "GLN-direct")
        answer = api.client.post("/participants", json=registration(account.address), headers=api.operator)
        assert answer.status_code == 202, answer.text

    def settled() -> dict[str, Any] | None:
        status = api.client.get(answer.json()["links"]["self"]).json()
        return status if status["status"] in ("registered", "rejected") else None

    rejected = wait_for(settled, "the registration to be settled")
    assert (rejected["status"], rejected["errorCode"]) == ("rejected", "participant_already_registered")
    assert rejected["transactionHash"] and rejected["blockNumber"]
    # The indexer went through the ParticipantRejected log; the account is the chain's registration.
    shown = api.wait_indexed(f"/participants/{account.address}")
    assert shown["status"] == "active" and shown["identifierHash"] == "0x" + keccak(text="GLN-direct").hex()
    assert api.client.get("/health").status_code == 200
    same = api.client.post("/participants", json=registration(account.address), headers=api.operator)
    assert_problem(same, 409, "participant_already_registered")
