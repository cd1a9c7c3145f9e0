"""Compiles the Solidity sources under contracts/ into ABIs and bytecode.

Python and Hardhat (hardhat.config.js) must produce byte-identical bytecode, because the
metadata hash solc appends to it covers the source unit names, their contents and the settings.
So the input built here is the one Hardhat builds: project files named relative to the repo
root (`contracts/TradeLedger.sol`), libraries named as imported (`@openzeppelin/contracts/...`)
and read from node_modules, every source inlined, and the settings below mirrored in
hardhat.config.js. tests/test_compiler.py compiles with both and compares.

Artifacts are cached in build/solc/<key>.json, the key hashing the whole input and the pinned
compiler version, so an unchanged tree never starts a compiler.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final, Literal

import solcx
from eth_utils import keccak
from solcx.exceptions import SolcError, SolcNotInstalled
from solcx.install import get_executable
from solcx.wrapper import get_solc_version

from ledger.errors import CompilerError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOLC_ENV = "GRIDLEDGER_SOLC"
CONTRACTS_DIR = "contracts"

# The one settings object, read by hardhat.config.js too. viaIR cuts about 4,000 gas off every
# recorded trade (measured in scripts/bench_record.py).
_SETTINGS_FILE = PROJECT_ROOT / CONTRACTS_DIR / "solc-settings.json"
SOLC_VERSION: Final[str] = json.loads(_SETTINGS_FILE.read_text())["version"]
_SETTINGS: Final[dict[str, Any]] = {
    **json.loads(_SETTINGS_FILE.read_text())["settings"],
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}
_ADAPTER = Path(__file__).with_name("solcjs_adapter.js")
# Bumped when the cached file layout changes, so old entries are simply never hit again.
_CACHE_FORMAT = 1
# The string literal of an import directive, in every form: `import "x";`, `import "x" as X;`,
# `import {A} from "x";`, `import * as X from "x";`.
_IMPORT = re.compile(r"\bimport\b[^;\"']*[\"']([^\"']+)[\"']")
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True)
class ContractArtifact:
    name: str
    source: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    abi_hash: str


@dataclass(frozen=True)
class Compiler:
    kind: Literal["native", "solcjs"]
    # The solc binary, or for solcjs the directory of the npm `solc` package.
    path: Path
    version: str

    def compile(self, solc_input: dict[str, Any]) -> dict[str, Any]:
        """Runs one standard-JSON compilation; raises CompilerError on any error diagnostic."""
        output = self._run_native(solc_input) if self.kind == "native" else self._run_solcjs(solc_input)
        _raise_on_errors(output.get("errors", []))
        return output

    def _run_native(self, solc_input: dict[str, Any]) -> dict[str, Any]:
        try:
            return solcx.compile_standard(solc_input, solc_binary=self.path)
        except SolcError as exc:
            if exc.error_dict:
                _raise_on_errors(exc.error_dict)  # type: ignore[arg-type]
            raise CompilerError(f"solc at {self.path} failed: {exc}", compiler=str(self.path)) from exc

    def _run_solcjs(self, solc_input: dict[str, Any]) -> dict[str, Any]:
        proc = subprocess.run(
            ["node", str(_ADAPTER), str(self.path)],
            input=json.dumps(solc_input),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise CompilerError(f"solcjs failed: {proc.stderr.strip()}", compiler=str(self.path))
        return json.loads(proc.stdout)


def standard_json_input(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The complete solc input for every contract under `root`/contracts, imports inlined."""
    return {"language": "Solidity", "sources": _collect_sources(root), "settings": copy.deepcopy(_SETTINGS)}


def compile_contracts(
    root: Path = PROJECT_ROOT, *, solc: str | None = None, use_cache: bool = True
) -> dict[str, ContractArtifact]:
    """Compiles the project, keyed by contract name (only contracts defined under contracts/).

    A cache hit does not look at `solc` at all: any compiler accepted by `resolve_compiler` is
    the pinned version, and the same version gives the same output.
    """
    solc_input = standard_json_input(root)
    cache_file = root / "build" / "solc" / f"{_cache_key(solc_input)}.json"
    if use_cache and cache_file.is_file():
        return {entry["name"]: ContractArtifact(**entry) for entry in json.loads(cache_file.read_text())}
    artifacts = _artifacts(resolve_compiler(solc).compile(solc_input))
    if use_cache:
        _write_atomically(cache_file, json.dumps([asdict(a) for a in artifacts.values()]))
    return artifacts


