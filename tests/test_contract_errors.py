"""Every Solidity custom error decodes to its typed `LedgerError` (STYLE 7), and nothing else
gets lost: `Error(string)`, `Panic(uint256)` and unknown data become `ContractReverted`.

The revert data is built here with eth_abi from the compiled ABIs, so a new error in a contract
without an `ERROR_CLASSES` entry fails `test_every_custom_error_has_a_class`.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from ledger import errors
from ledger.chain.abi import abi_type
from ledger.chain.compiler import ContractArtifact, compile_contracts
from ledger.chain.contract_errors import ERROR_CLASSES, ErrorDecoder
from tests.support.behaviours import assert_error, context_of


@cache
def artifacts() -> dict[str, ContractArtifact]:
    return compile_contracts()


def custom_errors(contract: str) -> list[dict[str, Any]]:
    return [item for item in artifacts()[contract].abi if item["type"] == "error"]


def every_custom_error() -> list[tuple[str, dict[str, Any]]]:
    """(contract, error ABI) for each error of each deployable contract, once per contract."""
    found = []
    for name, artifact in artifacts().items():
        if artifact.bytecode.removeprefix("0x"):
            found += [(name, item) for item in custom_errors(name)]
    return found


def signature(error: dict[str, Any]) -> str:
    return f"{error['name']}({','.join(abi_type(i) for i in error['inputs'])})"


def sample(solidity_type: str, seed: str) -> Any:
    """A value of the type, different for every error and argument (so a swapped argument shows)."""
    digest = keccak(text=seed)
    if solidity_type == "address":
        return to_checksum_address(digest[:20])
    if solidity_type == "bytes32":
        return digest
    if solidity_type == "string":
        return f"text {seed}"
    if solidity_type == "bytes":
        return digest[:7]
    if match := re.fullmatch(r"uint(\d+)", solidity_type):
        return int.from_bytes(digest, "big") % 2 ** int(match[1])
    raise AssertionError(f"no sample value for {solidity_type}: extend sample()")


def plain(value: Any, solidity_type: str) -> Any:
    """The form a decoded value takes in an error's context."""
    if solidity_type == "address":
        return to_checksum_address(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return value


def test_the_trade_ledger_has_custom_errors() -> None:
    assert len(custom_errors("TradeLedger")) >= 20


def test_every_custom_error_has_a_class() -> None:
    for contract, error in every_custom_error():
        assert error["name"] in ERROR_CLASSES, f"{contract}.{error['name']} has no entry in ERROR_CLASSES"


def test_no_class_is_kept_for_an_error_that_no_longer_exists() -> None:
    in_abis = {error["name"] for _, error in every_custom_error()}
    assert set(ERROR_CLASSES) - in_abis == set()


def test_error_names_mean_one_signature() -> None:
    """`ERROR_CLASSES` is keyed by name: two contracts declaring one name with different
    arguments would share a class and its context keys."""
    by_name: dict[str, set[str]] = {}
    for _, error in every_custom_error():
        by_name.setdefault(error["name"], set()).add(signature(error))
    assert {name: sigs for name, sigs in by_name.items() if len(sigs) > 1} == {}


def test_the_decoder_knows_every_error_of_its_abi() -> None:
    abi = artifacts()["TradeLedger"].abi
    assert ErrorDecoder(abi).error_names() == {e["name"] for e in custom_errors("TradeLedger")}


@pytest.mark.parametrize(
    ("contract", "error"),
    every_custom_error(),
    ids=[f"{contract}.{error['name']}" for contract, error in every_custom_error()],
)
def test_each_custom_error_decodes_to_its_class(contract: str, error: dict[str, Any]) -> None:
    types = [abi_type(i) for i in error["inputs"]]
    values = [sample(t, f"{error['name']}.{i}") for i, t in enumerate(types)]
    data = keccak(text=signature(error))[:4] + encode(types, values)

    decoded = ErrorDecoder(artifacts()[contract].abi).decode(data)

    expected_class, message = ERROR_CLASSES[error["name"]]
    assert type(decoded) is expected_class
    assert decoded.code == expected_class.code
    assert str(decoded) == message and message
    context = context_of(decoded)
    assert context.pop("solidity_error") == error["name"]
    assert len(context) == len(error["inputs"])
    for key, param, solidity_type, value in zip(context, error["inputs"], types, values, strict=True):
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", key), f"{key} is not snake_case"
        assert key.replace("_", "") == param["name"].lower(), f"{key} does not name {param['name']}"
        assert context[key] == plain(value, solidity_type)


# --- what is not a custom error of the ABI ----------------------------------------------------------


@pytest.fixture(scope="module")
def decoder() -> ErrorDecoder:
    return ErrorDecoder(artifacts()["TradeLedger"].abi)


def test_error_string_decodes_to_contract_reverted(decoder: ErrorDecoder) -> None:
    reason = "ERC20: transfer amount exceeds balance"
    data = keccak(text="Error(string)")[:4] + encode(["string"], [reason])
    decoded = decoder.decode(data)
    assert_error(decoded, errors.ContractReverted, "contract_reverted", {"reason": reason})
    assert reason in str(decoded)


@pytest.mark.parametrize("panic_code", [0x01, 0x11, 0x12, 0x21, 0x32, 0x41])
def test_panic_decodes_to_contract_reverted(decoder: ErrorDecoder, panic_code: int) -> None:
    data = keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [panic_code])
    decoded = decoder.decode(data)
    assert_error(decoded, errors.ContractReverted, "contract_reverted", {"panic_code": panic_code})
    assert f"{panic_code:02x}" in str(decoded)


def assert_unexplained(decoded: errors.LedgerError, data: bytes) -> None:
    """A `ContractReverted` (or a subclass of it) that keeps the raw data for whoever debugs it."""
    assert isinstance(decoded, errors.ContractReverted)
    assert decoded.code == "contract_reverted"
    assert context_of(decoded) == {"data": "0x" + data.hex()}


@pytest.mark.parametrize(
    "data",
    [
        keccak(text="SomeoneElsesError(uint256)")[:4] + encode(["uint256"], [7]),
        b"\xde\xad\xbe\xef",
        b"\x08\xc3",  # shorter than a selector
        b"",
    ],
    ids=["unknown selector", "bare unknown selector", "short data", "no data"],
)
def test_unknown_revert_data_decodes_to_contract_reverted(decoder: ErrorDecoder, data: bytes) -> None:
    assert_unexplained(decoder.decode(data), data)


def test_an_error_of_another_contract_is_unknown_to_this_decoder(decoder: ErrorDecoder) -> None:
    """Decoding goes by the ABI of the contract that reverted, not by a global table."""
    data = keccak(text="OwnableUnauthorizedAccount(address)")[:4] + encode(["address"], ["0x" + "11" * 20])
    assert_unexplained(decoder.decode(data), data)


@pytest.mark.parametrize("cut", [5, 31], ids=["5 bytes of arguments", "31 bytes of arguments"])
def test_a_known_selector_with_truncated_arguments_decodes_to_contract_reverted(
    decoder: ErrorDecoder, cut: int
) -> None:
    data = keccak(text="TradeLedgerDuplicateTrade(bytes32)")[:4] + b"\x00" * cut
    assert_unexplained(decoder.decode(data), data)
