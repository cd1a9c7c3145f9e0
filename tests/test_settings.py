"""Settings that cannot work are refused when they are read, naming the setting to fix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ledger.config import Settings
from scripts import reindex


def test_confirmations_must_stay_inside_the_indexers_block_window() -> None:
    assert Settings(_env_file=None, confirmations=255).confirmations == 255  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="confirmations"):
        Settings(_env_file=None, confirmations=256)  # type: ignore[call-arg]


def test_a_command_refuses_them_with_exit_code_2_naming_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    code = reindex.main(["--rpc-url", "http://127.0.0.1:9", "--confirmations", "256"])
    assert code == 2
    assert "confirmations" in capsys.readouterr().err


def test_trusted_proxies_are_addresses_or_networks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRIDLEDGER_TRUSTED_PROXIES", "10.0.0.2, 192.168.0.0/24")
    assert Settings(_env_file=None).trusted_proxies == ("10.0.0.2", "192.168.0.0/24")  # type: ignore[call-arg]
    assert Settings(_env_file=None, trusted_proxies="").trusted_proxies == ()  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(_env_file=None, trusted_proxies="proxy.example")  # type: ignore[call-arg]
