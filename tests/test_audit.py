"""Auditor traceability on a real chain and both databases: a trade traced from its recording,
through its amendment, to the statement lines of the runs that settled it (version 1, then
version 2 after a corrected reading); verification of trades, runs and lines against the chain,
untouched and after the index is tampered with; and the same over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from ledger import errors
from ledger.chain.node import LocalNode
from ledger.domain.settlement import LineKind, MeterReading, interval_ref
from ledger.domain.trade import ParticipantKind
from ledger.domain.units import ZERO_ID
from ledger.services.audit import AuditService, HistoryKind, Verdict, VerificationReport
from ledger.store.models import Trade
from ledger.store.settlement_models import RunStatus, StatementLine
from tests.support.service import RunningService, iso, running_service
from tests.test_api_settlement import Market, assert_problem
from tests.test_settlement_service import World, new_world

UNKNOWN = "0x" + "ab" * 32


@pytest.fixture
def world(anvil: LocalNode, database_url: str, tmp_path: Path) -> Iterator[World]:
    with new_world(anvil.rpc_url, database_url, tmp_path) as created:
        yield created


def tamper(world: World, statement: Any) -> None:
    with world.context.sessions.begin() as session:
        session.execute(statement)


def mismatches(report: VerificationReport) -> dict[str, tuple[Any, Any]]:
    return {check.field: (check.index, check.chain) for check in report.checks if not check.match}


def test_a_trade_is_traced_to_its_lines_and_the_index_is_verified_against_the_chain(world: World) -> None:
    audit = AuditService(world.context)
    g, r = world.participant(ParticipantKind.GENERATOR), world.participant(ParticipantKind.RETAILER)
    start, end = world.future_period(1)
    original = world.record(g, r, start, end, 500_000, 35_000)
    amendment = world.record(g, r, start, end, 1_000_000, 35_000, replaces=original)
    cancelled = world.record(g, r, start, end, 200_000, 30_000)
    world.cancel(cancelled, g, r)
    world.advance_past(end)
    world.readings(MeterReading(g.address, start, 990_000, 0), MeterReading(r.address, start, 0, 1_050_000))
    world.prices((start, end), 40_000)
    v1 = world.settlement.execute(start, end).run
    world.readings(MeterReading(g.address, start, 1_000_000, 0))
    v2 = world.settlement.execute(start, end).run
    assert (v1.version, v2.version) == (1, 2)

    # From the original trade to the lines of both versions, in chain order.
    history = audit.trade_history(original)
    assert history.lineage == [original, amendment]
    assert audit.trade_history(amendment).events == history.events
    assert [(e.kind, e.trade_id, e.related_trade_id, e.run_version) for e in history.events] == [
        (HistoryKind.RECORDED, original, None, None),
        # The contract records the amendment, then marks the original amended: one transaction.
        (HistoryKind.RECORDED, amendment, original, None),
        (HistoryKind.AMENDED, original, amendment, None),
        (HistoryKind.SETTLED, amendment, None, 1),
        (HistoryKind.SETTLED, amendment, None, 2),
    ]
    blocks = [e.block_number for e in history.events]
    assert all(b is not None for b in blocks) and blocks == sorted(blocks)  # type: ignore[type-var]
    assert all(e.block_hash and e.transaction_hash for e in history.events)
    assert all(e.log_index is not None for e in history.events[:3])
    settled_v1, settled_v2 = history.events[3:]
    assert (settled_v1.run_id, settled_v1.run_status, settled_v1.transaction_hash) == (
        v1.run_id,
        RunStatus.SUPERSEDED,
        v1.transaction_hash,
    )
    assert (settled_v2.run_id, settled_v2.run_status, settled_v2.block_hash) == (
        v2.run_id,
        RunStatus.COMMITTED,
        v2.block_hash,
    )
    for settled in (settled_v1, settled_v2):
        assert [(line.account, line.kind, line.ref, line.energy_wh, line.amount_minor) for line in settled.lines] == [
            (g.address, LineKind.TRADE, amendment, 1_000_000, 35_000),
            (r.address, LineKind.TRADE, amendment, -1_000_000, -35_000),
        ]
    assert [e.kind for e in audit.trade_history(cancelled).events] == [HistoryKind.RECORDED, HistoryKind.CANCELLED]

    # G over the day: three trades, its statement in both versions (the corrected imbalance).
    participant = audit.participant_history(g.address, start - 86_400, end)
    assert [(t.trade_id, t.side, t.status) for t in participant.trades] == [
        (original, "seller", "amended"),
        (amendment, "seller", "recorded"),
        (cancelled, "seller", "cancelled"),
    ]
    assert [(run.run_id, run.version, run.status) for run in participant.runs] == [
        (v1.run_id, 1, RunStatus.SUPERSEDED),
        (v2.run_id, 2, RunStatus.COMMITTED),
    ]
    imbalances = [
        [line.amount_minor for line in run.lines if line.kind is LineKind.IMBALANCE] for run in participant.runs
    ]
    assert imbalances == [[-400], []]
    assert [[p.metered_wh for p in run.positions] for run in participant.runs] == [[990_000], [1_000_000]]
    balancing = audit.participant_history(world.settlement.balancing_account, start, end)
    assert balancing.trades == [] and len(balancing.runs) == 2

    # An untouched index matches the chain, field by field.
    for trade in (original, amendment, cancelled):
        report = audit.verify_trade(trade)
        assert report.verdict is Verdict.MATCH, mismatches(report)
    fields = {check.field for check in audit.verify_trade(cancelled).checks}
    assert {"energy_per_interval_wh", "status", "block_hash", "cancellation.transaction_hash"} <= fields
    for run in (v1, v2):
        report = audit.verify_run(run.run_id)
        assert report.verdict is Verdict.MATCH, mismatches(report)
        assert {"root", "inputs_hash", "total_receivable_minor", "stored_lines_root"} <= {
            c.field for c in report.checks
        }
    ref = interval_ref(start)
    line_report = audit.verify_line(v2.run_id, r.address, int(LineKind.PENALTY), ref)
    assert line_report.verdict is Verdict.MATCH and line_report.subject["runId"] == v2.run_id

    # Tampered: a trade's energy, another's stored block hash, a line's amount.
    tamper(world, update(Trade).where(Trade.trade_id == amendment).values(energy_per_interval_wh=1_000_001))
    report = audit.verify_trade(amendment)
    assert report.verdict is Verdict.MISMATCH
    assert mismatches(report) == {"energy_per_interval_wh": (1_000_001, 1_000_000)}
    forged = "0x" + "66" * 32
    tamper(world, update(Trade).where(Trade.trade_id == cancelled).values(block_hash=forged))
    report = audit.verify_trade(cancelled)
    assert set(mismatches(report)) == {"block_hash"} and mismatches(report)["block_hash"][0] == forged

    trade_line = (StatementLine.run_id == v2.run_id, StatementLine.account == r.address, StatementLine.ref == amendment)
    tamper(world, update(StatementLine).where(*trade_line).values(amount_minor=-30_000))
    line_report = audit.verify_line(v2.run_id, r.address, int(LineKind.TRADE), amendment)
    assert line_report.verdict is Verdict.MISMATCH
    assert set(mismatches(line_report)) == {"proof_root", "verify_line"}
    assert mismatches(line_report)["verify_line"][1] is False
    # Every other line of the run proves against the on-chain root no longer: the tree is the run's.
    assert set(mismatches(audit.verify_run(v2.run_id))) == {"stored_lines_root"}
    assert audit.verify_run(v2.run_id, lines=False).verdict is Verdict.MATCH
    assert audit.verify_run(v1.run_id).verdict is Verdict.MATCH

    # Unknown subjects, and a subject on one side only.
    for unknown in (lambda: audit.verify_trade(UNKNOWN), lambda: audit.verify_run(UNKNOWN)):
        with pytest.raises(errors.NotFoundError):
            unknown()
    with pytest.raises(errors.NotFoundError):
        audit.trade_history(UNKNOWN)
    with pytest.raises(errors.NotFoundError):
        audit.verify_line(v2.run_id, g.address, int(LineKind.PENALTY), ref)
    with pytest.raises(errors.ValidationError):
        audit.participant_history(g.address, start, start + 32 * 86_400)
    with world.context.sessions.begin() as session:
        session.delete(session.get(Trade, cancelled))
    missing = audit.verify_trade(cancelled)
    assert missing.verdict is Verdict.MISSING
    assert mismatches(missing)["exists"] == (False, True)
    assert ZERO_ID not in history.lineage


def test_auditors_trace_and_verify_over_http(api: RunningService) -> None:
    market = Market(api)
    client = api.client
    amendment = api.body(
        market.g,
        market.r,
        delivery_start=market.start,
        delivery_end=market.end,
        energy_per_interval_wh=410_000,
        price_minor_per_mwh=50_000,
        replaces=market.trade_id,
    )
    answer = client.post("/trades", json=amendment)
    assert answer.status_code == 202, answer.text
    amended = str(api.wait_recorded(answer.json()["submissionId"])["tradeId"])
    market.close_period()
    market.import_inputs()
    run = api.settle(market.period)["run"]

    history = client.get(f"/trades/{market.trade_id}/history")
    assert history.status_code == 200, history.text
    body = history.json()
    assert body["lineage"] == [market.trade_id, amended]
    assert [(e["kind"], e["tradeId"]) for e in body["events"]] == [
        ("recorded", market.trade_id),
        ("recorded", amended),
        ("amended", market.trade_id),
        ("settled", amended),
    ]
    settled = body["events"][-1]
    assert (settled["runId"], settled["runVersion"], settled["transactionHash"]) == (
        run["runId"],
        1,
        run["commit"]["transactionHash"],
    )
    assert [(line["account"], line["kindName"], line["energyWh"]) for line in settled["lines"]] == [
        (market.g.address, "trade", 820_000),
        (market.r.address, "trade", -820_000),
    ]

    span = {"from": iso(market.start), "to": iso(market.end)}
    participant = client.get(f"/participants/{market.r.address}/history", params=span).json()
    assert [(t["tradeId"], t["side"], t["status"]) for t in participant["trades"]] == [
        (market.trade_id, "buyer", "amended"),
        (amended, "buyer", "recorded"),
    ]
    assert [r["runId"] for r in participant["runs"]] == [run["runId"]]
    assert participant["runs"][0]["positions"][0]["intervalStart"] == iso(market.start)

    verified = client.get(f"/verify/trades/{amended}").json()
    assert verified["verdict"] == "match" and verified["subject"] == {"type": "trade", "tradeId": amended}
    assert client.get(f"/verify/settlement-runs/{run['runId']}").json()["verdict"] == "match"
    line_path = f"/verify/settlement-runs/{run['runId']}/lines/{market.g.address}/1/{amended}"
    assert client.get(line_path).json()["verdict"] == "match"

    with api.service.context.sessions.begin() as session:
        session.execute(update(Trade).where(Trade.trade_id == amended).values(price_minor_per_mwh=49_999))
        session.execute(
            update(StatementLine)
            .where(StatementLine.run_id == run["runId"], StatementLine.ref == amended)
            .values(energy_wh=StatementLine.energy_wh * 2)
        )
    tampered = client.get(f"/verify/trades/{amended}").json()
    assert tampered["verdict"] == "mismatch"
    assert [(c["field"], c["index"], c["chain"]) for c in tampered["checks"] if not c["match"]] == [
        ("price_minor_per_mwh", 49_999, 50_000)
    ]
    line = client.get(line_path).json()
    assert line["verdict"] == "mismatch"
    assert {c["field"]: c["chain"] for c in line["checks"] if not c["match"]}["verify_line"] is False

    assert_problem(client.get(f"/trades/{UNKNOWN}/history"), 404, "not_found")
    assert_problem(client.get(f"/verify/trades/{UNKNOWN}"), 404, "not_found")
    assert_problem(client.get(f"/verify/settlement-runs/{UNKNOWN}"), 404, "not_found")
    assert_problem(
        client.get(f"/verify/settlement-runs/{UNKNOWN}/lines/{market.g.address}/1/{amended}"), 404, "not_found"
    )
    assert_problem(client.get(f"/participants/{'0x' + '12' * 20}/history", params=span), 404, "not_found")
    assert_problem(client.get(f"/participants/{market.r.address}/history"), 422, "validation_error")
    operations = {
        op["operationId"] for path in client.get("/openapi.json").json()["paths"].values() for op in path.values()
    }
    assert {
        "getTradeHistory",
        "getParticipantHistory",
        "verifyTrade",
        "verifySettlementRun",
        "verifySettlementLine",
    } <= operations


@pytest.fixture
def api(anvil: LocalNode, database_url: str, tmp_path: Path) -> Iterator[RunningService]:
    with running_service(anvil.rpc_url, database_url, tmp_path) as running:
        yield running
