"""Every benchmark runs as the README shows it, at a small size: a subprocess that must exit 0,
print the environment header of scripts/bench_env.py and figures that parse (rates, times, the
ratios the README quotes). A rate limit, a renamed flag or a settlement that refuses its inputs
then fails here instead of in a reader's hands. The benchmarks run with tight rate limits in their
environment: the service of a benchmark measures throughput and must run with its limits off.

A new `scripts/bench_*.py` gets a row in BENCHES (test_every_bench_script_is_run fails until it
has one): its small-size arguments (`{tmp}` is the test's temporary directory, `{pid}` the test
process's id), what it needs on PATH, and the lines its output must hold, each a regex whose
groups are figures (numbers, commas allowed) that must be finite and >= 0.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.config import PROJECT_ROOT
from scripts.bench_env import collect

NUMBER = r"(\d[\d,]*(?:\.\d+)?)"


@dataclass(frozen=True)
class Expect:
    pattern: str
    count: int = 1  # matching lines at least


@dataclass(frozen=True)
class Bench:
    script: str  # scripts/<script>.py
    args: tuple[str, ...]
    expect: tuple[Expect, ...]
    needs: tuple[str, ...] = ()  # "executable: how to install it"
    timeout: float = 300  # against a hang only: the runs take 5-90 s on a busy 2-core machine


def _bench_api_row(database: str) -> Expect:
    # database, case; connections, req/s, p50, p99, three ratios to health; no errors
    figures = r"\s+".join([NUMBER] * 7)
    return Expect(rf"^{database}\s+(?:health|by id|list|window)\s+{figures}\s+0\s", count=4)


BENCHES = (
    Bench(
        "bench_record",
        ("--trades", "400", "--baseline-trades", "40", "--http-trades", "200", "--participants", "20"),
        (
            Expect(rf"^baseline: one trade per tx\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$"),
            Expect(rf"^ledger layer: batches of 200\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$"),
            Expect(rf"^http: POST /trades/batch\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$"),
            Expect(rf"^http: POST /trades x 8 clients\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$"),
            Expect(rf"^gas per trade in one full batch of 200: {NUMBER}$"),
            Expect(r"^HTTP runs: the service's rate limits are off"),
        ),
    ),
    Bench(
        "bench_cancellations",
        ("--cancellations", "30", "--baseline-cancellations", "10", "--participants", "6"),
        (
            Expect(rf"^baseline: one cancelTrade per tx\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$"),
            Expect(rf"^http: POST /trades/cancel/batch\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$"),
            Expect(r"^HTTP runs: the service's rate limits are off"),
        ),
    ),
    Bench(
        "bench_registrations",
        ("--small",),
        (
            Expect(rf"^baseline: one registerParticipant per tx\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x"),
            Expect(rf"^http: POST /participants/batch\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x"),
            Expect(rf"^http: POST /participants x 8 clients\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x"),
            Expect(r"^HTTP runs: the service's rate limits are off"),
        ),
    ),
    Bench(
        "bench_settle",
        ("--participants", "20", "--trades", "300"),
        (
            Expect(rf"^  whole run\s+{NUMBER} s$"),
            Expect(rf"^  Merkle tree\s+{NUMBER} s$"),
            Expect(rf"^  commit gas\s+{NUMBER}$"),
            Expect(r"^  commit transactions 1 \(the second, unchanged run: unchanged\)$"),
            Expect(rf"^whole run {NUMBER} s: under the 60 s target$"),
        ),
    ),
    Bench(
        "bench_settle_engine",
        ("--participants", "50", "--trades", "500"),
        (
            Expect(rf"^(?:settle|tree|proofs|dump)\s+{NUMBER} s$", count=4),
            Expect(rf"^{NUMBER} trades, {NUMBER} readings -> {NUMBER} positions"),
        ),
    ),
    Bench(
        "bench_reindex",
        ("--trades", "2000", "--participants", "20"),
        (
            Expect(rf"^reindex into SQLite: {NUMBER} blocks, {NUMBER} events in {NUMBER} s$"),
            Expect(rf"^{NUMBER} events/s \(2,000 trades indexed\)$"),
            Expect(rf"^verify against the chain: {NUMBER} s, {NUMBER} events/s$"),
        ),
    ),
    Bench(
        "bench_api",
        (
            "--database",
            "both",
            "--trades",
            "3000",
            "--participants",
            "20",
            "--clients",
            "4",
            "--seconds",
            "1",
            "--workdir",
            "{tmp}",
            "--postgres-database",
            "gridledger_bench_api_{pid}",
        ),
        (_bench_api_row("sqlite"), _bench_api_row("postgres"), Expect(r"^the service's rate limits are off")),
        needs=("wrk: make test installs it (Debian: apt-get install wrk)",),
    ),
)

# Tighter than the defaults, so that a benchmark whose service kept its rate limits fails at any
# size and on any machine, not only when the full-size load outruns the default limit.
TIGHT_RATE_LIMITS = {
    "GRIDLEDGER_RATE_LIMIT_PER_SECOND": "1",
    "GRIDLEDGER_RATE_LIMIT_BURST": "1",
    "GRIDLEDGER_TOKEN_RATE_LIMIT_PER_SECOND": "1",
    "GRIDLEDGER_TOKEN_RATE_LIMIT_BURST": "1",
}

HEADER = (
    r"^date:    \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$",
    rf"^machine: {NUMBER} cores, {NUMBER} GiB memory, .+$",
    r"^commit:  (?:[0-9a-f]{7,} \((?:clean|with uncommitted changes)\)|unknown \(not a git checkout\))$",
)


def test_every_bench_script_is_run() -> None:
    scripts = {path.stem for path in (PROJECT_ROOT / "scripts").glob("bench_*.py")} - {"bench_env"}
    assert scripts - {bench.script for bench in BENCHES} == set(), "add a row to BENCHES for each new benchmark"


@pytest.mark.parametrize("bench", BENCHES, ids=lambda bench: bench.script)
def test_a_benchmark_runs_at_a_small_size(bench: Bench, tmp_path: Path) -> None:
    for need in bench.needs:
        executable = need.split(":")[0]
        if shutil.which(executable) is None:
            pytest.fail(f"{bench.script} needs {need}")
    args = [arg.format(tmp=tmp_path, pid=os.getpid()) for arg in bench.args]
    done = subprocess.run(
        [sys.executable, "-m", f"scripts.{bench.script}", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **TIGHT_RATE_LIMITS},
        capture_output=True,
        text=True,
        timeout=bench.timeout,
    )
    output = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{output}\n{done.stderr[-3000:]}"

    for pattern in HEADER:
        assert re.search(pattern, output, re.MULTILINE), f"no header line {pattern!r} in\n{output}"
    command = "command: " + shlex.join(["python", "-m", f"scripts.{bench.script}", *args])
    assert command in output.splitlines(), output
    for expect in bench.expect:
        found = list(re.finditer(expect.pattern, output, re.MULTILINE))
        assert len(found) >= expect.count, f"{expect.pattern!r} matched {len(found)} lines of\n{output}"
        for match in found:
            for figure in match.groups():
                value = float(figure.replace(",", ""))
                assert math.isfinite(value) and value >= 0, match[0]


def test_the_header_names_the_commit_says_when_the_tree_differs_and_quotes_the_command(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    (tmp_path / "a.txt").write_text("one\n")
    git("add", "a.txt")
    git("-c", "user.name=bench", "-c", "user.email=bench@example.org", "commit", "-q", "-m", "one")
    commit = git("rev-parse", "--short", "HEAD").strip()
    (tmp_path / "untracked.txt").write_text("not part of the tree\n")

    clean = collect("scripts.bench_x", ["--name", "two words"], root=tmp_path)
    (tmp_path / "a.txt").write_text("two\n")
    dirty = collect("scripts.bench_x", [], root=tmp_path)
    elsewhere = collect("scripts.bench_x", [], root=tmp_path / "missing")

    assert clean.lines()[2:] == [f"commit:  {commit} (clean)", "command: python -m scripts.bench_x --name 'two words'"]
    assert dirty.lines()[2] == f"commit:  {commit} (with uncommitted changes)"
    assert elsewhere.lines()[2] == "commit:  unknown (not a git checkout)"
    for line, pattern in zip(clean.lines(), HEADER, strict=False):
        assert re.search(pattern, line), line
