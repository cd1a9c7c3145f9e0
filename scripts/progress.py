"""Progress counts for the long-running scripts: on stderr, at most once a second."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


class Progress:
    """`label: done/total`, printed when a second has passed since the last line, and at the end."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self._last = label, total, 0, 0.0

    def add(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last > 1.0 or self.done >= self.total:
            self._last = now
            print(f"  {self.label}: {self.done:,}/{self.total:,}", file=sys.stderr, flush=True)


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
