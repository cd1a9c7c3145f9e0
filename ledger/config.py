"""Settings, from the environment (prefix GRIDLEDGER_) or a `.env` file, validated at start-up."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ledger.chain.node import DEV_ACCOUNT_KEYS

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Accounts 0-3 of the Hardhat/anvil test mnemonic: public knowledge, so refused in production.
LOCAL_DEV_KEYS = dict(
    zip(("admin", "operator", "recorder", "pauser", "meter_oracle", "settler"), DEV_ACCOUNT_KEYS, strict=False)
)
ROLE_KEY_SETTINGS = tuple(f"{role}_key" for role in LOCAL_DEV_KEYS)
LOCAL_OPERATOR_TOKEN = "local-operator-token"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDLEDGER_", env_file=".env", extra="ignore")

    environment: Literal["local", "production"] = "local"

    # Chain: a JSON-RPC URL, or none to start a managed local node of `node_kind`.
    rpc_url: str | None = None
    node_kind: Literal["hardhat", "anvil"] = "hardhat"
    chain_id: int = 31337
    block_time_seconds: float | None = Field(default=1.0, description="interval mining of a managed node")
    # Blocks a row needs to be final. Below 256: the service's indexer keeps the last 256 block
    # hashes to find a fork point, and every non-final block must be among them.
    confirmations: int = Field(default=1, ge=0, lt=256)

    deployment_file: Path = PROJECT_ROOT / "var" / "deployment.json"
    database_url: str = f"sqlite:///{PROJECT_ROOT / 'var' / 'gridledger.db'}"

    admin_key: SecretStr = SecretStr(LOCAL_DEV_KEYS["admin"])
    operator_key: SecretStr = SecretStr(LOCAL_DEV_KEYS["operator"])
    recorder_key: SecretStr = SecretStr(LOCAL_DEV_KEYS["recorder"])
    pauser_key: SecretStr = SecretStr(LOCAL_DEV_KEYS["pauser"])
    meter_oracle_key: SecretStr = SecretStr(LOCAL_DEV_KEYS["meter_oracle"])
    settler_key: SecretStr = SecretStr(LOCAL_DEV_KEYS["settler"])

    # Bearer token that operator endpoints require (register, suspend, reinstate).
    operator_token: SecretStr = SecretStr(LOCAL_OPERATOR_TOKEN)

    # Sign-In with Ethereum: the domain a message must name and the origin its URI must be on
    # (None, locally only: the address the service serves, as its socket says, and the request's
    # scheme; production needs both), how long a nonce may wait for its signature, and how long
    # a trader's token lasts.
    siwe_domain: str | None = None
    siwe_uri: str | None = Field(default=None, description="an origin, e.g. https://ledger.example.com")
    siwe_nonce_ttl_seconds: int = Field(default=300, ge=10, le=3600)
    trader_token_ttl_seconds: int = Field(default=900, ge=60, le=86_400)

    # Requests per second (sustained, and the burst above it) per client address without a
    # token and per token with one; 0 turns the limit off. 429 beyond them.
    rate_limit_per_second: float = Field(default=50.0, ge=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    token_rate_limit_per_second: float = Field(default=200.0, ge=0)
    token_rate_limit_burst: int = Field(default=400, ge=1)
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (comma-separated IP
    # addresses or networks, e.g. "10.0.0.2,192.168.0.0/24"); none by default: the client address
    # (rate limit, access log) is then the peer's.
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()

    # Every access-log entry is committed before its answer is sent, and (by default) flushed to
    # the disk. Off, the commit does not wait for the disk: an entry survives a crash of the
    # service, while a crash of the machine or the PostgreSQL server may lose the last fraction
    # of a second of entries (README "Access log"), for less latency when the disk is busy.
    access_log_flush: bool = True

    relayer_batch_size: int = Field(default=200, ge=1, le=1000)
    relayer_batch_window_ms: int = Field(default=200, ge=0)
    relayer_max_in_flight: int = Field(default=4, ge=1)
    # GET /health answers `degraded` (503) when trades have waited this long with no progress.
    relayer_stall_seconds: int = Field(default=60, ge=1)

    # Settlement parameters (SETTLEMENT.md "Inputs of a run"); both enter every run's inputs hash,
    # so changing one makes the next run of a period a new version. uint32 on chain.
    tolerance_bps: int = Field(default=300, ge=0, le=2**32 - 1)
    penalty_bps: int = Field(default=2000, ge=0, le=2**32 - 1)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        for item in value if isinstance(value, list | tuple) else ():
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad address
        return value

    @field_validator("siwe_uri")
    @classmethod
    def _origin_only(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/") or parts.query:
            raise ValueError("must be an origin: http(s)://host[:port], without a path")
        return f"{parts.scheme}://{parts.netloc}".lower()

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment == "production":
            placeholders = {
                name for name in ROLE_KEY_SETTINGS if getattr(self, name).get_secret_value() in LOCAL_DEV_KEYS.values()
            }
            if self.operator_token.get_secret_value() == LOCAL_OPERATOR_TOKEN:
                placeholders.add("operator_token")
            if placeholders:
                raise ValueError(f"placeholder secrets are refused in production: {sorted(placeholders)}")
            if self.rpc_url is None:
                raise ValueError("production needs GRIDLEDGER_RPC_URL; it never starts a local node")
            if self.siwe_domain is None or self.siwe_uri is None:
                # Otherwise a sign-in message names what the request says, which a site relaying
                # its visitors' signatures chooses.
                raise ValueError(
                    "production needs GRIDLEDGER_SIWE_DOMAIN and GRIDLEDGER_SIWE_URI: the domain and the "
                    "origin (https://…) that traders' sign-in messages must name"
                )
        return self