def resolve_compiler(solc: str | None = None) -> Compiler:
    """Finds solc SOLC_VERSION: the given path or $GRIDLEDGER_SOLC, else py-solc-x's install
    folder, else `solc` on PATH, else the npm `solc` package run by Node (slowest, always there
    after `npm ci`). A configured compiler of another version is an error, not skipped: asking
    for a compiler and silently getting another would be worse."""
    configured = solc or os.environ.get(SOLC_ENV)
    if configured:
        version = _native_version(Path(configured))
        if version != SOLC_VERSION:
            raise CompilerError(
                f"configured solc {configured} is version {version or 'unknown'}, not {SOLC_VERSION}",
                compiler=configured,
            )
        return Compiler("native", Path(configured), SOLC_VERSION)
    with contextlib.suppress(SolcNotInstalled):
        return Compiler("native", get_executable(SOLC_VERSION), SOLC_VERSION)
    on_path = shutil.which("solc")
    if on_path and _native_version(Path(on_path)) == SOLC_VERSION:
        return Compiler("native", Path(on_path), SOLC_VERSION)
    return _solcjs()


def _solcjs() -> Compiler:
    package = PROJECT_ROOT / "node_modules" / "solc"
    manifest = package / "package.json"
    if shutil.which("node") is None or not manifest.is_file():
        raise CompilerError(
            f"no solc {SOLC_VERSION} found: set {SOLC_ENV} to a solc binary, or install Node.js and run"
            " `npm ci` for the npm solc package"
        )
    version = json.loads(manifest.read_text())["version"]
    if version != SOLC_VERSION:
        raise CompilerError(f"npm solc is version {version}, not {SOLC_VERSION}: run `npm ci`")
    return Compiler("solcjs", package, SOLC_VERSION)


def _native_version(binary: Path) -> str | None:
    try:
        return str(get_solc_version(binary))
    except (OSError, SolcError, subprocess.CalledProcessError):
        return None


def _collect_sources(root: Path) -> dict[str, dict[str, str]]:
    project = sorted(p.relative_to(root).as_posix() for p in (root / CONTRACTS_DIR).rglob("*.sol"))
    if not project:
        raise CompilerError(f"no Solidity sources under {root / CONTRACTS_DIR}")
    pending: list[tuple[str, str | None]] = [(unit, None) for unit in project]
    contents: dict[str, str] = {}
    while pending:
        unit, importer = pending.pop()
        if unit in contents:
            continue
        contents[unit] = _read_unit(root, unit, importer)
        code = _COMMENT.sub("", contents[unit])
        pending.extend((_resolve_import(unit, path), unit) for path in _IMPORT.findall(code))
    return {unit: {"content": contents[unit]} for unit in sorted(contents)}


def _resolve_import(importer: str, path: str) -> str:
    # solc's rule: only "./" and "../" imports are relative to the importing unit; every other
    # path is a source unit name as is.
    if path.startswith(("./", "../")):
        return posixpath.normpath(posixpath.join(posixpath.dirname(importer), path))
    return path


def _read_unit(root: Path, unit: str, importer: str | None) -> str:
    if not unit.startswith(("/", "../")):
        for candidate in (root / unit, root / "node_modules" / unit):
            if candidate.is_file():
                return candidate.read_text(encoding="utf-8")
    raise CompilerError(
        f"{importer} imports {unit}, found neither in the project nor in node_modules",
        source=importer,
        missing=unit,
    )


def _raise_on_errors(diagnostics: list[dict[str, Any]]) -> None:
    errors = [d for d in diagnostics if d.get("severity") == "error"]
    if errors:
        messages = "\n".join(d.get("formattedMessage") or d["message"] for d in errors)
        raise CompilerError(f"solc {SOLC_VERSION} reported errors:\n{messages}", errors=errors)


def _artifacts(output: dict[str, Any]) -> dict[str, ContractArtifact]:
    artifacts: dict[str, ContractArtifact] = {}
    for source, contracts in sorted(output.get("contracts", {}).items()):
        if not source.startswith(f"{CONTRACTS_DIR}/"):
            continue
        for name, contract in contracts.items():
            if name in artifacts:
                sources = f"{artifacts[name].source} and {source}"
                raise CompilerError(f"contract name {name} is defined twice: {sources}")
            artifacts[name] = ContractArtifact(
                name=name,
                source=source,
                abi=contract["abi"],
                bytecode="0x" + contract["evm"]["bytecode"]["object"],
                deployed_bytecode="0x" + contract["evm"]["deployedBytecode"]["object"],
                abi_hash=_abi_hash(contract["abi"]),
            )
    return artifacts


def _abi_hash(abi: list[dict[str, Any]]) -> str:
    return "0x" + keccak(text=json.dumps(abi, sort_keys=True, separators=(",", ":"))).hex()


def _cache_key(solc_input: dict[str, Any]) -> str:
    keyed = {"format": _CACHE_FORMAT, "solc": SOLC_VERSION, "input": solc_input}
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    # Concurrent compilers (pytest-xdist workers) may race here: each writes its own temp file and
    # renames it into place, so a reader sees either no file or a complete one.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file private (0600); the cache is build output like any other.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
