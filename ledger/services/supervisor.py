"""Keeps the service's processes running: a dead one is started again, with a growing pause.

`scripts.serve` runs a thin supervising process (it owns the local chain node and the listening
socket) whose children are the API process(es) and the workers' process. Each child has a
`Slot`: how to start it, how to stop it, and what to say while it is down. A thread per slot
starts its child, waits for its death and starts it again after BACKOFF seconds, doubled after
each death that came quickly (within STABLE_AFTER of its start) up to MAX_BACKOFF. After
MAX_QUICK_DEATHS quick deaths in a row the supervisor gives up: it stops every child and `run`
returns 1, so the service exits non-zero and the layer above (systemd's `Restart=on-failure`)
starts it again.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

log = logging.getLogger(__name__)

BACKOFF = 0.5
MAX_BACKOFF = 16.0
STABLE_AFTER = 60.0
MAX_QUICK_DEATHS = 5
# The whole stop of the service must end within 30 s: the children stop in parallel in this.
STOP_TIMEOUT = 15.0


@dataclass
class Slot:
    """One supervised child. `start(restarts)` starts it (blocking until it serves, or raising
    when it cannot start; `cancel` set means the service stops) and returns its process;
    `stop(timeout)` stops it; `on_death(restarts, why)` tells readers it is being brought back."""

    name: str
    start: Callable[[int, threading.Event], BaseProcess]
    stop: Callable[[float], None]
    on_death: Callable[[int, str], None] = lambda restarts, why: None
    restarts: int = 0
    process: BaseProcess | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, slots: list[Slot]) -> None:
        self.slots = slots
        self._stop = threading.Event()
        self._gave_up: str | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Starts every child (each slot's first start in order, so the workers can run before the
        API serves), then watches them in the background."""
        for slot in self.slots:
            slot.process = slot.start(0, self._stop)
        for slot in self.slots:
            thread = threading.Thread(target=self._keep, args=(slot,), name=f"supervise-{slot.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wait(self, stop: threading.Event) -> int:
        """Returns when `stop` is set (0) or the supervisor gave up on a child (1), every child stopped."""
        while not stop.wait(0.2) and not self._stop.is_set():
            pass
        log.info("stopping every process" if self._gave_up is None else "stopping every process after giving up")
        self.stop()
        log.info("stopped")
        return 1 if self._gave_up is not None else 0

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(STOP_TIMEOUT)
        stoppers = [threading.Thread(target=slot.stop, args=(STOP_TIMEOUT,)) for slot in self.slots]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()

    def _keep(self, slot: Slot) -> None:
        started = time.monotonic()
        quick = 0
        while not self._stop.is_set():
            process = slot.process
            if process is not None:
                while not self._stop.is_set() and not wait([process.sentinel], timeout=0.5):
                    pass
                if self._stop.is_set():
                    return
                process.join(5)  # the sentinel can fire just before the process can be reaped
                why = f"{slot.name} process {process.pid} {_ended(process.exitcode)}"
            else:
                why = f"{slot.name} process did not start"
            quick = quick + 1 if time.monotonic() - started < STABLE_AFTER else 1
            if quick > MAX_QUICK_DEATHS:
                log.critical("%s: %d times within %g s of its start; giving up", why, quick, STABLE_AFTER)
                self._gave_up = slot.name
                self._stop.set()
                return
            delay = min(MAX_BACKOFF, BACKOFF * 2 ** (quick - 1))
            slot.restarts += 1
            log.error("%s: restarting it in %g s (restart %d)", why, delay, slot.restarts)
            slot.stop(0)  # reaps it and frees what the parent held for it
            slot.process = None
            slot.on_death(slot.restarts, why)
            if self._stop.wait(delay):
                return
            started = time.monotonic()
            try:
                slot.process = slot.start(slot.restarts, self._stop)
            except Exception as exc:  # a failed start counts as a quick death
                log.error("%s could not start again: %s", slot.name, exc)
                continue
            log.info("%s restarted as process %d", slot.name, slot.process.pid)


def _ended(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode}"
