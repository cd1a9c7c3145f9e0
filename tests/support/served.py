"""`python -m scripts.serve` as a real process tree, for tests that kill its processes: the
supervising process, its local anvil, its API processes and its workers' process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from ledger.chain.compiler import PROJECT_ROOT
from ledger.config import LOCAL_OPERATOR_TOKEN
from tests.support.service import wait_for

START_TIMEOUT = 180.0


@dataclass
class ServedProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    tmpdir: Path  # the service's TMPDIR: its own temporary files, and only those, are there
    client: httpx.Client  # with the local operator token

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def children(self) -> list[int]:
        """The supervising process's child processes, by pid (from /proc)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                found.append(int(stat.parent.name))
        return found

    def worker_pid(self) -> int | None:
        """The workers' process, as its status file names it."""
        for path in self.tmpdir.glob("gridledger-*/workers.json"):
            try:
                return int(json.loads(path.read_text())["pid"])
            except (OSError, ValueError, KeyError):
                return None
        return None

    def api_pids(self) -> list[int]:
        """The API processes: the spawned children other than the workers' process."""
        worker = self.worker_pid()
        pids = []
        for pid in self.children():
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in command and pid != worker:
                pids.append(pid)
        return pids

    def health(self) -> tuple[int, dict[str, object] | None]:
        """On a new connection: a kept-alive one may belong to an API process a test killed."""
        try:
            answer = httpx.get(f"{self.base_url}/health", timeout=5)
        except httpx.HTTPError:
            return 0, None
        return answer.status_code, answer.json()

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM, then waits for the exit; returns the seconds the stop took."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout)
        return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served_process(workdir: Path, *args: str) -> Iterator[ServedProcess]:
    """`python -m scripts.serve --node anvil --port <free> *args` with its index, deployment and
    temporary files under `workdir`; yields once /health answers 200; stops it at the end."""
    tmpdir = workdir / "tmp"
    tmpdir.mkdir()
    port = free_port()
    env = dict(
        os.environ,
        TMPDIR=str(tmpdir),
        GRIDLEDGER_DATABASE_URL=f"sqlite:///{workdir / 'gridledger.db'}",
        GRIDLEDGER_DEPLOYMENT_FILE=str(workdir / "deployment.json"),
        GRIDLEDGER_RELAYER_BATCH_WINDOW_MS="20",
        GRIDLEDGER_RATE_LIMIT_PER_SECOND="0",
        GRIDLEDGER_TOKEN_RATE_LIMIT_PER_SECOND="0",
    )
    env.pop("GRIDLEDGER_RPC_URL", None)
    log_path = workdir / "service.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scripts.serve", "--node", "anvil", "--port", str(port), *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {LOCAL_OPERATOR_TOKEN}"}
    with httpx.Client(base_url=base_url, timeout=60, headers=headers) as client:
        served = ServedProcess(process, base_url, log_path, tmpdir, client)
        try:
            wait_for(
                lambda: served.health()[0] == 200 or process.poll() is not None,
                "the service to start",
                timeout=START_TIMEOUT,
                interval=0.5,
            )
            assert process.poll() is None, f"the service exited with {process.returncode}:\n{served.log}"
            yield served
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()  # its children stop when their pipes to it close
                    process.wait()
