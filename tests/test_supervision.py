"""The service survives the death of any of its processes (`python -m scripts.serve`, real
processes): a killed workers' process or API process is started again, /health says so
meanwhile, and no accepted trade is lost or recorded twice. A stop ends every process in time
and leaves nothing in the temporary folder; the console has the endpoints block and no line per
HTTP request; `--log-format json` writes one JSON object per line."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.chain.rpc import JsonRpc
from ledger.chain.trade_ledger import TRADE_RECORDED_TOPIC
from ledger.signing.eip712 import Domain
from ledger.signing.trader import countersigned
from tests.support.market import valid_trade
from tests.support.served import ServedProcess, served_process
from tests.support.service import signed_json, wait_for

pytestmark = pytest.mark.anvil


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedProcess]:
    with served_process(tmp_path_factory.mktemp("served"), "--api-processes", "2", "--log-format", "json") as running:
        yield running


def register(served: ServedProcess) -> LocalAccount:
    account: LocalAccount = Account.create()
    body = {"address": account.address, "kind": "prosumer", "identifier": f"GLN-{account.address[2:10]}"}
    answer = served.client.post("/participants", json=body)
    assert answer.status_code == 202, answer.text
    registration = answer.json()["links"]["self"]
    wait_for(lambda: served.client.get(registration).json()["status"] == "registered", f"{registration} registered")
    return account


def recorded_on_chain(served: ServedProcess, domain: Domain, trade_ids: set[str]) -> list[str]:
    """Every TradeRecorded event of these trades on the service's chain (one per recording)."""
    started = next(json.loads(line) for line in served.log.splitlines() if '"event": "started"' in line)
    rpc = JsonRpc(started["rpcUrl"])
    query = {
        "address": domain.verifying_contract,
        "fromBlock": "0x0",
        "toBlock": "latest",
        "topics": [TRADE_RECORDED_TOPIC],
    }
    try:
        logs = rpc.call("eth_getLogs", query)
    finally:
        rpc.close()
    return [entry["topics"][1] for entry in logs if entry["topics"][1] in trade_ids]


def test_a_killed_workers_process_is_restarted_and_no_accepted_trade_is_lost(served: ServedProcess) -> None:
    seller, buyer = register(served), register(served)
    domain_json = served.client.get("/eip712").json()["domain"]
    domain = Domain(domain_json["chainId"], domain_json["verifyingContract"])
    accepted: dict[str, str] = {}  # trade id -> submission id
    refused: list[Any] = []
    done = threading.Event()

    def submit() -> None:
        while not done.wait(0.05):
            signed = countersigned(seller, buyer, domain, valid_trade(seller, buyer, int(time.time())))
            answer = served.client.post("/trades", json=signed_json(signed))
            if answer.status_code in (200, 202):
                accepted[answer.json()["tradeId"]] = answer.json()["submissionId"]
            else:
                refused.append((answer.status_code, answer.text))

    worker = served.worker_pid()
    assert worker is not None
    submitter = threading.Thread(target=submit)
    submitter.start()
    try:
        wait_for(lambda: len(accepted) >= 20, "trades accepted before the kill")
        os.kill(worker, signal.SIGKILL)

        def restarting() -> dict[str, Any] | None:
            status, report = served.health()
            return report if status == 503 else None

        report = wait_for(restarting, "health to see the workers down", timeout=10, interval=0.02)
        assert all(not w["alive"] for w in report["workers"].values()), report

        def healthy_again() -> dict[str, Any] | None:
            status, report = served.health()
            return report if status == 200 else None

        report = wait_for(healthy_again, "the workers' process restarted", timeout=90, interval=0.2)
        restarted = {"alive": True, "state": "running", "restarts": 1}
        report["workers"]["relayer"].pop("waitingSince")  # trades are being submitted meanwhile
        assert report["workers"] == {
            "relayer": {**restarted, "stalled": False},
            **dict.fromkeys(("indexer", "registrar", "settlement"), restarted),
        }
        assert served.worker_pid() not in (None, worker)
        count = len(accepted)
        wait_for(lambda: len(accepted) >= count + 20, "trades accepted after the restart", timeout=60)
    finally:
        done.set()
        submitter.join(60)
    assert not refused

    def all_recorded() -> bool:
        statuses = [served.client.get(f"/submissions/{sid}").json()["status"] for sid in accepted.values()]
        assert "rejected" not in statuses
        return all(status == "recorded" for status in statuses)

    wait_for(all_recorded, f"all {len(accepted)} accepted trades recorded", timeout=120, interval=1)
    recorded = recorded_on_chain(served, domain, set(accepted))
    assert sorted(recorded) == sorted(accepted)  # each once: nothing lost, nothing twice
    events = [json.loads(line) for line in served.log.splitlines()]
    restarts = [e for e in events if e["logger"] == "ledger.services.supervisor" and e["level"] == "INFO"]
    assert any("workers restarted" in e["message"] for e in restarts)


def test_a_killed_api_process_is_restarted_and_serves_again(served: ServedProcess) -> None:
    before = served.api_pids()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    # The other API process answers meanwhile: both accept on the supervisor's one socket.
    assert served.health()[0] == 200

    def replaced() -> list[int] | None:
        pids = served.api_pids()
        return pids if len(pids) == 2 and before[0] not in pids else None

    after = wait_for(replaced, "a new API process", timeout=30)
    os.kill(before[1], signal.SIGKILL)  # now only the restarted one can answer
    wait_for(lambda: served.health()[0] == 200, "the restarted API process to serve", timeout=60, interval=0.2)
    assert set(after) - set(before)
    assert re.search(rf"api-\d process {before[0]} was killed by SIGKILL: restarting", served.log)


def running(pid: int) -> str | None:
    """The command of a process that runs (not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return None if state == "Z" else Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None


def test_a_stop_ends_every_process_in_time_and_leaves_no_temporary_directory(served: ServedProcess) -> None:
    children = served.children()
    assert len(children) >= 4  # anvil, the workers, two API processes
    took = served.stop()
    assert served.process.returncode == 0
    assert took < 30
    wait_for(lambda: not [pid for pid in children if running(pid)], "every child process gone", timeout=5)
    assert list(served.tmpdir.iterdir()) == []


def test_the_console_shows_the_endpoints_once_and_no_request_lines(served: ServedProcess) -> None:
    lines = served.log.splitlines()
    events = [json.loads(line) for line in lines]  # --log-format json: every line one object
    for event in events:
        assert {"time", "level", "logger", "message"} <= set(event), event
        assert event["time"].endswith("+00:00"), event
    started = [e for e in events if e.get("event") == "started"]
    assert len(started) == 1
    block = started[0]["message"]
    for name in ("API", "docs", "explorer", "chain", "database", "operator"):
        assert re.search(rf"^  {name} ", block, re.MULTILINE), block
    assert started[0]["rpcUrl"] in block
    assert not [e for e in events if e["logger"].startswith(("httpx", "httpcore")) and e["level"] == "INFO"]
    assert not [e for e in events if "HTTP Request" in e["message"]]
