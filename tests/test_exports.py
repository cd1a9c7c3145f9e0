"""Auditor exports (ledger.services.exports, api/routers/exports.py) on SQLite and PostgreSQL:
rows written straight into the index, exported over real HTTP, parsed back and compared with
the index rows; filters, parameter problems, and a 50,000-trade export that streams in chunks
with bounded memory."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_utils import to_checksum_address
from fastapi import FastAPI
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session, sessionmaker

from api import problems
from api.auth import caller
from api.routers import exports
from ledger.auth.scopes import ROLES, Principal, PrincipalKind
from ledger.domain.settlement import ReadingQuality
from ledger.domain.units import INTERVAL_SECONDS, to_datetime
from ledger.services.exports import ExportPeriod, ExportService, encode_csv, encode_json
from ledger.store.db import make_session_factory
from ledger.store.metering_models import BatchStatus, MeterReadingRow, ReadingBatchRow
from ledger.store.models import Trade, TradeStatus
from ledger.store.settlement_models import RunStatus, SettlementRun, StatementLine
from tests.support.service import serve

PROBLEM = "application/problem+json"
T0 = 1_900_000_800  # 2030-03-17T...: a multiple of the interval
HOUR = 3600
DAY = 86400
ALICE = to_checksum_address("0x" + "a1" * 20)
BOB = to_checksum_address("0x" + "b2" * 20)
CAROL = to_checksum_address("0x" + "c3" * 20)
BALANCING = to_checksum_address("0x" + "ee" * 20)


def h(n: int) -> str:
    return "0x" + f"{n:064x}"


def iso(t: int) -> str:
    return to_datetime(t).isoformat()


def trade_row(n: int, seller: str, buyer: str, start: int, end: int, **extra: Any) -> dict[str, Any]:
    return {
        "trade_id": h(0x7000 + n),
        "seller": seller,
        "buyer": buyer,
        "delivery_start": start,
        "delivery_end": end,
        "energy_per_interval_wh": 1_000_000 + n,
        "price_minor_per_mwh": 45_000 + n,
        "nonce": str(2**200 + n),
        "deadline": str(2**64 - 1),
        "replaces": None,
        "status": TradeStatus.RECORDED,
        "replaced_by": None,
        "recorded_at": T0 - DAY + n,
        "block_number": 100 + n,
        "block_hash": h(0xB000 + n),
        "transaction_hash": h(0xC000 + n),
        "transaction_index": n % 3,
        "log_index": n,
    } | extra


def seed(sessions: sessionmaker[Session]) -> None:
    """Three trades in the period (one overlapping its start), one after it; two reading
    batches (the second re-states one reading as version 2, and is only prepared); a committed
    run, the version it superseded, and a committed run of another period."""
    with sessions.begin() as session:
        session.execute(
            insert(Trade),
            [
                trade_row(1, ALICE, BOB, T0, T0 + HOUR),
                trade_row(2, BOB, CAROL, T0 - HOUR, T0 + INTERVAL_SECONDS, status=TradeStatus.CANCELLED),
                trade_row(3, CAROL, ALICE, T0 + 2 * HOUR, T0 + 3 * HOUR),
                trade_row(4, ALICE, CAROL, T0 + DAY, T0 + DAY + HOUR),  # after the period
                trade_row(5, ALICE, BOB, T0 - HOUR, T0),  # ends where the period starts
            ],
        )
        for n, status, tx, block in ((1, BatchStatus.COMMITTED, h(0xD001), 210), (2, BatchStatus.PREPARED, None, None)):
            session.add(
                ReadingBatchRow(
                    batch_id=h(0xBA00 + n),
                    period_start=T0,
                    period_end=T0 + HOUR,
                    root=h(0xF000 + n),
                    supersedes=None,
                    source="api",
                    status=status,
                    transaction_hash=tx,
                    block_number=block,
                    reading_count=2 if n == 1 else 1,
                )
            )
        session.flush()
        session.execute(
            insert(MeterReadingRow),
            [
                reading(h(0xBA01), ALICE, T0, 1, 0, 500),
                reading(h(0xBA01), BOB, T0 + INTERVAL_SECONDS, 1, 1, 700),
                reading(h(0xBA02), ALICE, T0, 2, 0, 550),
                reading(h(0xBA01), CAROL, T0 - INTERVAL_SECONDS, 1, 2, 9),  # before the period
            ],
        )
        runs = [
            run(h(0xA1), T0, T0 + DAY, 1, RunStatus.SUPERSEDED),
            run(h(0xA2), T0, T0 + DAY, 2, RunStatus.COMMITTED),
            run(h(0xA3), T0 + DAY, T0 + 2 * DAY, 1, RunStatus.COMMITTED),
        ]
        session.add_all(runs)
        session.flush()
        for r in runs:
            session.add_all(
                [
                    line(r.run_id, ALICE, 1, h(0x7001), 4_000, -180_000, 0),
                    line(r.run_id, ALICE, 9, h(0), 0, -180_000 - int(r.version), 1),
                    line(r.run_id, BOB, 9, h(0), 0, 180_000, 2),
                ]
            )


def reading(batch: str, who: str, start: int, version: int, leaf: int, wh: int) -> dict[str, Any]:
    return {
        "batch_id": batch,
        "participant": who,
        "interval_start": start,
        "injected_wh": wh,
        "withdrawn_wh": 2 * wh,
        "quality": ReadingQuality.MEASURED if version == 1 else ReadingQuality.SUBSTITUTED,
        "version": version,
        "leaf_index": leaf,
    }


def run(run_id: str, start: int, end: int, version: int, status: RunStatus) -> SettlementRun:
    return SettlementRun(
        run_id=run_id,
        period_start=start,
        period_end=end,
        version=version,
        status=status,
        rules_version=1,
        root=h(0xE000 + version),
        inputs_hash=h(0xE100),
        line_count=3,
        total_receivable_minor="180000",
        total_payable_minor="180000",
        price_batch_id=h(0xE200),
        tolerance_bps=500,
        penalty_bps=1000,
        balancing_account=BALANCING,
        transaction_hash=h(0xE300 + version),
        block_number=300 + version,
        block_hash=h(0xE400 + version),
    )


def line(run_id: str, account: str, kind: int, ref: str, wh: int, minor: int, leaf: int) -> StatementLine:
    return StatementLine(
        run_id=run_id, account=account, kind=kind, ref=ref, energy_wh=wh, amount_minor=minor, leaf_index=leaf
    )


@pytest.fixture
def read_sessions(store_engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(store_engine, read_only=True)


@pytest.fixture
def base_url(store_session_factory: sessionmaker[Session], read_sessions: sessionmaker[Session]) -> Iterator[str]:
    seed(store_session_factory)
    app = FastAPI()
    problems.install(app)
    app.include_router(exports.router)
    app.dependency_overrides[caller] = lambda: AUDITOR
    # A small chunk size, so that even the seeded rows cross chunk boundaries.
    app.dependency_overrides[exports.get_exports] = lambda: ExportService(read_sessions, chunk_rows=2)
    with serve(app) as url:
        yield url


AUDITOR = Principal(PrincipalKind.TOKEN, "test-auditor", ROLES["auditor"], token_id="0" * 16)


def fetch(base_url: str, path: str, **params: str) -> list[dict[str, Any]]:
    """The export's rows as dicts; CSV values stay text, JSON values keep their JSON types."""
    answer = httpx.get(base_url + path, params=params)
    assert answer.status_code == 200, answer.text
    kind = path.rsplit(".", 1)[1]
    assert answer.headers["content-disposition"].startswith("attachment; filename=")
    assert answer.headers["content-disposition"].endswith(f'.{kind}"')
    if kind == "csv":
        assert answer.headers["content-type"].startswith("text/csv")
        return list(csv.DictReader(io.StringIO(answer.text)))
    assert answer.headers["content-type"] == "application/json"
    rows = json.loads(answer.text)
    assert isinstance(rows, list)
    return rows


