"""The auditors' explorer (`/explorer`): its files, its in-browser Merkle verification against
@openzeppelin/merkle-tree, and the page end to end in headless Chromium over the running service
on anvil with a settled run. The browser test needs Debian's `chromium` (`.ci/run` installs it):
it fails when Chromium is missing, and can be deselected locally with `-m "not browser"`.
GRIDLEDGER_EXPLORER_SCREENSHOTS=<folder> keeps a screenshot of each step."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api import explorer
from ledger.chain.compiler import PROJECT_ROOT
from ledger.chain.node import LocalNode
from ledger.domain.units import INTERVAL_SECONDS
from tests.support.service import RunningService, running_service
from tests.test_api_settlement import Market

CHROMIUM = "/usr/bin/chromium"
E2E_SCRIPT = PROJECT_ROOT / "tests" / "js" / "explorer_e2e.js"

# The page's verifier next to the reference library, over leaves of every settlement line kind.
_PARITY = """
globalThis.window = globalThis;
globalThis.JS_SHA3_NO_NODE_JS = true;
globalThis.JS_SHA3_NO_COMMON_JS = true;
const { verify } = await import(process.argv[1]);
const { StandardMerkleTree } = (await import('node:module')).createRequire(process.cwd() + '/')(
  '@openzeppelin/merkle-tree');
const encoding = ['bytes32', 'address', 'uint8', 'bytes32', 'int256', 'int256'];
const values = [1, 2, 3, 9, 1, 2, 3].map((kind, i) => [
  '0x' + 'ab'.repeat(32), '0x' + (i + 1).toString(16).padStart(40, '0'), String(kind),
  '0x' + i.toString(16).padStart(64, '0'), String(-123456789 * i), String(BigInt(i) * 10n ** 30n)]);
