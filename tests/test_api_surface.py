"""The API's surface: OpenAPI and docs, EIP-712 for wallets, health, and that no input - however
malformed - ever gets a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import problems
from ledger import errors
from ledger.chain.rpc import JsonRpc
from ledger.domain.trade import DEFAULT_TRADE_LIMITS
from tests.support.service import RunningService, anvil_service, iso, serve, trade_json, wait_for

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with anvil_service(tmp_path_factory.mktemp("api-surface")) as running:
        yield running


# --- OpenAPI and docs -------------------------------------------------------------------------


def test_the_openapi_schema_loads_with_an_operation_id_everywhere(api: RunningService) -> None:
    answer = api.client.get("/openapi.json")
    assert answer.status_code == 200
    schema = answer.json()
    operations = [op for path in schema["paths"].values() for op in path.values()]
    ids = [op.get("operationId") for op in operations]
    assert all(ids) and len(set(ids)) == len(ids)
    assert set(ids) >= {
        "submitTrade",
        "submitTradeBatch",
        "getSubmission",
        "getTrade",
        "listTrades",
        "cancelTrade",
        "listParticipants",
        "getParticipant",
        "registerParticipant",
        "suspendParticipant",
        "reinstateParticipant",
        "getEip712",
        "buildTradeTypedData",
        "getHealth",
    }
    # Every $ref resolves, and problems are documented under their own media type.
    text = json.dumps(schema)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        assert ref.removeprefix("#/components/schemas/") in schema["components"]["schemas"], ref
    submit = schema["paths"]["/trades"]["post"]["responses"]
    assert PROBLEM in submit["422"]["content"] and "application/json" not in submit["422"]["content"]
    register = schema["paths"]["/participants"]["post"]
    assert register["security"] == [{"BearerToken": []}]
    # Non-public reads declare the bearer token; public ones do not.
    assert schema["paths"]["/trades/{tradeId}"]["get"]["security"] == [{"BearerToken": []}]
    assert "security" not in schema["paths"]["/market/intervals"]["get"]
    assert "security" not in schema["paths"]["/participants"]["get"]
    docs = api.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# --- EIP-712 for wallets ----------------------------------------------------------------------


def test_the_eip712_domain_is_the_deployed_contract(api: RunningService) -> None:
    eip712 = api.client.get("/eip712").json()
    assert eip712["domain"] == {
        "name": "GridLedger",
        "version": "1",
        "chainId": 31337,
        "verifyingContract": api.market.address,
    }
    assert eip712["primaryTypes"] == ["Trade", "CancelTrade"]
    assert [f["name"] for f in eip712["types"]["Trade"]][-3:] == ["nonce", "deadline", "replaces"]
    assert eip712["types"]["CancelTrade"] == [
        {"name": "tradeId", "type": "bytes32"},
        {"name": "deadline", "type": "uint64"},
    ]


def test_typed_data_from_the_api_hashes_to_the_contracts_trade_id(api: RunningService) -> None:
    seller, buyer = api.register(), api.register()
    trade = api.trade(seller, buyer, nonce=2**200 + 7)  # beyond JSON numbers' exact range
    answer = api.client.post("/eip712/trade", json=trade_json(trade))
    assert answer.status_code == 200, answer.text
    document = answer.json()["typedData"]
    assert document["message"]["nonce"] == str(2**200 + 7)
    assert document["message"]["deliveryStart"] == trade.delivery_start
    assert set(document["types"]) == {"EIP712Domain", "Trade"}
    # What a wallet computes from the JSON is the contract's id of the trade.
    signable = encode_typed_data(full_message=json.loads(json.dumps(document)))
    digest = keccak(b"\x19" + signable.version + signable.header + signable.body)
    assert "0x" + digest.hex() == answer.json()["tradeId"] == api.market.ledger("outsider").hash_trade(trade)

    signatures = {
        "sellerSignature": "0x" + bytes(Account.sign_typed_data(seller.key, full_message=document).signature).hex(),
        "buyerSignature": "0x" + bytes(Account.sign_typed_data(buyer.key, full_message=document).signature).hex(),
    }
    accepted = api.client.post("/trades", json={"trade": trade_json(trade), **signatures})
    assert accepted.status_code == 202, accepted.text
    assert api.wait_recorded(accepted.json()["submissionId"])["tradeId"] == answer.json()["tradeId"]


def test_typed_data_refuses_terms_that_cannot_be_signed(api: RunningService) -> None:
    terms = trade_json(api.trade(Account.create(), Account.create()))
    answer = api.client.post("/eip712/trade", json=terms | {"energyPerIntervalWh": "1"})
    assert answer.status_code == 422 and answer.json()["errors"][0]["field"] == "energyPerIntervalWh"


# --- health -----------------------------------------------------------------------------------


def test_health_reports_head_index_and_workers(api: RunningService) -> None:
    health = api.client.get("/health")
    assert health.status_code == 200
    report = health.json()
    assert report["status"] == "ok" and report["chainId"] == 31337
    running = {"alive": True, "state": "running", "restarts": 0}
    assert report["workers"] == {
        "relayer": {**running, "stalled": False, "waitingSince": None},
        "indexer": running,
        "registrar": running,
        "settlement": running,
    }
    assert report["head"] >= report["indexCheckpoint"] >= 0 and report["error"] is None


def test_health_is_503_when_a_worker_died(tmp_path: Path) -> None:
    """A real death: the chain is rewound under the indexer (evm_revert), which halts it."""
    with anvil_service(tmp_path) as api:
        rpc = api.market.rpc
        snapshot = rpc.call("evm_snapshot")
        api.register()
        head = int(rpc.call("eth_blockNumber"), 16)
        wait_for(lambda: api.client.get("/health").json()["indexCheckpoint"] >= head, "the index to reach the head")
        rpc.call("evm_revert", snapshot)
        for _ in range(3):
            rpc.call("evm_mine")

        def unhealthy() -> dict[str, Any] | None:
            answer = api.client.get("/health")
            return dict(answer.json()) if answer.status_code == 503 else None

        report = wait_for(unhealthy, "health to turn 503")
        assert report["status"] == "unhealthy"
        assert report["workers"] == {
            "relayer": {"alive": True, "state": "running", "restarts": 0, "stalled": False, "waitingSince": None},
            "indexer": {"alive": False, "state": "stopped", "restarts": 0},
            "registrar": {"alive": True, "state": "running", "restarts": 0},
            "settlement": {"alive": True, "state": "running", "restarts": 0},
        }
        assert report["error"]["code"] == "reorg_beyond_finality"

        api.service.stop()
        assert api.client.get("/health").status_code == 503


# --- no 500 for bad input ---------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**300), max_value=2**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=80)
    | st.sampled_from(["0x", "0x" + "f" * 40, "0x" + "1" * 64, "0x" + "a" * 130, "2030-01-01T00:00:00", "1e3", "-0"])
)


@pytest.fixture(scope="module")
def valid_body(api: RunningService) -> dict[str, Any]:
    seller, buyer = api.register(), api.register()
    return api.body(seller, buyer)


def _no_500(answer: Any) -> None:
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["code"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_malformed_bodies_get_4xx_problems_not_500(
    api: RunningService, valid_body: dict[str, Any], data: st.DataObject
) -> None:
    # One term of a valid trade replaced by anything at all ...
    body = json.loads(json.dumps(valid_body))
    section = data.draw(st.sampled_from(["trade", "top"]))
    target = body["trade"] if section == "trade" else body
    key = data.draw(st.sampled_from(sorted(target)))
    target[key] = data.draw(SCALARS | JSON)
    _no_500(api.client.post("/trades", json=body))
    _no_500(api.client.post("/trades/batch", json={"trades": [body, data.draw(JSON)]}))
    _no_500(api.client.post("/eip712/trade", json=body["trade"]))
    # ... and whole bodies that are anything at all.
    anything = data.draw(JSON)
    for path in ("/trades", "/trades/batch", "/eip712/trade", "/eip712/cancel", f"/trades/{'0x' + '1' * 64}/cancel"):
        _no_500(api.client.post(path, json=anything))
    _no_500(api.client.post("/participants", json=anything, headers=api.operator))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.dictionaries(
        st.sampled_from(["participant", "side", "deliveryFrom", "deliveryTo", "status", "limit", "cursor"]),
        st.text(max_size=30),
    )
)
def test_arbitrary_list_filters_get_4xx_problems_not_500(api: RunningService, params: dict[str, str]) -> None:
    _no_500(api.client.get("/trades", params=params))
    _no_500(api.client.get("/participants", params=params))


@pytest.mark.parametrize(
    ("request_args", "status"),
    [
        (
            {
                "method": "POST",
                "url": "/trades",
                "content": b"{not json",
                "headers": {"content-type": "application/json"},
            },
            422,
        ),
        (
            {
                "method": "POST",
                "url": "/trades",
                "content": b"\xff\xfe",
                "headers": {"content-type": "application/json"},
            },
            400,
        ),
        ({"method": "POST", "url": "/trades", "content": b"trade=1", "headers": {"content-type": "text/plain"}}, 422),
        ({"method": "POST", "url": "/trades", "content": b""}, 422),
        ({"method": "DELETE", "url": "/trades"}, 405),
        ({"method": "GET", "url": "/no/such/path"}, 404),
        (
            {
                "method": "POST",
                "url": "/trades/batch",
                "content": b"[" + b"0," * 3_000_000 + b"0]",
                "headers": {"content-type": "application/json"},
            },
            413,
        ),
    ],
    ids=["bad json", "bad utf-8", "text/plain", "empty", "wrong method", "unknown path", "too large"],
)
def test_protocol_errors_are_problems(api: RunningService, request_args: dict[str, Any], status: int) -> None:
    answer = api.client.request(**request_args)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert answer.json()["status"] == status


def test_a_too_large_chunked_body_is_a_413_problem(api: RunningService) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(5):
            yield b"0," * 1_000_000
        yield b"0]"

    answer = api.client.post("/trades/batch", content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.headers["content-type"] == PROBLEM
    assert answer.json()["code"] == "content_too_large"


def test_limits_in_force_match_the_domain_defaults(api: RunningService) -> None:
    """The rejection tests assume the deployment's default limits."""
    assert api.service.trading.limits() == DEFAULT_TRADE_LIMITS


