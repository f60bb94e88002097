"""benchmarks.monitoring_cost: monitoring's CPU per request, on against off."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import monitoring_cost


def test_the_replay_samples_captures_a_reference_and_evaluates_drift(tmp_path: Path) -> None:
    from inferd.server.monitoring.settings import MonitorSettings
    from inferd.server.monitoring.worker import Monitoring
    from inferd.server.telemetry import Metrics, Telemetry

    metrics = Metrics(process=False)
    settings = MonitorSettings(
        sample_rate=1.0, reference_rows=1000, window_rows=400, min_rows=200, queue_max=1000
    )
    monitor = Monitoring(settings, metrics.registry, tmp_path)
    hooks = Telemetry(metrics, None, None, monitor).version("digits_mlp", 1)
    assert monitoring_cost.cpu_us_per_request(hooks, monitor, batch=4, requests=3000) > 0
    labels = {"model": "digits_mlp", "version": "1"}
    value = metrics.registry.get_sample_value
    assert value("inferd_input_sampled_rows_total", labels) == 3000
    assert value("inferd_drift_reference_rows", labels) == 1000
    assert value("inferd_drift_windows_total", labels) == 2  # at most one a tick
    assert value("inferd_drift_psi", {**labels, "tensor": "pixels"}) < 0.2  # same distribution


def test_a_short_run_prints_one_line_per_batch_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert monitoring_cost.main(["--batch", "1", "4", "--requests", "2000", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[0] == "batch" and len(lines) == 3
    for line, batch in zip(lines[1:], (1, 4), strict=True):
        size, off, on, added = line.split()
        assert int(size) == batch and float(off) > 0 and float(on) > 0
        assert float(added) == pytest.approx(float(on) - float(off), abs=0.011)
