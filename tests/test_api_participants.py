"""The participant registry over HTTP: operator-only writes, reads with provenance."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_utils import keccak

from ledger.domain.trade import ParticipantStatus
from tests.support.service import OPERATOR_TOKEN, RunningService, anvil_service

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


def test_the_operator_registers_suspends_and_reinstates(api: RunningService) -> None:
    account = Account.create()
    answer = api.client.post(
        "/participants",
        json={"address": account.address.lower(), "kind": "generator", "identifier": "  GLN-5790000000001 "},
        headers=api.operator,
    )
    assert answer.status_code == 201, answer.text
    registered = answer.json()
    assert registered["address"] == account.address  # checksummed
    assert answer.headers["location"] == f"/participants/{account.address}"
    receipt = api.market.rpc.call("eth_getTransactionReceipt", registered["transactionHash"])
    assert int(receipt["blockNumber"], 16) == registered["blockNumber"]

    participant = api.wait_indexed(f"/participants/{account.address}")
    assert participant["kind"] == "generator" and participant["status"] == "active"
    assert participant["identifierHash"] == "0x" + keccak(text="GLN-5790000000001").hex()
    assert participant["provenance"]["transactionHash"] == registered["transactionHash"]
    assert participant["provenance"]["confirmations"] >= 1
    assert participant["registeredAt"].endswith("+00:00")

    again = api.client.post(
        "/participants", json={"address": account.address, "kind": "generator", "identifier": "x"}, headers=api.operator
    )
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
