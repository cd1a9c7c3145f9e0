"""Settings, from the environment (prefix GRIDLEDGER_) or a `.env` file, validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The well-known keys of the Hardhat/anvil test mnemonic: public knowledge, so local only.
LOCAL_DEV_KEYS = {
    "admin": "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "operator": "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "recorder": "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "pauser": "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
}
LOCAL_OPERATOR_TOKEN = "local-operator-token"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDLEDGER_", env_file=".env", extra="ignore")

    environment: Literal["local", "production"] = "local"

    # Chain: a JSON-RPC URL, or none to start a managed local node of `node_kind`.
    rpc_url: str | None = None
    node_kind: Literal["hardhat", "anvil"] = "hardhat"
    chain_id: int = 31337
    block_time_seconds: float | None = Field(default=1.0, description="interval mining of a managed node")
    confirmations: int = Field(default=1, ge=0)

    deployment_file: Path = PROJECT_ROOT / "var" / "deployment.json"
    database_url: str = f"sqlite:///{PROJECT_ROOT / 'var' / 'gridledger.db'}"

    admin_key: SecretStr = SecretStr(LOCAL_DEV_KEYS["admin"])
    operator_key: SecretStr = SecretStr(LOCAL_DEV_KEYS["operator"])
    recorder_key: SecretStr = SecretStr(LOCAL_DEV_KEYS["recorder"])
    pauser_key: SecretStr = SecretStr(LOCAL_DEV_KEYS["pauser"])

    # Bearer token that operator endpoints require (register, suspend, reinstate).
    operator_token: SecretStr = SecretStr(LOCAL_OPERATOR_TOKEN)

    relayer_batch_size: int = Field(default=200, ge=1, le=1000)
    relayer_batch_window_ms: int = Field(default=200, ge=0)
    relayer_max_in_flight: int = Field(default=4, ge=1)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment == "production":
            placeholders = {
                name
                for name in ("admin_key", "operator_key", "recorder_key", "pauser_key")
                if getattr(self, name).get_secret_value() in LOCAL_DEV_KEYS.values()
            }
            if self.operator_token.get_secret_value() == LOCAL_OPERATOR_TOKEN:
                placeholders.add("operator_token")
            if placeholders:
                raise ValueError(f"placeholder secrets are refused in production: {sorted(placeholders)}")
            if self.rpc_url is None:
                raise ValueError("production needs GRIDLEDGER_RPC_URL; it never starts a local node")
        return self
