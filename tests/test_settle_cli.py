"""scripts/settle.py as an operator runs it: a subprocess with its settings in the environment,
against a real chain and index prepared by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.chain.compiler import PROJECT_ROOT
from ledger.chain.node import LocalNode
from ledger.domain.units import INTERVAL_SECONDS, to_datetime
from tests.test_settlement_service import World, new_world, two_intervals

TIMEOUT = 120


@pytest.fixture
def world(anvil: LocalNode, database_url: str, tmp_path: Path) -> Iterator[World]:
    with new_world(anvil.rpc_url, database_url, tmp_path) as created:
        yield created


def environment(world: World) -> dict[str, str]:
    settings = world.context.settings
    return dict(
        os.environ,
        GRIDLEDGER_ENVIRONMENT="local",
        GRIDLEDGER_RPC_URL=world.context.rpc.url,
        GRIDLEDGER_CHAIN_ID=str(settings.chain_id),
        GRIDLEDGER_DATABASE_URL=settings.database_url,
        GRIDLEDGER_DEPLOYMENT_FILE=str(settings.deployment_file),
    )


def settle(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.settle", *args],
        env=env or dict(os.environ, GRIDLEDGER_RPC_URL="http://127.0.0.1:9"),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def iso(unix_seconds: int) -> str:
    return to_datetime(unix_seconds).isoformat()


def fields(stdout: str) -> dict[str, str]:
    """The run printed at the end: `label value` lines."""
    found = {}
    for line in stdout.splitlines():
        label, _, value = line.partition(" ")
        if label in ("run", "version", "root", "inputsHash", "lines", "totals", "tx", "block"):
            found[label] = value.strip()
    return found


def test_settles_once_and_prints_the_existing_run_when_run_again(world: World) -> None:
    start, end = two_intervals(world).period
    env, nonce = environment(world), world.settler_nonce()

    first = settle("--from", iso(start), "--to", iso(end), env=env)
    assert first.returncode == 0, first.stderr
    for step in ("gathering inputs", "computing", "building the tree", "writing lines", "committing", "done"):
        assert f"- {step}" in first.stdout
    [run] = world.settlement.list_runs()
    printed = fields(first.stdout)
    assert printed["run"] == run.run_id and printed["root"] == run.root and printed["inputsHash"] == run.inputs_hash
    assert printed["version"].startswith("1 (committed; committed now)")
    assert printed["tx"] == run.transaction_hash and printed["block"] == str(run.block_number)
    assert printed["lines"] == str(run.line_count)
    assert world.settler_nonce() == nonce + 1

    again = settle("--from", iso(start), "--to", iso(end), env=env)
    assert again.returncode == 0, again.stderr
    assert "unchanged inputs" in again.stdout and fields(again.stdout)["run"] == run.run_id
    assert world.settler_nonce() == nonce + 1  # nothing committed


@pytest.mark.parametrize("step", ["- writing lines", "- committing"])
def test_killed_during_a_run_the_next_invocation_finishes_it(world: World, step: str) -> None:
    start, end = two_intervals(world).period
    env, nonce = environment(world), world.settler_nonce()
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.settle", "--from", iso(start), "--to", iso(end)],
        env=env,
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(step):
                process.send_signal(signal.SIGKILL)
                break
    finally:
        process.kill()
        process.wait(timeout=TIMEOUT)
    assert process.returncode == -signal.SIGKILL

    again = settle("--from", iso(start), "--to", iso(end), env=env)
    assert again.returncode == 0, again.stderr
    [run] = world.settlement.list_runs()
    assert fields(again.stdout)["run"] == run.run_id and run.version == 1
    assert len(world.commit_logs(run.run_id)) == 1
    assert world.settler_nonce() == nonce + 1
    assert world.line_rows(run.run_id) == run.line_count


def test_a_refused_settlement_exits_1_naming_the_intervals_without_a_price(world: World) -> None:
    g, r = world.participant(), world.participant()
    start, end = world.future_period(3)
    world.record(g, r, start, end, 100_000, 40_000)
    world.advance_past(end)
    refused = settle("--from", iso(start), "--to", iso(end), env=environment(world))
    assert refused.returncode == 1
    assert "intervals without a reference price" in refused.stderr
    assert f"{iso(start)} .. {iso(end - INTERVAL_SECONDS)} (3 intervals)" in refused.stderr
    assert world.settlement.list_runs() == []


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        ((), "--day"),
        (("--day", "2026-02-30"), "--day"),
        (("--day", "2026-02-01", "--to", "2026-02-02T00:00:00+00:00"), "--to"),
        (("--from", "2026-02-01T00:00:00+00:00"), "--to"),
        (("--from", "2026-02-01T00:00:00", "--to", "2026-02-02T00:00:00+00:00"), "--from"),
        (("--from", "2026-02-01T00:05:00+00:00", "--to", "2026-02-02T00:00:00+00:00"), "--from"),
        (("--from", "2026-02-01T00:00:00+00:00", "--to", "2026-02-01T00:00:00+00:00"), "--to"),
        (("--from", "yesterday", "--to", "2026-02-01T00:00:00+00:00"), "--from"),
        (("--day", "2026-02-01", "--from", "2026-02-01T00:00:00+00:00"), "--from"),
        (("--day", "2026-02-01", "--weekday", "monday"), "--weekday"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(args: tuple[str, ...], flag: str) -> None:
    answer = settle(*args)
    assert answer.returncode == 2, answer.stdout + answer.stderr
    assert flag in answer.stderr


def test_a_day_is_its_96_intervals(world: World) -> None:
    """--day settles [00:00, 24:00) UTC; the index check refuses a day that is not over yet."""
    today = to_datetime(world.now()).date().isoformat()
    answer = settle("--day", today, env=environment(world))
    assert answer.returncode == 1
    assert "settling " + today + "T00:00:00+00:00" in answer.stdout and "(96 intervals)" in answer.stdout
    assert "index_behind_period" in answer.stderr
