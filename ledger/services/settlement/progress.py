"""What a run reports while it works: its step, and how far through the step it is."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Step(StrEnum):
    GATHERING = "gathering inputs"
    RESUMING = "resuming"
    COMPUTING = "computing"
    BUILDING_TREE = "building the tree"
    WRITING = "writing lines"
    COMMITTING = "committing"
    DONE = "done"


@dataclass(frozen=True)
class ProgressEvent:
    step: Step
    detail: str = ""
    done: int | None = None
    total: int | None = None


Progress = Callable[[ProgressEvent], None]


def no_progress(_event: ProgressEvent) -> None:
    pass
