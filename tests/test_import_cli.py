"""The import scripts as an operator runs them: subprocesses against a running anvil node, a
deployment file and a SQLite database of their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from sqlalchemy import func, select

from ledger.chain.node import LocalNode
from ledger.config import PROJECT_ROOT, Settings
from ledger.domain.trade import ParticipantKind
from ledger.services.context import LedgerContext
from ledger.services.devstack import deploy
from ledger.services.participants import ParticipantService
from ledger.store import metering_queries
from ledger.store.metering_models import MeterReadingRow, PriceBatchRow, ReadingBatchRow

DAY = 1_906_502_400  # 2030-06-01T00:00:00Z
Q = 900


@dataclass
class Stack:
    env: dict[str, str]
    settings: Settings
    participants: list[str]
    workdir: Path

    def run(self, script: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", f"scripts.{script}", *map(str, args)],
            cwd=PROJECT_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def file(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.write_text(text)
        return path

    def count(self, model: type) -> int:
        context = LedgerContext.open(self.settings)
        try:
            with context.sessions() as session:
                return int(session.scalar(select(func.count()).select_from(model)) or 0)
        finally:
            context.close()

    def sent(self, role: str) -> int:
        context = LedgerContext.open(self.settings)
        try:
            contract = context.meter_oracle if role == "meter_oracle" else context.price_publisher
            return int(context.rpc.call("eth_getTransactionCount", contract.sender.address, "latest"), 16)
        finally:
            context.close()


@pytest.fixture
def stack(anvil: LocalNode, tmp_path: Path) -> Iterator[Stack]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GRIDLEDGER_")}
    env |= {
        "GRIDLEDGER_RPC_URL": anvil.rpc_url,
        "GRIDLEDGER_CHAIN_ID": "31337",
        "GRIDLEDGER_DEPLOYMENT_FILE": str(tmp_path / "deployment.json"),
        "GRIDLEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
    }
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        rpc_url=anvil.rpc_url,
        deployment_file=tmp_path / "deployment.json",
        database_url=env["GRIDLEDGER_DATABASE_URL"],
    )
    deploy(settings, anvil.rpc_url)
    context = LedgerContext.open(settings)
    try:
        registry = ParticipantService(context.operator, context.sessions)
        participants = []
        for n in range(2):
            account = Account.create()
            registry.register(account.address, ParticipantKind.GENERATOR, f"licence-{n}-{account.address}")
            participants.append(account.address)
    finally:
        context.close()
    yield Stack(env, settings, participants, tmp_path)


def test_a_readings_file_is_imported_once(stack: Stack) -> None:
    alice, bob = stack.participants
    path = stack.file(
        "day.csv",
        "participant,interval_start,injected_wh,withdrawn_wh,quality\n"
        f"{alice},2030-06-01T00:00:00Z,1000,0,measured\n"
        f"{bob},{DAY},0,400,\n"
        f"{alice},2030-06-01T00:15:00+00:00,900,0,estimated\n",
    )
    before = stack.sent("meter_oracle")
    done = stack.run("import_readings", path)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(":", 1) for line in done.stdout.splitlines())
    batch_id, tx = lines["batch id"].strip(), lines["transaction"].strip()
    assert lines["readings"].strip() == "3" and "committed on chain now" in lines["status"]
    assert "3 readings" in done.stderr
    assert stack.sent("meter_oracle") == before + 1
    context = LedgerContext.open(stack.settings)
    try:
        with context.sessions() as session:
            batch = metering_queries.get_reading_batch(session, batch_id)
            assert batch is not None and (batch.transaction_hash, batch.source) == (tx, "day.csv")
            assert batch.block_number == int(lines["block"])
        assert context.meter_oracle.reading_batch(batch_id).root == lines["root"].strip()
    finally:
        context.close()

    again = stack.run("import_readings", path)
    assert again.returncode == 0, again.stderr
    assert "imported before" in again.stdout and batch_id in again.stdout
    assert stack.sent("meter_oracle") == before + 1


def test_a_bad_readings_file_exits_2_naming_rows_and_fields_and_imports_nothing(stack: Stack) -> None:
    alice, _ = stack.participants
    path = stack.file(
        "bad.csv",
        "participant,interval_start,injected_wh,withdrawn_wh\n"
        f"{alice},{DAY},1000,0\n"
        f"{alice},{DAY + Q},1.5,0\n"
        f"{alice},{DAY + 7},-3,0\n"
        f"0x{'12' * 20},{DAY},1,0\n",
    )
    done = stack.run("import_readings", path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "row 3, field injected_wh: " in done.stderr
    assert "row 4, field interval_start: " in done.stderr and "row 4, field injected_wh: " in done.stderr
    assert "row 5, field participant: " in done.stderr
    assert "nothing was imported" in done.stderr and done.stdout == ""
    assert (stack.count(ReadingBatchRow), stack.count(MeterReadingRow)) == (0, 0)
    # A JSON file names items by index; an unknown extension needs --format.
    bad_json = stack.file("bad.json", json.dumps({"readings": [{"participant": alice, "intervalStart": DAY}]}))
    done = stack.run("import_readings", bad_json)
    assert done.returncode == 2 and "row 0, field injectedWh: is missing" in done.stderr
    done = stack.run("import_readings", stack.file("day.txt", "x"))
    assert done.returncode == 2 and "--format" in done.stderr
    assert stack.count(ReadingBatchRow) == 0


def test_a_prices_file_is_imported_and_a_gap_is_refused(stack: Stack) -> None:
    rows = "\n".join(f"{DAY + i * Q},{40_000 + i}" for i in range(4))
    path = stack.file("prices.csv", f"interval_start,price_minor_per_mwh\n{rows}\n")
    done = stack.run("import_prices", path, "--period-start", "2030-06-01T00:00:00Z")
    assert done.returncode == 0, done.stderr
    assert "prices:" in done.stdout and "committed on chain now" in done.stdout
    assert stack.count(PriceBatchRow) == 1

    gap = stack.file("gap.csv", f"interval_start,price_minor_per_mwh\n{DAY},1\n{DAY + 2 * Q},1\n")
    before = stack.sent("operator")
    done = stack.run("import_prices", gap, "--period-end", str(DAY + 4 * Q))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "field prices: no price for 2 interval(s)" in done.stderr
    assert stack.sent("operator") == before and stack.count(PriceBatchRow) == 1
