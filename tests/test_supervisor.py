"""The supervisor's restart policy on real child processes: a dead child is started again with
its restart count, and after repeated quick deaths the supervisor stops and answers 1."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess

import pytest

from ledger.services import supervisor
from ledger.services.supervisor import Slot, Supervisor
from tests.support import children
from tests.support.service import wait_for


class Child:
    """A spawned child running `target`, with the bookkeeping a slot needs."""

    def __init__(self, target: Callable[[], None]) -> None:
        self.target = target
        self.process: BaseProcess | None = None
        self.started: list[int] = []  # the restart count of each start
        self.deaths: list[str] = []

    def start(self, restarts: int, cancel: threading.Event) -> BaseProcess:
        self.started.append(restarts)
        self.process = multiprocessing.get_context("spawn").Process(target=self.target, daemon=True)
        self.process.start()
        return self.process

    def stop(self, timeout: float) -> None:
        if self.process is not None:
            self.process.kill()  # these children do not stop on request
            self.process.join()

    def slot(self, name: str) -> Slot:
        return Slot(name, self.start, self.stop, lambda restarts, why: self.deaths.append(why))


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "BACKOFF", 0.05)
    monkeypatch.setattr(supervisor, "MAX_BACKOFF", 0.2)
    monkeypatch.setattr(supervisor, "MAX_QUICK_DEATHS", 3)


def test_a_killed_child_is_started_again_and_a_stop_stops_it() -> None:
    child = Child(children.sleep)
    running = Supervisor([child.slot("sleeper")])
    running.start()
    stop = threading.Event()
    first = child.process
    assert first is not None
    first.kill()
    wait_for(lambda: child.started == [0, 1] and child.process is not first, "the child started again")
    assert child.deaths == [f"sleeper process {first.pid} was killed by SIGKILL"]
    stop.set()
    assert running.wait(stop) == 0
    assert child.process is not None and not child.process.is_alive()


def test_repeated_quick_deaths_make_the_supervisor_give_up_with_1() -> None:
    dying, steady = Child(children.exit_3), Child(children.sleep)
    running = Supervisor([steady.slot("steady"), dying.slot("dying")])
    running.start()
    started = time.monotonic()
    assert running.wait(threading.Event()) == 1
    assert time.monotonic() - started < 60
    assert dying.started == [0, 1, 2, 3]  # three restarts, then the fourth quick death ends it
    assert dying.deaths[0].endswith("exited with code 3")
    assert steady.process is not None and not steady.process.is_alive()  # every child stopped
