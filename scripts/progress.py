"""How far a long-running script is, on stderr.

On a terminal, one bar redrawn in place at most ten times a second:

    reindex [#########---------]  50% 1,234/2,468 blocks, 48,000 events, 18,000 events/s, 3 s left

Elsewhere (a CI log, a file), the same line without the bar at most once a second, one per line,
so that a log stays readable. The final state is always shown, ending the line.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO, TypeVar

T = TypeVar("T")

BAR_WIDTH = 24
TERMINAL_INTERVAL = 0.1
LOG_INTERVAL = 1.0


class Progress:
    """`done` of `total` (the total may grow: a chain does), with a note (rates, counts)."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.unit, self.done = label, total, unit, 0
        self._stream = stream if stream is not None else sys.stderr
        self._terminal = self._stream.isatty()
        self._clock = clock
        self._started = clock()
        self._shown_at: float | None = None
        self._finished = False

    def add(self, n: int, note: str = "") -> None:
        self.update(self.done + n, note)

    def update(self, done: int, note: str = "", *, total: int | None = None) -> None:
        """Shows the new state if the last was shown long enough ago; finishes at the total."""
        self.done = done
        if total is not None:
            self.total = total
        if self.done >= self.total:
            self.finish(note)
            return
        now = self._clock()
        interval = TERMINAL_INTERVAL if self._terminal else LOG_INTERVAL
        if self._shown_at is None or now - self._shown_at >= interval:
            self._show(note, now, final=False)

    def finish(self, note: str = "") -> None:
        """Shows the final state once, ending the line."""
        if not self._finished:
            self._finished = True
            self._show(note, self._clock(), final=True)

    def line(self, note: str = "", now: float | None = None) -> str:
        """The state as one line of text, without the bar."""
        now = self._clock() if now is None else now
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{self.label}: {self.done:,}/{self.total:,}{unit}"]
        if note:
            parts.append(note)
        left = self._seconds_left(now)
        if left is not None:
            parts.append(f"{_duration(left)} left")
        return ", ".join(parts)

    def _show(self, note: str, now: float, *, final: bool) -> None:
        self._shown_at = now
        if self._terminal:
            fraction = min(self.done / self.total, 1.0) if self.total > 0 else 1.0
            filled = round(fraction * BAR_WIDTH)
            bar = f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {fraction:4.0%} "
            # \r and erase-to-end-of-line redraw the one line in place.
            text = f"\r{bar}{self.line(note, now)}\x1b[K" + ("\n" if final else "")
        else:
            text = f"  {self.line(note, now)}\n"
        self._stream.write(text)
        self._stream.flush()

    def _seconds_left(self, now: float) -> float | None:
        elapsed = now - self._started
        if self._finished or self.done <= 0 or elapsed <= 0 or self.done >= self.total:
            return None
        return (self.total - self.done) * elapsed / self.done


def _duration(left: float) -> str:
    seconds = math.ceil(left)  # never "0 s left" before the end
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
