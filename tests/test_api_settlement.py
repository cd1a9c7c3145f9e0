"""The settlement endpoints over HTTP, against the running service (relayer and indexer threads)
on a real chain and both databases: trades submitted through the API, readings and prices
imported, the period settled by the operator, statements, proofs checked by
@openzeppelin/merkle-tree and by the contract, a dispute signed by a wallet, resolved."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.chain.compiler import PROJECT_ROOT
from ledger.chain.node import LocalNode
from ledger.domain.settlement import MeterReading
from ledger.domain.trade import DEFAULT_TRADE_LIMITS
from ledger.domain.units import INTERVAL_SECONDS
from ledger.services.metering import MeteringService
from ledger.signing.disputes import DisputeLine
from tests.support.service import RunningService, iso, running_service, wait_for

PROBLEM = "application/problem+json"

# What a verifier runs with nothing of GridLedger's: the proof document and the library.
_JS_VERIFY = """
const { StandardMerkleTree } = require('@openzeppelin/merkle-tree');
let input = '';
process.stdin.on('data', c => (input += c));
process.stdin.on('end', () => {
  const proofs = JSON.parse(input);
  const verified = proofs.map(p => StandardMerkleTree.verify(p.root, p.leafEncoding, p.values, p.proof));
  process.stdout.write(JSON.stringify(verified));
});
"""


@pytest.fixture
def api(anvil: LocalNode, database_url: str, tmp_path: Path) -> Iterator[RunningService]:
    with running_service(anvil.rpc_url, database_url, tmp_path) as running:
        yield running


def js_verify(proofs: list[dict[str, Any]]) -> list[bool]:
    done = subprocess.run(
        ["node", "-e", _JS_VERIFY],
        input=json.dumps(proofs),
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    return list(json.loads(done.stdout))


def assert_problem(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    problem = dict(answer.json())
    assert problem["code"] == code
    return problem


class Market:
    """A generator G selling to a retailer R over a period of two intervals, through the API."""

    def __init__(self, api: RunningService) -> None:
        self.api = api
        self.g: LocalAccount = api.register("generator")
        self.r: LocalAccount = api.register("retailer")
        now = api.market.now()
        self.start = (now + DEFAULT_TRADE_LIMITS.gate_closure_seconds) // INTERVAL_SECONDS * INTERVAL_SECONDS
        self.start += 2 * INTERVAL_SECONDS
        self.end = self.start + 2 * INTERVAL_SECONDS
        self.trade_id = self.submit(400_000, 50_000)
        self.metering = MeteringService(api.service.context)

    @property
    def period(self) -> dict[str, str]:
        return {"periodStart": iso(self.start), "periodEnd": iso(self.end)}

    def submit(self, energy_wh: int, price: int) -> str:
        body = self.api.body(
            self.g,
            self.r,
            delivery_start=self.start,
            delivery_end=self.end,
            energy_per_interval_wh=energy_wh,
            price_minor_per_mwh=price,
        )
        answer = self.api.client.post("/trades", json=body)
        assert answer.status_code == 202, answer.text
        return str(self.api.wait_recorded(answer.json()["submissionId"])["tradeId"])

    def close_period(self) -> None:
        """Chain time past the period, and the index past that block."""
        rpc = self.api.market.rpc
        rpc.call("evm_increaseTime", hex(self.end - self.api.market.now() + 1))
        rpc.call("evm_mine")
        head = int(rpc.call("eth_blockNumber"), 16)
        self.api.wait_indexed("/health", until=lambda health: (health["indexCheckpoint"] or 0) >= head)

    def import_inputs(self, g_injected: int = 390_000) -> None:
        second = self.start + INTERVAL_SECONDS
        self.metering.import_readings(
            [
                MeterReading(self.g.address, self.start, g_injected, 0),
                MeterReading(self.g.address, second, 400_000, 0),
                MeterReading(self.r.address, self.start, 0, 420_000),
            ],
            source="test",
        )
        self.metering.import_prices({self.start: 45_000, second: 45_000}, self.start, self.end, source="test")


def market_span(market: Market) -> dict[str, str]:
    return {"from": iso(market.start), "to": iso(market.end)}


def test_the_operator_settles_a_period_and_participants_verify_and_dispute(api: RunningService) -> None:
    market = Market(api)
    client, operator = api.client, api.operator

    # Before the period is over, and without a token.
    assert_problem(api.public.post("/settlement-runs", json=market.period), 401, "token_required")
    assert_problem(client.post("/settlement-runs", json=market.period), 403, "forbidden")
    behind = api.settle(market.period, expect="failed")
    assert behind["problem"]["code"] == "index_behind_period" and behind["runId"] is None
    market.close_period()
    missing = api.settle(market.period, expect="failed")["problem"]
    assert missing["code"] == "missing_reference_price"
    assert missing["context"]["intervals"] == [market.start, market.start + INTERVAL_SECONDS]
    market.import_inputs()

    job = api.settle(market.period)
    run = job["run"]
    run_id = run["runId"]
    assert (job["version"], job["action"], job["step"]["name"], job["attempts"]) == (1, "committed", "done", 1)
    assert job["requestedBy"] and job["finishedAt"] >= job["startedAt"] >= job["createdAt"]
    assert (run["version"], run["status"]) == (1, "committed")
    assert run["totals"]["receivableMinor"] == run["totals"]["payableMinor"] > 0
    assert run["commit"]["transactionHash"] and run["commit"]["disputeWindowEnds"]
    assert_problem(client.get(f"/settlement-jobs/{job['jobId']}"), 403, "forbidden")

    again = api.settle(market.period)
    assert again["jobId"] != job["jobId"] and again["action"] == "unchanged" and again["runId"] == run_id

    listed = client.get("/settlement-runs", params=market.period).json()["items"]
    assert [item["runId"] for item in listed] == [run_id]
    assert client.get("/settlement-runs", params={**market.period, "status": "superseded"}).json()["items"] == []

    detail = client.get(f"/settlement-runs/{run_id}").json()
    assert detail["periodStart"] == iso(market.start) and detail["lineCount"] == run["lineCount"]
    assert detail["chain"]["status"] == "open" and detail["chain"]["final"] is False
    assert detail["inputs"]["tradeCount"] == 1 and len(detail["inputs"]["readingBatchIds"]) == 1
    assert detail["inputs"]["parameters"] == {"toleranceBps": 300, "penaltyBps": 2000, "changeId": None}
    assert detail["inputs"]["balancingAccount"] == api.service.context.settlement_operator.sender.address

    # R's statement: lines, positions (the second interval estimated), no deltas in version 1.
    statement = client.get(f"/settlement-runs/{run_id}/statements/{market.r.address}").json()
    assert statement["total"]["kindName"] == "total" and statement["previousRunId"] is None
    assert [(p["contractedWh"], p["meteredWh"], p["imbalanceWh"], p["estimated"]) for p in statement["positions"]] == [
        (-400_000, -420_000, -20_000, False),
        (-400_000, -400_000, 0, True),
    ]
    assert all(line["delta"] is None for line in statement["lines"])
    imbalance = next(line for line in statement["lines"] if line["kindName"] == "imbalance")
    assert imbalance["intervalStart"] == iso(market.start) and imbalance["energyWh"] == -20_000

    # R, signed in with its own key, reads its statement and proofs; not G's, and not without a token.
    with api.trader(market.r) as trader:
        own = trader.get(f"/settlement-runs/{run_id}/statements/{market.r.address}")
        assert own.status_code == 200 and own.json() == statement
        assert trader.get(statement["lines"][0]["links"]["proof"]).status_code == 200
        assert_problem(trader.get(f"/settlement-runs/{run_id}/statements/{market.g.address}"), 404, "not_found")
        exported = trader.get("/exports/statements.json", params={**market_span(market), "runId": run_id}).json()
        assert {row["account"] for row in exported} == {market.r.address}  # its own lines only
    assert_problem(api.public.get(f"/settlement-runs/{run_id}/statements/{market.r.address}"), 401, "token_required")
    assert api.public.get(f"/settlement-runs/{run_id}").json()["root"] == run["root"]  # run headers are public

    # Every line of R's statement: verified by @openzeppelin/merkle-tree and by the contract.
    proofs = [client.get(line["links"]["proof"]).json() for line in statement["lines"]]
    assert js_verify(proofs) == [True] * len(proofs)
    settler = api.service.context.settler
    for proof in proofs:
        assert proof["root"] == run["root"] and proof["chainId"] == 31337
        assert (
            proof["contractAddress"] == settler.address and proof["transactionHash"] == run["commit"]["transactionHash"]
        )
        _, account, kind, ref, energy, amount = proof["values"]
        line = DisputeLine(proof["runId"], account, int(kind), ref, int(energy), int(amount))
        assert settler.verify_line(line, proof["proof"])

    # A dispute: R's wallet signs the typed data the API builds, the API relays it.
    terms = {
        "account": market.r.address,
        "kind": imbalance["kind"],
        "ref": imbalance["ref"],
        "reason": "the meter was read a day late",
        "deadline": iso(api.market.now() + 3600),
    }
    typed = client.post(f"/settlement-runs/{run_id}/disputes/typed-data", json=terms)
    assert typed.status_code == 200, typed.text
    document = typed.json()["typedData"]
    assert document["primaryType"] == "Dispute" and document["domain"]["verifyingContract"] == settler.address

    def signed_by(account: LocalAccount) -> str:
        return "0x" + bytes(Account.sign_typed_data(account.key, full_message=document).signature).hex()

    assert_problem(
        client.post(f"/settlement-runs/{run_id}/disputes", json={**terms, "signature": signed_by(market.g)}),
        422,
        "invalid_dispute_signature",
    )
    opened = client.post(f"/settlement-runs/{run_id}/disputes", json={**terms, "signature": signed_by(market.r)})
    assert opened.status_code == 201, opened.text
    dispute = opened.json()
    assert dispute["status"] == "open" and dispute["reasonHash"] == typed.json()["reasonHash"]
    assert dispute["energyWh"] == -20_000 and dispute["openedTransactionHash"]
    relayed_again = client.post(f"/settlement-runs/{run_id}/disputes", json={**terms, "signature": signed_by(market.r)})
    assert relayed_again.status_code == 200 and relayed_again.json()["disputeId"] == dispute["disputeId"]
    assert client.get(dispute["links"]["self"]).json() == dispute
    assert client.get(f"/settlement-runs/{run_id}").json()["chain"]["openDisputes"] == 1

    resolve = f"/disputes/{dispute['disputeId']}/resolve"
    decision = {"accepted": True, "resolution": "confirmed by the meter operator: corrected reading follows"}
    assert_problem(api.public.post(resolve, json=decision), 401, "token_required")
    assert_problem(client.post(resolve, json=decision), 403, "forbidden")
    resolved = client.post(resolve, json=decision, headers=operator)
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "accepted" and resolved.json()["resolvedTransactionHash"]
    chain = client.get(f"/settlement-runs/{run_id}").json()["chain"]
    assert (chain["openDisputes"], chain["acceptedDisputes"], chain["status"]) == (0, 1, "open")

    # The corrected reading: version 2, with deltas; version 1 superseded and still there.
    market.metering.import_readings([MeterReading(market.r.address, market.start, 0, 400_000)], source="correction")
    corrected = api.settle(market.period)
    v2 = corrected["run"]
    assert v2["version"] == 2 and corrected["action"] == "committed"
    first = client.get(f"/settlement-runs/{run_id}").json()
    assert first["status"] == "superseded" and first["supersededBy"] == v2["runId"]
    assert first["chain"]["status"] == "superseded"
    statement_v2 = client.get(f"/settlement-runs/{v2['runId']}/statements/{market.r.address}").json()
    assert statement_v2["previousRunId"] == run_id
    # R's imbalance (-20,000 Wh) and its penalty (excess 8,000 Wh over the 12,000 Wh tolerance) are gone.
    removed = {(line["kindName"], line["ref"], line["previousEnergyWh"]) for line in statement_v2["removedLines"]}
    assert removed == {("imbalance", imbalance["ref"], -20_000), ("penalty", imbalance["ref"], 8_000)}
    total_delta = statement_v2["total"]["delta"]
    assert total_delta["energyWh"] == 20_000 and total_delta["previousEnergyWh"] == statement["total"]["energyWh"]
    assert client.get(f"/settlement-runs/{run_id}/statements/{market.r.address}").json() == {
        **statement,
        "run": {**statement["run"], "status": "superseded", "supersededBy": v2["runId"]},
    }


def test_settlement_requests_that_cannot_be_served(api: RunningService) -> None:
    client, operator = api.client, api.operator
    unknown = "0x" + "ab" * 32
    assert_problem(client.get(f"/settlement-runs/{unknown}"), 404, "not_found")
    assert_problem(client.get(f"/disputes/{unknown}"), 404, "not_found")
    assert_problem(client.get("/settlement-runs/0x1234"), 422, "validation_error")
    assert_problem(
        client.post(f"/disputes/{unknown}/resolve", json={"accepted": True, "resolution": "x"}, headers=operator),
        404,
        "not_found",
    )
    misaligned = {"periodStart": "2026-01-01T00:05:00+00:00", "periodEnd": "2026-01-01T01:00:00+00:00"}
    problem = assert_problem(
        client.post("/settlement-runs", json=misaligned, headers=operator), 422, "validation_error"
    )
    assert problem["field"] == "period"
    naive = {"periodStart": "2026-01-01T00:00:00", "periodEnd": "2026-01-01T01:00:00+00:00"}
    assert_problem(client.post("/settlement-runs", json=naive, headers=operator), 422, "validation_error")

    market = Market(api)
    market.close_period()
    market.import_inputs()
    run_id = api.settle(market.period)["runId"]
    assert_problem(client.get(f"/settlement-runs/{run_id}/statements/{Account.create().address}"), 404, "not_found")
    assert_problem(client.get(f"/settlement-runs/{run_id}/statements/0x1234"), 422, "validation_error")
    proof_path = f"/settlement-runs/{run_id}/lines/{market.g.address}/5/{'0x' + '00' * 32}/proof"
    assert_problem(client.get(proof_path), 422, "validation_error")
    late = {
        "account": market.g.address,
        "kind": 9,
        "ref": "0x" + "00" * 32,
        "reason": "late",
        "deadline": iso(api.market.now() - 10),
        "signature": "0x" + "11" * 65,
    }
    assert_problem(client.post(f"/settlement-runs/{run_id}/disputes", json=late), 422, "invalid_dispute_signature")
    wait_for(lambda: api.service.healthy, "the service to be healthy")


def test_the_market_parameters_are_published_and_changed_by_the_operator(api: RunningService) -> None:
    client, operator = api.client, api.operator
    published = api.public.get("/market/parameters")
    assert published.status_code == 200, published.text
    market = published.json()
    context = api.service.context
    assert market["balancingAccount"] == context.settlement_operator.sender.address
    assert market["settlement"] == {"toleranceBps": 300, "penaltyBps": 2000, "changeId": None}
    assert market["initialSettlement"] == {"toleranceBps": 300, "penaltyBps": 2000, "changeId": None}
    assert market["tradeLimits"]["gateClosureSeconds"] == DEFAULT_TRADE_LIMITS.gate_closure_seconds
    assert market["tradeLimits"]["maxPriceMinorPerMWh"] == (DEFAULT_TRADE_LIMITS.max_price_minor_per_mwh)
    assert market["disputeWindowSeconds"] == context.settler.dispute_window() == 72 * 3600
    assert (market["rulesVersion"], market["upcomingChanges"]) == (1, [])

    now = context.clock.now()
    effective = iso((now // INTERVAL_SECONDS + 4) * INTERVAL_SECONDS)
    change = {"effectiveFrom": effective, "toleranceBps": 500, "penaltyBps": 2500}
    assert_problem(api.public.post("/market/parameter-changes", json=change), 401, "token_required")
    assert_problem(client.post("/market/parameter-changes", json=change), 403, "forbidden")
    past = {**change, "effectiveFrom": iso(now // INTERVAL_SECONDS * INTERVAL_SECONDS)}
    assert_problem(client.post("/market/parameter-changes", json=past, headers=operator), 422, "validation_error")
    scheduled = client.post("/market/parameter-changes", json=change, headers=operator)
    assert scheduled.status_code == 201, scheduled.text
    created = scheduled.json()
    assert (created["effectiveFrom"], created["toleranceBps"], created["penaltyBps"]) == (effective, 500, 2500)
    assert created["scheduledBy"] and created["scheduledAt"]
    logged = client.get("/access-log", params={"principal": created["scheduledBy"]}).json()["items"]
    assert ("POST", "/market/parameter-changes", 201) in [(e["method"], e["path"], e["status"]) for e in logged]
    assert api.public.get("/market/parameter-changes").json()["items"] == [created]
    market = api.public.get("/market/parameters").json()
    assert market["upcomingChanges"] == [created] and market["settlement"]["toleranceBps"] == 300
