"""The cancellation benchmark runs as the README shows it, at a small size: a renamed flag, a
refused request or a cancellation never recorded fails here rather than in front of a reader."""

from __future__ import annotations

import pytest

from scripts import bench_cancellations


def test_the_cancellation_benchmark_runs_at_a_small_size(capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--cancellations", "30", "--baseline-cancellations", "10", "--participants", "6"]
    assert bench_cancellations.main(flags) == 0
    out = capsys.readouterr().out
    assert "baseline: one cancelTrade per tx" in out
    assert "http: POST /trades/cancel/batch" in out
