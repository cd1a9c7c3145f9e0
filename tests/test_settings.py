"""Settings that cannot work are refused when they are read, naming the setting to fix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ledger.config import ROLE_KEY_SETTINGS, Settings
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


def test_production_needs_the_sign_in_domain_and_origin() -> None:
    production: dict[str, object] = {
        "environment": "production",
        "rpc_url": "http://127.0.0.1:8545",
        "operator_token": "a-real-operator-token",
        **{name: "0x" + f"{index + 1:064x}" for index, name in enumerate(ROLE_KEY_SETTINGS)},
    }
    with pytest.raises(ValidationError, match="GRIDLEDGER_SIWE_DOMAIN and GRIDLEDGER_SIWE_URI"):
        Settings(_env_file=None, **production, siwe_domain="ledger.example.com")  # type: ignore[call-arg]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        **production,
        siwe_domain="ledger.example.com",
        siwe_uri="https://Ledger.example.com/",
    )
    assert settings.siwe_uri == "https://ledger.example.com"
    with pytest.raises(ValidationError, match="origin"):
        Settings(_env_file=None, siwe_uri="https://ledger.example.com/sign-in")  # type: ignore[call-arg]