def as_csv(row: dict[str, Any]) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in row.items()}


def expected_trades(sessions: sessionmaker[Session], trade_ids: list[str]) -> list[dict[str, Any]]:
    with sessions() as session:
        trades = session.scalars(select(Trade).where(Trade.trade_id.in_(trade_ids)).order_by(Trade.block_number))
        return [
            {
                "tradeId": t.trade_id,
                "seller": t.seller,
                "buyer": t.buyer,
                "deliveryStart": iso(t.delivery_start),
                "deliveryEnd": iso(t.delivery_end),
                "energyPerIntervalWh": t.energy_per_interval_wh,
                "priceMinorPerMwh": t.price_minor_per_mwh,
                "nonce": t.nonce,
                "deadline": t.deadline,
                "status": t.status.value,
                "replaces": t.replaces,
                "replacedBy": t.replaced_by,
                "recordedAt": iso(t.recorded_at),
                "blockNumber": t.block_number,
                "blockHash": t.block_hash,
                "transactionHash": t.transaction_hash,
                "transactionIndex": t.transaction_index,
                "logIndex": t.log_index,
            }
            for t in trades
        ]


PERIOD = {"from": iso(T0), "to": iso(T0 + DAY)}


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_trades_export_is_the_index_rows_of_the_period(
    base_url: str, store_session_factory: sessionmaker[Session], kind: str
) -> None:
    rows = fetch(base_url, f"/exports/trades.{kind}", **PERIOD)
    expected = expected_trades(store_session_factory, [h(0x7001), h(0x7002), h(0x7003)])
    assert rows == (expected if kind == "json" else [as_csv(e) for e in expected])
    if kind == "json":  # integers stay integers, the uint256 nonce a decimal string
        assert isinstance(rows[0]["energyPerIntervalWh"], int) and rows[0]["nonce"] == str(2**200 + 1)
        assert rows[0]["deliveryStart"].endswith("+00:00")


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_trades_export_filters_by_participant_as_seller_or_buyer(base_url: str, kind: str) -> None:
    rows = fetch(base_url, f"/exports/trades.{kind}", participant=CAROL.lower(), **PERIOD)
    assert [r["tradeId"] for r in rows] == [h(0x7002), h(0x7003)]
    assert fetch(base_url, f"/exports/trades.{kind}", **{"from": iso(T0 + DAY), "to": iso(T0 + 2 * DAY)})[0][
        "tradeId"
    ] == h(0x7004)


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_meter_readings_export_has_every_version_with_its_batch_commit(base_url: str, kind: str) -> None:
    rows = fetch(base_url, f"/exports/meter-readings.{kind}", **PERIOD)
    expected = [
        {
            "participant": ALICE,
            "intervalStart": iso(T0),
            "injectedWh": 500,
            "withdrawnWh": 1000,
            "quality": "measured",
            "version": 1,
            "leafIndex": 0,
            "batchId": h(0xBA01),
            "batchStatus": "committed",
            "batchRoot": h(0xF001),
            "batchTransactionHash": h(0xD001),
            "batchBlockNumber": 210,
        },
        {
            "participant": ALICE,
            "intervalStart": iso(T0),
            "injectedWh": 550,
            "withdrawnWh": 1100,
            "quality": "substituted",
            "version": 2,
            "leafIndex": 0,
            "batchId": h(0xBA02),
            "batchStatus": "prepared",
            "batchRoot": h(0xF002),
            "batchTransactionHash": None,
            "batchBlockNumber": None,
        },
        {
            "participant": BOB,
            "intervalStart": iso(T0 + INTERVAL_SECONDS),
            "injectedWh": 700,
            "withdrawnWh": 1400,
            "quality": "measured",
            "version": 1,
            "leafIndex": 1,
            "batchId": h(0xBA01),
            "batchStatus": "committed",
            "batchRoot": h(0xF001),
            "batchTransactionHash": h(0xD001),
            "batchBlockNumber": 210,
        },
    ]
    assert rows == (expected if kind == "json" else [as_csv(e) for e in expected])
    only_bob = fetch(base_url, f"/exports/meter-readings.{kind}", participant=BOB, **PERIOD)
    assert [r["participant"] for r in only_bob] == [BOB]


