"""Chain time: what `block.timestamp` will roughly be, without a request per question."""

from __future__ import annotations

import threading
import time

from ledger.chain.rpc import JsonRpc


class ChainClock:
    """The latest block (number and timestamp), asked of the node at most every `ttl` seconds.

    The service pre-checks deadlines and gate closure against chain time, not the wall clock, so
    that it agrees with the contract on chains whose clock drifts (and on test chains moved
    forward with evm_increaseTime). Reads use the cached head for their confirmation counts: one
    node call a second instead of one per request."""

    def __init__(self, rpc: JsonRpc, ttl: float = 1.0, max_stale: float = 10.0) -> None:
        self._rpc = rpc
        self._ttl = ttl
        self._max_stale = max_stale
        self._lock = threading.Lock()  # held by the one caller that asks the node
        self._cached: tuple[float, int, int] | None = None  # (when asked, number, timestamp)

    def now(self) -> int:
        return self._latest()[1]

    def head(self) -> int:
        return self._latest()[0]

    def _latest(self) -> tuple[int, int]:
        cached = self._cached
        if cached is not None:
            age = time.monotonic() - cached[0]
            # Past its ttl, one caller asks the node while the others keep answering from the
            # previous head (no request queues behind a node call) unless it is too old.
            if age <= self._ttl or (age <= self._max_stale and self._lock.locked()):
                return cached[1], cached[2]
        with self._lock:
            cached = self._cached
            moment = time.monotonic()
            if cached is None or moment - cached[0] > self._ttl:
                block = self._rpc.call("eth_getBlockByNumber", "latest", False)
                cached = self._cached = (moment, int(block["number"], 16), int(block["timestamp"], 16))
            return cached[1], cached[2]
