"""A local development chain (Hardhat or anvil) run as a child process, and the checked connection.

Both nodes come from node_modules (`npm ci`), so nothing is downloaded at run time. They share
the standard test mnemonic, so `DEV_ACCOUNT_KEYS` hold on either.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from web3 import Web3
from web3.exceptions import Web3Exception

from ledger.chain.compiler import PROJECT_ROOT
from ledger.errors import ChainError

NodeKind = Literal["hardhat", "anvil"]
# Both node kinds get the same block gas limit (hardhat.config.js reads it from the environment):
# a second's worth of recorded trades under interval mining, 1,000 trades x 40,000 gas.
LOCAL_BLOCK_GAS_LIMIT = 100_000_000

DEV_MNEMONIC: Final = "test test test test test test test test test test test junk"
# The first 10 accounts of DEV_MNEMONIC (m/44'/60'/0'/0/i), hard-coded because deriving them runs
# a PBKDF2 per key at import time; tests/test_node.py derives them again and compares.
DEV_ACCOUNT_KEYS: Final[tuple[str, ...]] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)

_BIN = PROJECT_ROOT / "node_modules" / ".bin"
# A cold `hardhat node` needs a few seconds on a 2-core machine; anvil well under one.
READY_TIMEOUT_S: Final = 60.0
_STOP_GRACE_S: Final = 5.0
_LOG_TAIL_BYTES: Final = 4000


class LocalNode:
    """One node process on `host:port`; automining unless `block_time` (seconds) is given.

    `with LocalNode(...) as node:` starts it and waits until it answers; `stop()` ends the whole
    process group and reaps it. Without `log_path` the output goes to a temporary file that is
    deleted on stop (its tail is in any ChainError raised while waiting).

    With `state_path` (anvil only) the chain outlives the process: anvil loads the file when it
    starts and writes its chain (blocks, receipts, accounts; not its mempool) there when stopped,
    so `stop()` then `start()` is a restart of the same chain on the same port.
    """

    def __init__(
        self,
        kind: NodeKind = "hardhat",
        *,
        chain_id: int = 31337,
        port: int | None = None,
        block_time: float | None = None,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        state_path: Path | None = None,
    ) -> None:
        if kind not in ("hardhat", "anvil"):
            raise ValueError(f"unknown node kind {kind!r}")
        if state_path is not None and kind != "anvil":
            raise ValueError("only anvil keeps its chain in a state file")
        if block_time is not None and block_time <= 0:
            raise ValueError(f"block_time must be positive, got {block_time}")
        self.kind = kind
        self.chain_id = chain_id
        self.host = host
        self.port = port or _free_port(host)
        self.block_time = block_time
        self.state_path = state_path
        self._log_path = log_path
        self._owns_log = log_path is None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> LocalNode:
        if self._process is not None:
            raise ChainError(f"{self.kind} node on {self.rpc_url} is already started")
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"gridledger-{self.kind}-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        # The child keeps its own copy of the log descriptor, so ours can close right away.
        with self._log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                cwd=PROJECT_ROOT,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so stop() reaches anything the node spawns and a Ctrl-C
                # meant for the caller does not kill the node half-way.
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Polls eth_chainId until the node answers with `chain_id`."""
        if self._process is None:
            raise ChainError(f"{self.kind} node on {self.rpc_url} was never started")
        deadline = time.monotonic() + timeout
        while True:
            code = self._process.poll()
            if code is not None:
                raise self._error(f"exited with code {code} before answering")
            answered = _chain_id(self.rpc_url)
            if answered == self.chain_id:
                return
            if answered is not None:
                # Most likely another node grabbed the port between _free_port() and our bind.
                raise self._error(f"answered chain id {answered}, expected {self.chain_id}")
            if time.monotonic() >= deadline:
                raise self._error(f"did not answer within {timeout:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        if self._owns_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def __enter__(self) -> LocalNode:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _command(self) -> list[str]:
        if self.kind == "hardhat":
            return [str(_BIN / "hardhat"), "node", "--hostname", self.host, "--port", str(self.port)]
        command = [str(_BIN / "anvil"), "--host", self.host, "--port", str(self.port)]
        command += ["--chain-id", str(self.chain_id), "--gas-limit", str(LOCAL_BLOCK_GAS_LIMIT)]
        if self.block_time is not None:
            command += ["--block-time", f"{self.block_time:g}"]
        if self.state_path is not None:
            command += ["--state", str(self.state_path)]
        return command

    def _env(self) -> dict[str, str]:
        # hardhat.config.js reads these; set or removed explicitly so the caller's own
        # environment cannot switch the mining mode behind our back.
        env = dict(
            os.environ,
            GRIDLEDGER_CHAIN_ID=str(self.chain_id),
            GRIDLEDGER_BLOCK_GAS_LIMIT=str(LOCAL_BLOCK_GAS_LIMIT),
        )
        env.pop("GRIDLEDGER_BLOCK_TIME_MS", None)
        if self.block_time is not None:
            env["GRIDLEDGER_BLOCK_TIME_MS"] = str(max(1, round(self.block_time * 1000)))
        return env

    def _error(self, what: str) -> ChainError:
        return ChainError(
            f"{self.kind} node on {self.rpc_url} {what}; last output:\n{self._log_tail()}",
            kind=self.kind,
            rpc_url=self.rpc_url,
            log_path=str(self._log_path),
        )

    def _log_tail(self) -> str:
        if self._log_path is None or not self._log_path.exists():
            return "(no log)"
        with self._log_path.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            return log.read().decode("utf-8", "replace").strip() or "(empty log)"


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends it SIGTERM when its parent dies, so a node
    outlives neither a killed caller nor one that a signal ended without running `stop()`
    (uvicorn re-raises SIGTERM after its graceful shutdown). Linux ties this to the thread that
    started the node: start nodes from a thread that lives as long as they should."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def connect(rpc_url: str, expected_chain_id: int, *, timeout: float = 10) -> Web3:
    """A Web3 for `rpc_url`, refused unless the node is on `expected_chain_id`.

    Checking the chain id up front stops a ledger configured for one chain from signing and
    sending to another (EIP-155 signatures would fail there, but reads would silently not).
    """
    web3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    try:
        actual = web3.eth.chain_id
    except (OSError, Web3Exception) as exc:
        raise ChainError(f"node at {rpc_url} did not answer eth_chainId: {exc}", rpc_url=rpc_url) from exc
    if actual != expected_chain_id:
        raise ChainError(
            f"node at {rpc_url} is on chain id {actual}, expected chain id {expected_chain_id}",
            rpc_url=rpc_url,
            expected_chain_id=expected_chain_id,
            actual_chain_id=actual,
        )
    return web3


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _chain_id(rpc_url: str) -> int | None:
    """The node's chain id, or None while it is not answering yet."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
    request = urllib.request.Request(rpc_url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(json.load(response)["result"], 16)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # The group is gone if the node already exited on its own.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
