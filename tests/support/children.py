"""Targets of spawned test processes, in a module that imports nothing heavy: a spawned child
imports the module of its target first."""

from __future__ import annotations

import time


def sleep() -> None:
    time.sleep(60)


def exit_3() -> None:
    raise SystemExit(3)
