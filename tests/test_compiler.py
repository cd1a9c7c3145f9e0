import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from eth_utils import keccak

from ledger.chain.compiler import (
    PROJECT_ROOT,
    SOLC_VERSION,
    Compiler,
    ContractArtifact,
    compile_contracts,
    resolve_compiler,
    standard_json_input,
)
from ledger.errors import CompilerError

Artifacts = dict[str, ContractArtifact]


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    return compile_contracts()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throw-away copy of the project's Solidity side, sharing the installed node_modules."""
    root = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "contracts", root / "contracts")
    for name in ("hardhat.config.js", "package.json"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    (root / "node_modules").symlink_to(PROJECT_ROOT / "node_modules")
    return root


def _abi_entry(artifact: ContractArtifact, kind: str, name: str) -> dict:
    return next(e for e in artifact.abi if e["type"] == kind and e.get("name") == name)


def test_trade_ledger_compiles_with_its_events_and_errors(artifacts: Artifacts) -> None:
    ledger = artifacts["TradeLedger"]

    assert ledger.source == "contracts/TradeLedger.sol"
    assert ledger.bytecode.startswith("0x") and len(ledger.bytecode) > 1000
    assert ledger.deployed_bytecode.startswith("0x") and len(ledger.deployed_bytecode) > 1000
    recorded = _abi_entry(ledger, "event", "TradeRecorded")
    assert recorded["inputs"][0] == {
        "indexed": True,
        "internalType": "bytes32",
        "name": "tradeId",
        "type": "bytes32",
    }
    duplicate = _abi_entry(ledger, "error", "TradeLedgerDuplicateTrade")
    assert [i["name"] for i in duplicate["inputs"]] == ["tradeId"]
    _abi_entry(ledger, "function", "recordTrade")


def test_artifacts_cover_exactly_the_project_contracts(artifacts: Artifacts) -> None:
    assert {a.source for a in artifacts.values()} == {
        p.relative_to(PROJECT_ROOT).as_posix() for p in (PROJECT_ROOT / "contracts").rglob("*.sol")
    }
    assert {"ITradeLedger", "TradeStructs", "Roles"} <= artifacts.keys()
    assert "AccessControl" not in artifacts
    assert artifacts["ITradeLedger"].bytecode == "0x"


def test_abi_hash_is_keccak_of_canonical_abi_json(artifacts: Artifacts) -> None:
    ledger = artifacts["TradeLedger"]
    canonical = json.dumps(ledger.abi, sort_keys=True, separators=(",", ":"))

    assert ledger.abi_hash == "0x" + keccak(text=canonical).hex()


def test_input_inlines_every_import_under_its_hardhat_source_name() -> None:
    solc_input = standard_json_input()

    assert "contracts/interfaces/ITradeLedger.sol" in solc_input["sources"]
    assert "@openzeppelin/contracts/access/AccessControl.sol" in solc_input["sources"]
    assert all("content" in source for source in solc_input["sources"].values())
    assert solc_input["settings"]["evmVersion"] == "cancun"
    assert solc_input["settings"]["optimizer"] == {"enabled": True, "runs": 10_000}
    assert solc_input["settings"]["viaIR"] is True


def test_second_compile_is_served_from_the_cache_without_a_compiler(project: Path) -> None:
    first = compile_contracts(project)

    # A compiler that cannot run proves the second call never resolves one.
    second = compile_contracts(project, solc=str(project / "no-such-solc"))

    assert second == first
    assert len(list((project / "build" / "solc").glob("*.json"))) == 1


def test_compile_without_cache_writes_nothing(project: Path) -> None:
    compile_contracts(project, use_cache=False)

    assert not (project / "build").exists()


def test_syntax_error_raises_compiler_error_naming_the_file(project: Path) -> None:
    roles = project / "contracts" / "libraries" / "Roles.sol"
    roles.write_text(roles.read_text() + "\ncontract Broken {\n")

    with pytest.raises(CompilerError) as raised:
        compile_contracts(project)

    assert "ParserError" in str(raised.value)
    assert "contracts/libraries/Roles.sol" in str(raised.value)


def test_missing_import_names_importer_and_import(project: Path) -> None:
    (project / "contracts" / "Orphan.sol").write_text('pragma solidity 0.8.28;\nimport "./Nowhere.sol";\n')

    with pytest.raises(CompilerError, match=r"contracts/Orphan.sol imports contracts/Nowhere.sol"):
        standard_json_input(project)


def test_npm_solc_is_the_last_resort(no_installed_solc: Path) -> None:
    # Holds on this project's machines, which have no native solc 0.8.28 on PATH.
    assert resolve_compiler() == Compiler("solcjs", PROJECT_ROOT / "node_modules" / "solc", SOLC_VERSION)


def test_configured_compiler_of_unknown_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDLEDGER_SOLC", "/bin/false")

    with pytest.raises(CompilerError, match="/bin/false"):
        resolve_compiler()


def _solc_shim(folder: Path, version: str) -> Path:
    """A native-style `solc` executable (no solc binary can be downloaded here): it answers
    `--version` like solc and runs `--standard-json` through the real solcjs, so the py-solc-x
    path is exercised end to end."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "solc"
    adapter = PROJECT_ROOT / "ledger" / "chain" / "solcjs_adapter.js"
    shim.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then echo "Version: {version}+commit.7893614a.Linux.g++"; exit 0; fi\n'
        f'exec node "{adapter}" "{PROJECT_ROOT / "node_modules" / "solc"}"\n'
    )
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    return shim


@pytest.fixture
def native_solc(tmp_path: Path) -> Path:
    return _solc_shim(tmp_path / "bin", SOLC_VERSION)


@pytest.fixture
def no_installed_solc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Resolution from here on sees only what the test puts in place (py-solc-x folder, PATH)."""
    monkeypatch.delenv("GRIDLEDGER_SOLC", raising=False)
    folder = tmp_path / "solcx"
    folder.mkdir()
    monkeypatch.setenv("SOLCX_BINARY_PATH", str(folder))
    return folder


def test_configured_native_compiler_gives_the_same_artifacts(
    native_solc: Path, project: Path, artifacts: Artifacts
) -> None:
    assert resolve_compiler(str(native_solc)) == Compiler("native", native_solc, SOLC_VERSION)
    assert compile_contracts(project, solc=str(native_solc), use_cache=False) == artifacts

    roles = project / "contracts" / "libraries" / "Roles.sol"
    roles.write_text(roles.read_text() + "\ncontract Broken {\n")
    with pytest.raises(CompilerError, match=r"contracts/libraries/Roles\.sol"):
        compile_contracts(project, solc=str(native_solc), use_cache=False)


def test_solc_installed_by_py_solc_x_comes_before_path(native_solc: Path, no_installed_solc: Path) -> None:
    installed = no_installed_solc / f"solc-v{SOLC_VERSION}"
    installed.symlink_to(native_solc)

    assert resolve_compiler() == Compiler("native", installed, SOLC_VERSION)


def test_solc_on_path_is_used_only_at_the_pinned_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_installed_solc: Path
) -> None:
    pinned = _solc_shim(tmp_path / "pinned", SOLC_VERSION)
    other = _solc_shim(tmp_path / "other", "0.8.27")

    monkeypatch.setenv("PATH", f"{pinned.parent}{os.pathsep}{os.environ['PATH']}")
    assert resolve_compiler() == Compiler("native", pinned, SOLC_VERSION)

    monkeypatch.setenv("PATH", f"{other.parent}{os.pathsep}{os.environ['PATH']}")
    assert resolve_compiler().kind == "solcjs"


@pytest.mark.hardhat
def test_hardhat_and_python_produce_identical_bytecode(project: Path, artifacts: Artifacts) -> None:
    subprocess.run(
        [str(project / "node_modules" / ".bin" / "hardhat"), "compile"],
        cwd=project,
        env={**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true"},
        stdin=subprocess.DEVNULL,
        check=True,
        capture_output=True,
        timeout=300,
    )

    for artifact in artifacts.values():
        built = json.loads((project / "artifacts" / artifact.source / f"{artifact.name}.json").read_text())
        assert (built["bytecode"], built["deployedBytecode"]) == (
            artifact.bytecode,
            artifact.deployed_bytecode,
        ), artifact.name
    # Same bytecode could hide a drifting setting that happens not to matter yet; compare the
    # inputs too so a change on one side only fails here, naming what differs.
    (build_info,) = (project / "artifacts" / "build-info").glob("*.json")
    hardhat_input = json.loads(build_info.read_text())["input"]
    ours = standard_json_input()
    for solc_input in (hardhat_input, ours):
        del solc_input["settings"]["outputSelection"]
    assert hardhat_input["settings"] == ours["settings"]
    assert hardhat_input["sources"] == ours["sources"]
