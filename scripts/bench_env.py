"""The facts a benchmark's figures depend on, printed before them by every `scripts/bench_*.py`:
when (UTC), on what machine (cores, memory, CPU model, load at the start), at which commit (and
whether the working tree differed from it) and with which command, so that a figure copied into
the README can be dated, placed and reproduced:

    date:    2026-12-06T03:40:12Z
    machine: 2 cores, 23.4 GiB memory, AMD EPYC; Linux 6.1.0, Python 3.11.9; load 0.42 at start
    commit:  0142be1 (clean)
    command: python -m scripts.bench_record --trades 3000
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ledger.config import PROJECT_ROOT


@dataclass(frozen=True)
class BenchEnvironment:
    date: datetime
    cores: int
    memory_bytes: int | None
    cpu_model: str
    system: str
    load: float | None
    commit: str | None
    dirty: bool
    command: str

    def lines(self) -> list[str]:
        memory = "memory unknown" if self.memory_bytes is None else f"{self.memory_bytes / 2**30:.1f} GiB memory"
        load = "" if self.load is None else f"; load {self.load:.2f} at start"
        if self.commit is None:
            commit = "unknown (not a git checkout)"
        else:
            commit = f"{self.commit} ({'with uncommitted changes' if self.dirty else 'clean'})"
        return [
            f"date:    {self.date.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            f"machine: {self.cores} cores, {memory}, {self.cpu_model}; {self.system}{load}",
            f"commit:  {commit}",
            f"command: {self.command}",
        ]


def collect(module: str, argv: Sequence[str] | None = None, root: Path = PROJECT_ROOT) -> BenchEnvironment:
    """The environment of `python -m <module> <argv>` (argv: the process's arguments by default)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    commit, dirty = _git_state(root)
    return BenchEnvironment(
        date=datetime.now(UTC),
        cores=os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        cpu_model=_cpu_model(),
        system=f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        load=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        commit=commit,
        dirty=dirty,
        command=shlex.join(["python", "-m", module, *arguments]),
    )


def print_header(module: str, argv: Sequence[str] | None = None) -> None:
    """The environment on stdout, first: the figures follow it on the same stream."""
    for line in collect(module, argv).lines():
        print(line)
    print(flush=True)


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU model unknown"


def _git_state(root: Path) -> tuple[str | None, bool]:
    """The short commit of the checkout and whether tracked files differ from it."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, False
    return commit, bool(status.strip())