def _line(
    run_id: str, version: int, start: int, account: str, kind: int, ref: str, wh: int, minor: int, leaf: int
) -> dict[str, Any]:
    return {
        "runId": run_id,
        "periodStart": iso(start),
        "periodEnd": iso(start + DAY),
        "runVersion": version,
        "runStatus": "committed" if run_id != h(0xA1) else "superseded",
        "runRoot": h(0xE000 + version),
        "account": account,
        "kind": kind,
        "kindName": {1: "trade", 9: "total"}[kind],
        "ref": ref,
        "energyWh": wh,
        "amountMinor": minor,
        "leafIndex": leaf,
        "runTransactionHash": h(0xE300 + version),
        "runBlockNumber": 300 + version,
        "runBlockHash": h(0xE400 + version),
    }


def _run_lines(run_id: str, version: int, start: int) -> list[dict[str, Any]]:
    return [
        _line(run_id, version, start, ALICE, 1, h(0x7001), 4_000, -180_000, 0),
        _line(run_id, version, start, ALICE, 9, h(0), 0, -180_000 - version, 1),
        _line(run_id, version, start, BOB, 9, h(0), 0, 180_000, 2),
    ]


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_statements_export_is_the_committed_runs_or_one_run(base_url: str, kind: str) -> None:
    def same(rows: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
        assert rows == (expected if kind == "json" else [as_csv(e) for e in expected])

    path = f"/exports/statements.{kind}"
    # The period's committed version only, not the superseded one.
    same(fetch(base_url, path, **PERIOD), _run_lines(h(0xA2), 2, T0))
    # A longer period takes the next period's committed run too.
    both = fetch(base_url, path, **{"from": iso(T0), "to": iso(T0 + 2 * DAY)})
    same(both, _run_lines(h(0xA2), 2, T0) + _run_lines(h(0xA3), 1, T0 + DAY))
    # runId: that run's lines, even superseded.
    same(fetch(base_url, path, runId=h(0xA1), **PERIOD), _run_lines(h(0xA1), 1, T0))
    same(fetch(base_url, path, participant=BOB, **PERIOD), _run_lines(h(0xA2), 2, T0)[2:])


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/exports/trades.csv", {"to": iso(T0)}, "from"),
        ("/exports/trades.json", {"from": iso(T0)}, "to"),
        ("/exports/meter-readings.csv", {"from": "2030-03-17T00:00:00", "to": iso(T0)}, "from"),
        ("/exports/trades.json", {"from": iso(T0), "to": iso(T0)}, "to"),
        ("/exports/statements.csv", {"from": iso(T0), "to": iso(T0 + 367 * DAY)}, "to"),
        ("/exports/trades.csv", {**PERIOD, "participant": "0x1234"}, "participant"),
        ("/exports/statements.json", {**PERIOD, "runId": "0xzz"}, "runId"),
    ],
)
def test_bad_parameters_are_422_problems_naming_the_parameter(
    base_url: str, path: str, params: dict[str, str], field: str
) -> None:
    answer = httpx.get(base_url + path, params=params)
    assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
    assert [e["field"] for e in answer.json()["errors"]] == [field]