# --- the problem table, for failures a healthy test stack cannot produce ------------------------


def _app_raising(exc: BaseException) -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    return app


def _get_boom(app: FastAPI) -> httpx.Response:
    with serve(app) as base_url:
        return httpx.get(base_url + "/boom")


def test_an_unexpected_exception_is_a_500_problem_without_internals() -> None:
    answer = _get_boom(_app_raising(RuntimeError("secret at /home/app/ledger.py line 3")))
    assert answer.status_code == 500 and answer.headers["content-type"] == PROBLEM
    assert answer.json()["code"] == "internal_error"
    assert "secret" not in answer.text and "Traceback" not in answer.text


def test_an_unreachable_node_is_a_503_with_retry_after_and_no_url() -> None:
    rpc = JsonRpc("http://user:key@127.0.0.1:9/")  # nothing listens on the discard port
    with pytest.raises(errors.ChainError) as caught:
        rpc.call("eth_blockNumber")
    answer = _get_boom(_app_raising(caught.value))
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert answer.json()["code"] == "chain_unavailable" and "key" not in answer.text


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.GateClosed("gate closed", trade_id="0x01", gate_closed_at=5), 422),
        (errors.DuplicateTrade("dup"), 409),
        (errors.Paused("paused"), 409),
        (errors.NotFoundError("nope"), 404),
        (errors.Unauthorized("the recorder lacks its role"), 403),
        (errors.ContractReverted("panic"), 500),
    ],
)
def test_each_error_class_has_its_status(exc: errors.LedgerError, status: int) -> None:
    answer = _get_boom(_app_raising(exc))
    assert answer.status_code == status and answer.headers["content-type"] == PROBLEM
    if status < 500:
        assert answer.json()["code"] == exc.code
    if isinstance(exc, errors.GateClosed):
        assert answer.json()["gateClosedAt"] == 5 and answer.json()["tradeId"] == "0x01"


def test_context_never_overwrites_the_problem_members() -> None:
    problem = problems.problem_for(errors.TradeNotActive("not active", status=2, type="x", trade_id="0x02"))
    assert problem["status"] == 422 and problem["code"] == "trade_not_active"
    assert problem["currentStatus"] == 2 and problem["currentType"] == "x"


def test_times_are_iso_with_utc_offset() -> None:
    assert iso(0) == "1970-01-01T00:00:00+00:00"
