"""Cost attribution: engine time per version by device, the rest of the
process's CPU split by requests, priced (server.monitoring.cost)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lifecycle_models import plus, write_config
from monitoring_helpers import metric, wait_until
from prometheus_client import CollectorRegistry

import inferd.server.version_loader as version_loader
from inferd.clients import InferenceClient
from inferd.engines import Engine, Signature
from inferd.server.monitoring.cost import CostMeter
from inferd.server.monitoring.metrics import MonitorMetrics
from inferd.server.monitoring.sampler import VersionMonitor
from inferd.server.monitoring.settings import MonitorSettings

#: Engine seconds per call of the costly model.
DELAY_S = 0.02
CALLS = 20


class KnownCost(Engine):
    """A real onnxruntime engine whose every call takes at least DELAY_S."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    @property
    def signature(self) -> Signature:
        return self.inner.signature

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        time.sleep(DELAY_S)
        return self.inner.infer(inputs, outputs)

    def check_request(self, inputs: Mapping[str, np.ndarray]) -> None:
        self.inner.check_request(inputs)

    def close(self) -> None:
        self.inner.close()


def test_engine_time_of_a_known_cost_engine_is_charged_to_its_version(
    tmp_path: Path, make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("costly", "cheap"):
        plus(tmp_path / name / "1" / "model.onnx", 1)
        write_config(tmp_path, name, extra="")
    real = version_loader.load_engine

    def load(platform: str, path: Path, options: Any) -> Engine:
        engine = real(platform, path, options)
        return KnownCost(engine) if "costly" in path.parts else engine

    monkeypatch.setattr(version_loader, "load_engine", load)
    server = make_server(
        tmp_path,
        metrics_port=0,
        monitor_sample_rate=0.0,
        monitor_interval_s=0.05,
        cost_per_cpu_hour=3600.0,  # one unit per CPU second
    )
    port = server.server.metrics_port
    x = np.ones((2, 2), np.float32)
    with InferenceClient(server.address) as client:
        for _ in range(CALLS):  # one at a time: one batch each
            client.infer("costly", {"x": x})
            client.infer("cheap", {"x": x})

    def read(sample: str, model: str, **labels: str) -> float:
        return metric(port, sample, model=model, version="1", **labels)

    # The thread has caught up once it has charged what the batches took.
    wait_until(
        lambda: (
            read("inferd_engine_seconds_total", "costly", device="cpu")
            == pytest.approx(read("inferd_compute_duration_seconds_sum", "costly"))
        )
    )
    costly = read("inferd_engine_seconds_total", "costly", device="cpu")
    cheap = read("inferd_engine_seconds_total", "cheap", device="cpu")
    assert CALLS * DELAY_S <= costly < 2 * CALLS * DELAY_S
    assert cheap < costly / 4
    # CPU seconds: engine time plus a share of the rest; cost prices them.
    cpu = read("inferd_cpu_seconds_total", "costly")
    assert cpu >= costly
    assert read("inferd_cost_total", "costly") == pytest.approx(cpu)
    assert read("inferd_gpu_seconds_total", "costly") == 0  # no GPU engine


def _monitor(metrics: MonitorMetrics, name: str, device: str) -> VersionMonitor:
    return VersionMonitor(
        name,
        "1",
        device,
        rate=0.0,
        queue_max=1,
        age=metrics.feature_age.labels(name),
        dropped=metrics.dropped.labels(name, "1"),
    )


def test_process_cpu_beyond_cpu_engines_is_split_by_requests() -> None:
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry, 0.2)
    clock = iter([100.0, 101.0, 103.0]).__next__  # process CPU seconds at each read
    settings = MonitorSettings(cost_per_cpu_hour=3600.0, cost_per_gpu_hour=7200.0)
    meter = CostMeter(metrics, settings, cpu_clock=clock)
    on_cpu, on_gpu = _monitor(metrics, "a", "cpu"), _monitor(metrics, "b", "gpu")
    on_cpu.engine_s, on_cpu.requests = 0.3, 10
    on_gpu.engine_s, on_gpu.requests = 0.5, 30
    meter.tick([on_cpu, on_gpu])
    # 1 s of process CPU: 0.3 s was a's engine; 0.7 s split 10:30 by requests.
    value = registry.get_sample_value
    assert value("inferd_cpu_seconds_total", {"model": "a", "version": "1"}) == pytest.approx(
        0.3 + 0.175
    )
    assert value("inferd_cpu_seconds_total", {"model": "b", "version": "1"}) == pytest.approx(0.525)
    assert value("inferd_gpu_seconds_total", {"model": "b", "version": "1"}) == pytest.approx(0.5)
    # 1 per CPU second, 2 per GPU second.
    assert value("inferd_cost_total", {"model": "a", "version": "1"}) == pytest.approx(0.475)
    assert value("inferd_cost_total", {"model": "b", "version": "1"}) == pytest.approx(
        0.525 + 2 * 0.5
    )
    # An interval with no request: its 2 s of CPU is not charged to anyone.
    meter.tick([on_cpu, on_gpu])
    assert meter.unattributed_s == pytest.approx(2.0)
    assert value("inferd_cost_total", {"model": "a", "version": "1"}) == pytest.approx(0.475)
