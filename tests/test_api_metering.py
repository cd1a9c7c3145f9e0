"""Metering over HTTP: import readings and prices, read current values, histories and batches,
verify proofs with what the API returns, and refusals that name row and field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.chain.meter_data import PriceLeaf, ReadingLeaf, ReadingQuality
from ledger.domain.merkle import StandardMerkleTree
from tests.support.service import OPERATOR_TOKEN, RunningService, anvil_service, iso

PROBLEM = "application/problem+json"
Q = 900


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with anvil_service(tmp_path_factory.mktemp("api-metering")) as running:
        yield running


@pytest.fixture(scope="module")
def people(api: RunningService) -> list[str]:
    return [api.register().address for _ in range(2)]


def day(n: int) -> int:
    """A different day per test: the module shares one database."""
    return 1_906_502_400 + n * 86_400


def reading(participant: str, start: int, injected: int = 1_000, **changes: Any) -> dict[str, Any]:
    return {"participant": participant, "intervalStart": iso(start), "injectedWh": injected, "withdrawnWh": 0} | changes


def assert_problem(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = dict(answer.json())
    assert (problem["status"], problem["code"]) == (status, code)
    return problem


def post(api: RunningService, path: str, body: dict[str, Any]) -> Any:
    return api.client.post(path, json=body, headers=api.operator)


# --- readings --------------------------------------------------------------------------------------


def test_import_read_and_prove_readings(api: RunningService, people: list[str]) -> None:
    alice, bob = people
    start = day(1)
    body = {
        "readings": [
            reading(alice, start),
            reading(alice, start + Q, 1_100, quality="estimated"),
            reading(bob, start, 0, withdrawnWh=900),
            reading(bob.lower(), start + Q, 5, intervalStart=start + Q),  # Unix seconds, lower-case address
        ]
    }
    answer = post(api, "/meter-readings", body)
    assert answer.status_code == 201, answer.text
    batch = answer.json()
    assert answer.headers["location"] == f"/meter-reading-batches/{batch['batchId']}"
    assert (batch["kind"], batch["count"], batch["status"], batch["outcome"], batch["source"]) == (
        "readings",
        4,
        "committed",
        "committed",
        "api",
    )
    assert (batch["periodStart"], batch["periodEnd"]) == (iso(start), iso(start + 2 * Q))
    assert batch["transactionHash"].startswith("0x") and batch["blockNumber"] > 0
    assert api.client.get(batch["links"]["self"]).json() == batch | {"outcome": None}

    # The same readings in another order: the same batch, nothing sent.
    again = post(api, "/meter-readings", {"readings": body["readings"][::-1]})
    assert again.status_code == 200 and again.json()["batchId"] == batch["batchId"]
    assert again.json()["outcome"] == "existing"

    listed = api.client.get("/meter-readings", params={"from": iso(start), "to": iso(start + 2 * Q)}).json()
    assert [(r["participant"], r["intervalStart"]) for r in listed["items"]] == sorted(
        [(alice, iso(start)), (bob, iso(start)), (alice, iso(start + Q)), (bob, iso(start + Q))],
        key=lambda key: (key[1], key[0]),
    )
    assert listed["nextCursor"] is None
    mine = api.client.get("/meter-readings", params={"participant": alice, "from": iso(start), "to": iso(start + Q)})
    assert [(r["injectedWh"], r["quality"], r["version"]) for r in mine.json()["items"]] == [(1_000, "measured", 1)]
    pages, cursor = [], None
    while True:
        query: dict[str, str | int] = {"from": iso(start), "to": iso(start + 2 * Q), "limit": 3}
        page = api.client.get("/meter-readings", params=query | ({"cursor": cursor} if cursor else {})).json()
        pages += page["items"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == listed["items"]

    for item in listed["items"]:
        where = {"participant": item["participant"], "intervalStart": item["intervalStart"]}
        proof = api.client.get(batch["links"]["proof"], params=where).json()
        assert proof["root"] == batch["root"] and proof["batchId"] == batch["batchId"]
        assert StandardMerkleTree.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
        participant, interval_start, injected, withdrawn, quality = proof["value"]
        assert (participant, int(injected)) == (item["participant"], item["injectedWh"])
        leaf = ReadingLeaf(
            participant, int(interval_start), int(injected), int(withdrawn), ReadingQuality(int(quality))
        )
        assert api.service.context.meter_oracle.verify_reading(proof["batchId"], leaf, proof["proof"])
        assert (proof["transactionHash"], proof["blockNumber"]) == (batch["transactionHash"], batch["blockNumber"])


def test_a_correction_shows_in_the_history(api: RunningService, people: list[str]) -> None:
    alice, _ = people
    start = day(2)
    first = post(api, "/meter-readings", {"readings": [reading(alice, start), reading(alice, start + Q)]}).json()
    fix = post(api, "/meter-readings", {"readings": [reading(alice, start, 999, quality="substituted")]})
    assert fix.status_code == 201
    history = api.client.get(f"/meter-readings/{alice}/{iso(start)}/history")
    assert history.status_code == 200, history.text
    versions = history.json()["versions"]
    assert [(v["version"], v["injectedWh"], v["current"], v["batchId"]) for v in versions] == [
        (1, 1_000, False, first["batchId"]),
        (2, 999, True, fix.json()["batchId"]),
    ]
    assert versions[1]["batch"]["transactionHash"] == fix.json()["transactionHash"]
    assert versions[0]["batch"]["source"] == "api"
    # Unix seconds in the path name the same interval.
    assert api.client.get(f"/meter-readings/{alice}/{start}/history").json() == history.json()
    current = api.client.get("/meter-readings", params={"participant": alice, "from": iso(start), "to": iso(start + Q)})
    assert [r["version"] for r in current.json()["items"]] == [2]


def test_a_refused_body_names_each_row_and_field_and_stores_nothing(api: RunningService, people: list[str]) -> None:
    alice, bob = people
    start = day(3)
    body = {
        "readings": [
            reading(alice, start),
            reading(alice, start, 2),  # a second reading of the interval
            reading(bob, start + 7),  # misaligned
            reading("0x" + "12" * 20, start),  # not registered
            reading(bob, start + Q, injectedWh=1.5),
            reading(bob, start + 2 * Q, withdrawnWh=-3, quality="great"),
            "not an object",
        ]
    }
    problem = assert_problem(post(api, "/meter-readings", body), 422, "metering_file_invalid")
    assert [(e["row"], e["field"]) for e in problem["errors"]] == [
        (1, "readings[1].intervalStart"),
        (2, "readings[2].intervalStart"),
        (3, "readings[3].participant"),
        (4, "readings[4].injectedWh"),
        (5, "readings[5].withdrawnWh"),
        (5, "readings[5].quality"),
        (6, "readings[6]"),
    ]
    assert problem["errors"][3]["pointer"] == "#/readings/4/injectedWh"
    assert problem["errorCount"] == 7 and "nothing was imported" in problem["detail"]
    listed = api.client.get("/meter-readings", params={"from": iso(start), "to": iso(start + 3 * Q)}).json()
    assert listed["items"] == []
    # The envelope is pydantic's: an empty list or an unknown member.
    assert_problem(post(api, "/meter-readings", {"readings": []}), 422, "validation_error")
    assert_problem(post(api, "/meter-readings", {"readings": [reading(alice, start)], "x": 1}), 422, "validation_error")


@pytest.mark.parametrize("path", ["/meter-readings", "/reference-prices"])
def test_imports_need_the_operator_token(api: RunningService, people: list[str], path: str) -> None:
    body = {"readings": [reading(people[0], day(4))]} if path == "/meter-readings" else {"prices": []}
    for headers, code in (
        ({}, "token_required"),
        ({"Authorization": "Bearer wrong"}, "invalid_token"),
        ({"Authorization": f"Basic {OPERATOR_TOKEN}"}, "token_required"),
    ):
        answer = api.public.post(path, json=body, headers=headers)
        assert_problem(answer, 401, code)
        assert "www-authenticate" in answer.headers
    assert_problem(api.client.post(path, json=body), 403, "forbidden")
    listed = api.client.get("/meter-readings", params={"from": iso(day(4)), "to": iso(day(4) + Q)}).json()
    assert listed["items"] == []


def test_unknown_batches_readings_and_bad_queries(api: RunningService, people: list[str]) -> None:
    unknown = "0x" + "77" * 32
    assert_problem(api.client.get(f"/meter-reading-batches/{unknown}"), 404, "not_found")
    assert_problem(api.client.get(f"/reference-price-batches/{unknown}"), 404, "not_found")
    params = {"participant": people[0], "intervalStart": iso(day(1))}
    assert_problem(api.client.get(f"/meter-reading-batches/{unknown}/proof", params=params), 404, "not_found")
    assert_problem(api.client.get(f"/meter-readings/{people[0]}/{iso(day(9))}/history"), 404, "not_found")
    assert_problem(api.client.get("/meter-reading-batches/0x12"), 422, "validation_error")
    assert_problem(api.client.get("/meter-readings", params={"from": "2030-06-01T00:00:00"}), 422, "validation_error")
    bad_range = {"from": iso(day(1)), "to": iso(day(1))}
    assert_problem(api.client.get("/meter-readings", params=bad_range), 422, "validation_error")
    assert_problem(api.client.get("/meter-readings", params={"cursor": "nope"}), 422, "validation_error")


# --- prices ------------------------------------------------------------------------------------------


def test_import_read_and_prove_prices(api: RunningService) -> None:
    start = day(5)
    prices = [{"intervalStart": iso(start + i * Q), "priceMinorPerMWh": 40_000 + i} for i in range(4)]
    answer = post(api, "/reference-prices", {"prices": prices[::-1], "periodStart": iso(start)})
    assert answer.status_code == 201, answer.text
    batch = answer.json()
    assert (batch["kind"], batch["count"], batch["periodEnd"]) == ("prices", 4, iso(start + 4 * Q))
    listed = api.client.get("/reference-prices", params={"from": iso(start), "to": iso(start + 4 * Q)}).json()
    assert [(p["intervalStart"], p["priceMinorPerMWh"], p["version"]) for p in listed["items"]] == [
        (iso(start + i * Q), 40_000 + i, 1) for i in range(4)
    ]
    proof = api.client.get(batch["links"]["proof"], params={"intervalStart": start + Q}).json()
    assert StandardMerkleTree.verify(proof["root"], proof["leafEncoding"], proof["value"], proof["proof"])
    assert proof["value"] == [str(start + Q), "40001"]
    leaf = PriceLeaf(start + Q, 40_001)
    assert api.service.context.price_publisher.verify_price(batch["batchId"], leaf, proof["proof"])
    history = api.client.get(f"/reference-prices/{iso(start)}/history").json()
    assert [(v["version"], v["current"]) for v in history["versions"]] == [(1, True)]
    assert post(api, "/reference-prices", {"prices": prices}).status_code == 200


def test_prices_that_miss_intervals_are_refused_with_them_named(api: RunningService) -> None:
    start = day(6)
    prices = [
        {"intervalStart": iso(start), "priceMinorPerMWh": 1},
        {"intervalStart": start + 3 * Q, "priceMinorPerMWh": 1},
    ]
    problem = assert_problem(post(api, "/reference-prices", {"prices": prices}), 422, "metering_file_invalid")
    [error] = problem["errors"]
    # The body lacks them as a whole: named in `intervals`, the pointer at the body's prices.
    assert (error["row"], error["field"], error["pointer"]) == (None, "prices", "#/prices")
    assert problem["intervals"] == [start + Q, start + 2 * Q]
    assert iso(start + Q) in error["detail"] and iso(start + 2 * Q) in error["detail"]
    late = {
        "prices": [prices[0], {"intervalStart": iso(start + Q), "priceMinorPerMWh": "2"}],
        "periodEnd": iso(start + Q),
    }
    problem = assert_problem(post(api, "/reference-prices", late), 422, "metering_file_invalid")
    assert [(e["row"], e["field"]) for e in problem["errors"]] == [
        (1, "prices[1].priceMinorPerMWh"),
        (1, "prices[1].intervalStart"),
    ]
    assert (
        api.client.get("/reference-prices", params={"from": iso(start), "to": iso(start + 4 * Q)}).json()["items"] == []
    )


# --- no input gets a 500 -----------------------------------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
MEMBERS = st.sampled_from(["participant", "intervalStart", "injectedWh", "withdrawnWh", "quality", "priceMinorPerMWh"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_metering_bodies_get_4xx_problems_not_500(
    api: RunningService, people: list[str], data: st.DataObject
) -> None:
    item = reading(people[0], day(7)) | {"priceMinorPerMWh": 1}
    item[data.draw(MEMBERS)] = data.draw(JSON)
    for path, key in (("/meter-readings", "readings"), ("/reference-prices", "prices")):
        for body in ({key: [item]}, data.draw(JSON), {key: data.draw(JSON)}):
            answer = post(api, path, body)  # type: ignore[arg-type]
            assert answer.status_code < 500, answer.text
            if answer.status_code >= 400:
                assert answer.headers["content-type"] == PROBLEM and answer.json()["code"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.dictionaries(
        st.sampled_from(["participant", "from", "to", "limit", "cursor", "intervalStart"]),
        st.text(max_size=25) | st.integers(-(2**70), 2**70).map(str),
    ),
    when=st.text(max_size=25) | st.integers(-(2**70), 2**70).map(str),
)
def test_arbitrary_metering_queries_get_4xx_problems_not_500(
    api: RunningService, people: list[str], params: dict[str, str], when: str
) -> None:
    batch = "0x" + "ab" * 32
    for path in (
        "/meter-readings",
        "/reference-prices",
        f"/meter-reading-batches/{batch}/proof",
        f"/reference-price-batches/{batch}/proof",
        f"/meter-readings/{people[0]}/{quote(when, safe='')}/history",
        f"/reference-prices/{quote(when, safe='')}/history",
    ):
        answer = api.client.get(path, params=params)
        assert answer.status_code < 500, answer.text
