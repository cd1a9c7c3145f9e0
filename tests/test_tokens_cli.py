"""scripts/tokens.py as an operator runs it: a subprocess on a database, tokens checked by the
access service the API uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from ledger.auth.scopes import ROLES, PrincipalKind, Scope
from ledger.chain.compiler import PROJECT_ROOT
from ledger.config import Settings
from ledger.errors import TokenRevoked
from ledger.services.access import AccessService
from ledger.store.db import make_engine, make_session_factory


def tokens(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.tokens", "--database-url", database_url, *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "GRIDLEDGER_DATABASE_URL": "sqlite:////nonexistent/never-used.db"},
        timeout=60,
    )


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'gridledger.db'}"


def test_an_issued_token_authenticates_until_revoked(database_url: str) -> None:
    issued = tokens(database_url, "issue", "--name", "Audit Firm", "--scopes", "auditor", "--expires-in-days", "30")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert token.startswith("glt_") and token not in issued.stderr  # the secret goes to stdout only

    engine = make_engine(database_url)
    sessions: sessionmaker = make_session_factory(engine)
    access = AccessService(Settings(_env_file=None), sessions, sessions)  # type: ignore[call-arg]
    principal = access.authenticate(token)
    assert (principal.kind, principal.name, principal.scopes) == (PrincipalKind.TOKEN, "Audit Firm", ROLES["auditor"])

    listed = [json.loads(line) for line in tokens(database_url, "list").stdout.splitlines()]
    assert [(t["tokenId"], t["name"], t["revokedAt"]) for t in listed] == [(principal.token_id, "Audit Firm", None)]
    assert token not in json.dumps(listed)

    revoked = tokens(database_url, "revoke", str(principal.token_id))
    assert revoked.returncode == 0 and principal.token_id in revoked.stderr
    fresh = AccessService(Settings(_env_file=None), sessions, sessions)  # type: ignore[call-arg]
    with pytest.raises(TokenRevoked):
        fresh.authenticate(token)
    assert tokens(database_url, "list").stdout == ""
    assert len(tokens(database_url, "list", "--all").stdout.splitlines()) == 1
    engine.dispose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "--name", " ", "--scopes", "auditor"], "--name"),
        (
            ["issue", "--name", "x", "--scopes", "auditor,trades:write"],
            "--scopes: unknown scope or role 'trades:write'",
        ),
        (["issue", "--name", "x", "--scopes", ","], "--scopes"),
        (["issue", "--name", "x", "--scopes", str(Scope.TRADES_READ), "--expires-in-days", "0"], "--expires-in-days"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag_and_nothing_is_issued(
    database_url: str, args: list[str], message: str
) -> None:
    refused = tokens(database_url, *args)
    assert refused.returncode == 2 and message in refused.stderr and refused.stdout == ""
    assert "Traceback" not in refused.stderr
    assert tokens(database_url, "list", "--all").stdout == ""


def test_revoking_an_unknown_token_says_so(database_url: str) -> None:
    refused = tokens(database_url, "revoke", "0123456789abcdef")
    assert refused.returncode == 1 and "no token has the id 0123456789abcdef" in refused.stderr