const tree = StandardMerkleTree.of(values, encoding);
const results = values.map((v, i) => {
  const r = verify(tree.root, encoding, v, tree.getProof(i));
  return r.verified && r.leaf === tree.leafHash(v);
});
const changed = [...values[0].slice(0, 5), String(BigInt(values[0][5]) + 1n)];
results.push(verify(tree.root, encoding, changed, tree.getProof(0)).verified);
process.stdout.write(JSON.stringify(results));
"""


def test_the_vendored_keccak_is_the_pinned_npm_file() -> None:
    vendored = explorer.STATIC_DIR / "vendor" / "sha3.min.js"
    assert vendored.read_bytes() == (PROJECT_ROOT / "node_modules" / "js-sha3" / "build" / "sha3.min.js").read_bytes()
    assert json.loads((PROJECT_ROOT / "package.json").read_text())["devDependencies"]["js-sha3"] == "0.8.0"


def test_the_page_verifier_agrees_with_openzeppelin_merkle_tree() -> None:
    done = subprocess.run(
        ["node", "--input-type=module", "-e", _PARITY, str(explorer.STATIC_DIR / "merkle.js")],
        capture_output=True,
        text=True,
        check=True,
        cwd=PROJECT_ROOT,
    )
    assert json.loads(done.stdout) == [True] * 7 + [False]


@pytest.fixture
def api(anvil: LocalNode, tmp_path: Path) -> Iterator[RunningService]:
    with running_service(anvil.rpc_url, f"sqlite:///{tmp_path / 'gridledger.db'}", tmp_path) as running:
        yield running


def test_the_service_serves_the_explorer_files(api: RunningService) -> None:
    page = api.client.get("/explorer/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text
    for name in ("app.js", "merkle.js", "vendor/sha3.min.js"):
        script = api.client.get(f"/explorer/{name}")
        assert script.status_code == 200 and "javascript" in script.headers["content-type"], name
    assert api.client.get("/explorer/style.css").headers["content-type"].startswith("text/css")
    assert api.client.get("/explorer/nothing.js").status_code == 404


@pytest.mark.browser
def test_an_auditor_traces_a_trade_and_verifies_a_line_in_the_browser(api: RunningService) -> None:
    if not Path(CHROMIUM).is_file() or shutil.which("node") is None:
        pytest.fail(
            f"the explorer test needs Chromium at {CHROMIUM} (apt-get install -y chromium) and Node; "
            'deselect it locally with -m "not browser"'
        )
    market = Market(api)
    market.close_period()
    market.import_inputs()
    run = api.settle(market.period)["run"]
    run_id = run["runId"]
    trade = api.wait_indexed(f"/trades/{market.trade_id}")
    day = datetime.fromtimestamp(market.start, UTC).date()
    day_start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())

    started = time.monotonic()
    done = subprocess.run(
        [
            "node",
            str(E2E_SCRIPT),
            json.dumps(
                {
                    "baseUrl": str(api.client.base_url).rstrip("/"),
                    "auditorToken": api.auditor_token,
                    "tradeId": market.trade_id,
                    "account": market.r.address,
                    "runId": run_id,
                    "kind": "total",
                    "day": day.isoformat(),
                    "executablePath": CHROMIUM,
                    "screenshotDir": os.environ.get("GRIDLEDGER_EXPLORER_SCREENSHOTS"),
                }
            ),
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=180,
    )
    assert done.returncode == 0, (
        f"explorer_e2e.js failed ({done.returncode}) in {time.monotonic() - started:.1f} s:\n{done.stderr}"
    )
    seen = json.loads(done.stdout)

    # What the page showed, against the API's own answers to the same questions.
    history = api.client.get(f"/trades/{market.trade_id}/history").json()
    events = history["events"]
    recorded = trade["provenance"]
    assert [e["kind"] for e in events] == seen["trade"]["events"] == ["recorded", "settled"]
    assert seen["trade"]["eventTradeIds"] == [e["tradeId"] for e in events]
    assert seen["trade"]["blockNumbers"] == [e["blockNumber"] for e in events]
    assert seen["trade"]["transactionHashes"] == [e["transactionHash"] for e in events]
    assert (events[0]["blockNumber"], events[0]["transactionHash"]) == (
        recorded["blockNumber"],
        recorded["transactionHash"],
    )
    assert seen["trade"]["jsonLink"] == f"/trades/{market.trade_id}"
    assert seen["trade"]["lineage"] == history["lineage"] == [market.trade_id]
    settled = events[1]
    assert settled["runId"] == run_id and settled["transactionHash"] == run["commit"]["transactionHash"]
    assert seen["trade"]["settled"] == [
        {
            "runId": run_id,
            "runVersion": settled["runVersion"],
            "runStatus": settled["runStatus"],
            "lines": [
                {
                    "account": line["account"],
                    "kindName": line["kindName"],
                    "energyWh": line["energyWh"],
                    "amountMinor": line["amountMinor"],
                    "proof": f"#/proof/{run_id}/{line['account']}/{line['kind']}/{line['ref']}",
                }
                for line in settled["lines"]
            ],
        }
    ]
    assert {(line["account"], line["kindName"]) for line in settled["lines"]} == {
        (market.g.address, "trade"),
        (market.r.address, "trade"),
    }
    # "Verify against the chain" on the trade page: the server's report, every check a match.
    verification = api.client.get(f"/verify/trades/{market.trade_id}").json()
    assert verification["verdict"] == "match" and all(check["match"] for check in verification["checks"])
    assert seen["tradeVerification"] == {
        "verdict": "match",
        "checks": [[check["field"], "match"] for check in verification["checks"]],
    }
    # The recorded event's links: the transaction and its block as the node has them.
    assert seen["transaction"]["hash"] == f"#/tx/{recorded['transactionHash']}"
    assert seen["transaction"]["status"] == "succeeded"
    assert {"logIndex": recorded["logIndex"], "event": "TradeRecorded", "tradeId": market.trade_id} in seen[
        "transaction"
    ]["logs"]
    assert seen["block"] == {"hash": f"#/block/{recorded['blockNumber']}", "blockHash": recorded["blockHash"]}
    # The settled event's line of the retailer: verified in the browser, then by the server.
    line = next(line for line in settled["lines"] if line["account"] == market.r.address)
    line_path = f"{run_id}/lines/{line['account']}/{line['kind']}/{line['ref']}"
    line_verification = api.client.get(f"/verify/settlement-runs/{line_path}").json()
    assert line_verification["verdict"] == "match"
    assert seen["settledLine"] == {
        "hash": f"#/proof/{run_id}/{line['account']}/{line['kind']}/{line['ref']}",
        "browser": {"verified": True, "text": f"verified against root {run['root']}"},
        "server": {"verdict": "match", "checks": [[check["field"], "match"] for check in line_verification["checks"]]},
    }
    assert "total" in seen["statementKinds"] and "trade" in seen["statementKinds"]
    assert seen["verified"] == {"verified": True, "text": f"verified against root {run['root']}"}
    assert seen["tampered"]["verified"] is False and seen["tampered"]["text"].startswith("NOT verified")
    delivered = range(market.start, market.end, INTERVAL_SECONDS)
    bars = [400_000 if day_start + i * INTERVAL_SECONDS in delivered else 0 for i in range(96)]
    # The chart is public market data: the same with and without a token; the trade list is not.
    assert seen["chart"]["bars"] == seen["publicDay"]["bars"] == bars
    assert seen["publicDay"]["tradesNeedToken"]
    assert seen["chart"]["hasPriceLine"]
    # Chromium logs the one refused request (the trade without a token) as a console error.
    refused = [e for e in seen["errors"] if "status of 401" in e]
    assert len(refused) == 1 and [e for e in seen["errors"] if e not in refused] == []
    assert seen["foreignRequests"] == []
