"""A small JSON-RPC client for what web3.py does not do well: batches.

web3.py 8 will not batch `eth_sendRawTransaction`; a JSON-RPC array does, and sending a whole
round of signed transactions in one request is what lets the relayer keep up under load.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

import httpx

from ledger.errors import ChainError


@dataclass(frozen=True)
class RpcError:
    """An error object returned by the node for one call."""

    code: int
    message: str
    data: str | None = None

    @property
    def revert_data(self) -> bytes | None:
        if isinstance(self.data, str) and self.data.startswith("0x"):
            return bytes.fromhex(self.data[2:])
        return None


class RpcCallError(ChainError):
    """The node answered a call with an error object."""

    code = "rpc_error"
    retryable = False

    def __init__(self, method: str, error: RpcError) -> None:
        super().__init__(f"{method}: {error.message}", method=method, rpc_code=error.code)
        self.error = error


class JsonRpc:
    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def call(self, method: str, *params: Any) -> Any:
        (result,) = self.batch([(method, list(params))])
        if isinstance(result, RpcError):
            raise RpcCallError(method, result)
        return result

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any | RpcError]:
        """Results in the order of `calls`; a failed call yields its `RpcError` in place."""
        if not calls:
            return []
        with self._lock:
            ids = [next(self._ids) for _ in calls]
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in zip(ids, calls, strict=True)]
        # The URL stays out of the messages: a hosted node's URL often carries its API key.
        try:
            response = self._client.post(self.url, json=body if len(body) > 1 else body[0])
            response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise ChainError(f"JSON-RPC node answered HTTP {exc.response.status_code}") from exc
        except httpx.HTTPError as exc:
            raise ChainError(f"JSON-RPC node unreachable: {type(exc).__name__}") from exc
        try:
            answers = response.json()
        except ValueError as exc:
            raise ChainError("JSON-RPC node answered something that is not JSON") from exc
        if isinstance(answers, dict):
            answers = [answers]
        by_id = {a.get("id"): a for a in answers}
        results: list[Any | RpcError] = []
        for i in ids:
            answer = by_id.get(i)
            if answer is None:
                raise ChainError("JSON-RPC batch answer is missing a call")
            if "error" in answer:
                err = answer["error"]
                results.append(RpcError(err.get("code", 0), err.get("message", ""), _revert_data(err)))
            else:
                results.append(answer.get("result"))
        return results


def _revert_data(error: dict[str, Any]) -> str | None:
    data = error.get("data")
    if isinstance(data, dict):  # Hardhat nests it: {"message": ..., "data": "0x..."}
        data = data.get("data")
    return data if isinstance(data, str) else None
