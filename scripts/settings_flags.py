"""The settings flags the scripts share: GRIDLEDGER_* from the environment (or .env), each
overridable by a flag, validated by `ledger.config.Settings`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ledger.config import Settings

# settings field -> (flag, type, help)
_FLAGS: dict[str, tuple[str, type, str]] = {
    "rpc_url": ("--rpc-url", str, "JSON-RPC URL (default: GRIDLEDGER_RPC_URL)"),
    "chain_id": ("--chain-id", int, "expected chain id (default: GRIDLEDGER_CHAIN_ID)"),
    "deployment_file": ("--deployment-file", Path, "the deployment file (default: GRIDLEDGER_DEPLOYMENT_FILE)"),
    "database_url": ("--database-url", str, "the index database (default: GRIDLEDGER_DATABASE_URL)"),
    "confirmations": ("--confirmations", int, "default: GRIDLEDGER_CONFIRMATIONS"),
}
CHAIN_FLAGS = ("rpc_url", "chain_id", "deployment_file")
INDEX_FLAGS = (*CHAIN_FLAGS, "database_url")


class SettingsRefused(ValueError):
    """Settings that cannot work; the message names the flag or variable to fix."""


def add_settings_flags(parser: argparse.ArgumentParser, fields: tuple[str, ...] = INDEX_FLAGS) -> None:
    for name in fields:
        flag, kind, text = _FLAGS[name]
        parser.add_argument(flag, dest=name, type=kind, help=text)


def settings_from_flags(args: argparse.Namespace, *, needs_rpc: bool = True) -> Settings:
    overrides: dict[str, Any] = {name: getattr(args, name) for name in _FLAGS if getattr(args, name, None) is not None}
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        raise SettingsRefused(f"invalid settings: {exc}") from exc
    if needs_rpc:
        required_rpc_url(settings)
    return settings


def required_rpc_url(settings: Settings) -> str:
    """The node's URL, which commands that talk to a running chain cannot do without."""
    if settings.rpc_url is None:
        raise SettingsRefused("--rpc-url (or GRIDLEDGER_RPC_URL) is required")
    return settings.rpc_url
