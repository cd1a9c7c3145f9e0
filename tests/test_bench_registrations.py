"""The registration benchmark runs as the README shows it, at a small size."""

from __future__ import annotations

import pytest

from scripts import bench_registrations


@pytest.mark.anvil
def test_the_registration_benchmark_runs_at_a_small_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_registrations.main(["--small"]) == 0
    report = capsys.readouterr().out
    assert "commit " in report and "cores" in report
    for run in ("baseline: one registerParticipant per tx", "POST /participants/batch", "POST /participants x 8"):
        assert run in report