def test_an_unknown_run_is_a_404_before_any_row(base_url: str) -> None:
    answer = httpx.get(base_url + "/exports/statements.csv", params={**PERIOD, "runId": h(0xDEAD)})
    assert answer.status_code == 404 and answer.headers["content-type"] == PROBLEM


def test_a_period_of_366_days_is_accepted() -> None:
    assert ExportPeriod.of(T0, T0 + 366 * DAY).end == T0 + 366 * DAY


# --- streaming ---------------------------------------------------------------------------------

MANY = 50_000


def test_a_large_export_streams_in_chunks_with_bounded_memory(
    store_session_factory: sessionmaker[Session], read_sessions: sessionmaker[Session]
) -> None:
    with store_session_factory.begin() as session:
        for first in range(0, MANY, 5_000):
            session.execute(
                insert(Trade),
                [
                    trade_row(n, ALICE, BOB, T0, T0 + HOUR, trade_id=h(0x10_0000 + n))
                    for n in range(first, first + 5_000)
                ],
            )
    service = ExportService(read_sessions, chunk_rows=200)
    period = ExportPeriod.of(T0, T0 + DAY)
    # Warm up: the first execution compiles and caches the statement (a one-off ~1 MB).
    assert list(encode_json(service.trades(ExportPeriod.of(0, DAY)))) == [b"[\n]\n"]

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        chunks = total = rows = 0
        for chunk in encode_json(service.trades(period), chunk_rows=200):
            chunks += 1
            total += len(chunk)
            rows += chunk.count(b'"tradeId"')
        peak_growth = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert rows == MANY and chunks >= MANY // 200
    # The document is ~38 MB; 200 fetched rows and one encoded chunk take ~1 MB (measured).
    assert total > 30_000_000 and peak_growth < 4_000_000, (total, peak_growth)

    # CSV the same way, and over HTTP the body arrives in many pieces.
    assert sum(chunk.count(b"\r\n") for chunk in encode_csv(service.trades(period))) == MANY + 1
    app = FastAPI()
    app.include_router(exports.router)
    app.dependency_overrides[caller] = lambda: AUDITOR
    app.dependency_overrides[exports.get_exports] = lambda: service
    with serve(app) as url, httpx.stream("GET", url + "/exports/trades.csv", params=PERIOD) as answer:
        pieces = [piece for piece in answer.iter_raw()]
    assert answer.status_code == 200 and len(pieces) > 10
    assert b"".join(pieces).count(b"\r\n") == MANY + 1
