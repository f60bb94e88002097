"""The sampler's memory bound and the drift window's time limit, driven
directly (``Monitoring.tick`` with explicit times)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from inferd.server.monitoring.reference import REFERENCE_PATH, build
from inferd.server.monitoring.settings import MonitorSettings
from inferd.server.monitoring.worker import Monitoring
from inferd.server.request import InferRequest


def _request(rows: int, rng: np.random.Generator) -> tuple[InferRequest, dict[str, np.ndarray]]:
    x = rng.normal(size=(rows, 4)).astype(np.float32)  # 16 bytes a row
    return InferRequest({"x": x}, (), rows), {"y": x[:, :1] * 2}  # 4 bytes a row


def test_sampling_stops_at_the_byte_budget_and_resumes_once_drained(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    settings = MonitorSettings(sample_rate=1.0, queue_bytes=1000, reference_rows=10_000)
    monitoring = Monitoring(settings, registry, tmp_path)
    monitor = monitoring.version("m", "1", "cpu")
    rng = np.random.default_rng(0)
    for _ in range(10):
        monitor.answer(*_request(15, rng))  # 300 bytes each
    # 3 x 300 < 1000 <= 4 x 300: the fifth and later are dropped, not queued.
    assert len(monitor.pending) == 4
    dropped = {"model": "m", "version": "1"}
    assert registry.get_sample_value("inferd_monitor_samples_dropped_total", dropped) == 6
    monitoring.tick(now=0.0)
    assert not monitor.pending and monitor.drained_bytes == monitor.appended_bytes == 1200
    monitor.answer(*_request(15, rng))
    assert len(monitor.pending) == 1


def test_rows_older_than_the_time_window_leave_it(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    known, outputs = _request(2000, rng)
    build("m", known.inputs, outputs, 2000, "test").save(tmp_path / "m" / REFERENCE_PATH)
    registry = CollectorRegistry()
    settings = MonitorSettings(sample_rate=1.0, window_rows=100, window_s=10.0, min_rows=50)
    monitoring = Monitoring(settings, registry, tmp_path)
    monitor = monitoring.version("m", "1", "cpu")
    labels = {"model": "m", "version": "1"}

    def windows() -> float | None:
        return registry.get_sample_value("inferd_drift_windows_total", labels)

    monitor.answer(*_request(60, rng))
    monitoring.tick(now=0.0)
    assert windows() == 1
    # 100 s later: the 60 rows are out of the 10 s window, 30 new ones too few.
    monitor.answer(*_request(30, rng))
    monitoring.tick(now=100.0)
    assert windows() == 1
    monitor.answer(*_request(30, rng))
    monitoring.tick(now=101.0)
    assert windows() == 2
    psi = registry.get_sample_value("inferd_drift_psi", {**labels, "tensor": "x"})
    assert psi is not None and psi < 1.0  # the same distribution, 60 rows
