"""The long-running scripts' progress: a bar redrawn in place on a terminal, a line a second in a log."""

from __future__ import annotations

import io

from scripts.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_a_line_a_second_with_the_time_left_then_the_final_state() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress("reindex", 100, unit="blocks", stream=stream, clock=clock)

    clock.now += 2.0
    progress.update(20, "4,000 events")  # 20 blocks in 2 s: 80 left take 8 s
    clock.now += 0.5
    progress.update(30, "6,000 events")  # within the second: not shown
    clock.now += 0.5
    progress.update(40, "8,000 events")
    clock.now += 1.0
    progress.update(100, "20,000 events")

    assert stream.getvalue().splitlines() == [
        "  reindex: 20/100 blocks, 4,000 events, 8 s left",
        "  reindex: 40/100 blocks, 8,000 events, 5 s left",  # 4.5 s, rounded up
        "  reindex: 100/100 blocks, 20,000 events",
    ]


def test_on_a_terminal_one_bar_redrawn_in_place_ending_its_line_when_done() -> None:
    stream, clock = Terminal(), Clock()
    progress = Progress("verify", 4, stream=stream, clock=clock)

    clock.now += 30.0
    progress.add(1)
    clock.now += 0.0625
    progress.add(1)  # within a tenth of a second: not redrawn
    clock.now += 0.125
    progress.add(1)
    progress.add(1)
    progress.finish()  # once only

    frames = stream.getvalue().split("\r")[1:]
    assert frames == [
        "[######------------------]  25% verify: 1/4, 1 min 30 s left\x1b[K",
        "[##################------]  75% verify: 3/4, 11 s left\x1b[K",  # 10.06 s
        "[########################] 100% verify: 4/4\x1b[K\n",
    ]


def test_a_total_that_grows_keeps_the_bar_open() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress("reindex", 10, stream=stream, clock=clock)

    clock.now += 1.0
    progress.update(10, total=15)  # the chain grew meanwhile
    assert stream.getvalue() == "  reindex: 10/15, 1 s left\n"
    progress.update(15)
    assert stream.getvalue().splitlines()[-1] == "  reindex: 15/15"
    progress.update(15)
    assert len(stream.getvalue().splitlines()) == 2
