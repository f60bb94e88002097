"""Helpers for the telemetry tests: scrape and read Prometheus text, read spans."""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from metrics_scrape import scrape, scrape_text, value  # noqa: F401  (re-exported)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.metrics_core import Metric

from inferd.server.gpu import GpuStat
from inferd.server.telemetry.tracing import Tracing

#: The ``make_tracing`` fixture (tests/conftest.py).
MakeTracing = Callable[..., tuple[Tracing, InMemorySpanExporter]]


def series(families: Iterable[Metric], sample: str) -> list[dict[str, str]]:
    return [dict(s.labels) for family in families for s in family.samples if s.name == sample]


def buckets(families: Iterable[Metric], metric: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative (le, count) pairs of histogram ``metric``, summed over the
    series matching ``labels`` (as ``sum by (le)`` does), sorted by le."""
    summed: dict[float, float] = defaultdict(float)
    for family in families:
        for s in family.samples:
            if s.name != f"{metric}_bucket":
                continue
            if all(s.labels.get(k) == v for k, v in labels.items()):
                summed[float(s.labels["le"])] += s.value
    return sorted(summed.items())


def histogram_quantile(q: float, cumulative: Sequence[tuple[float, float]]) -> float:
    """PromQL's histogram_quantile over cumulative (le, count) buckets."""
    if len(cumulative) < 2 or not math.isinf(cumulative[-1][0]):
        return math.nan
    total = cumulative[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    for i, (upper, count) in enumerate(cumulative):
        if count >= rank:
            if math.isinf(upper):
                return cumulative[-2][0]
            lower, below = (0.0, 0.0) if i == 0 else cumulative[i - 1]
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
    return math.nan


def children(spans: Sequence[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    ctx = parent.get_span_context()
    assert ctx is not None
    return [
        s
        for s in spans
        if s.parent is not None
        and s.parent.span_id == ctx.span_id
        and s.parent.trace_id == ctx.trace_id
    ]


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None
    return ctx.span_id


def linked_ids(span: ReadableSpan) -> list[int]:
    return [link.context.span_id for link in span.links]


# -- inferd in a child process ---------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inferd:
    """``inferd serve`` in a child process (cwd: this worktree), stderr to a file."""

    def __init__(
        self,
        repository: Path,
        log_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        grpc_port: int | None = None,
    ) -> None:
        self.grpc_port = grpc_port or free_port()
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        child_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("OTEL_") and k != "PROMETHEUS_MULTIPROC_DIR"
        }
        child_env.update(env or {})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inferd",
                "serve",
                "--model-repository",
                str(repository),
                "--grpc-port",
                str(self.grpc_port),
                "--grace-s",
                "5",
                *args,
            ],
            cwd=ROOT,
            env=child_env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )

    def wait_ready(self, timeout: float = 60, model: str = "") -> None:
        """Until ServerReady (or, with ``model``, that model) answers true."""
        from inferd.clients import InferenceClient

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                with InferenceClient(self.address) as client:
                    if model and client.is_model_ready(model, timeout=1):
                        return
                    if not model and client.is_server_ready(timeout=1):
                        return
            except Exception:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"inferd did not become ready:\n{self.log_path.read_text()}")

    def wait_workers_ready(self, workers: int, timeout: float = 60) -> None:
        """With ``--log-format json --workers N``: until N workers have logged
        that they serve (a worker binds, then loads; one still loading answers
        NOT_FOUND, so ServerReady on a few connections is not enough)."""
        import json

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            started = set()
            for line in self.log_lines():
                if line.startswith("{"):
                    record = json.loads(line)
                    if record.get("event") == "startup" and "versions_ready" in record:
                        started.add(record["pid"])
            if len(started) >= workers:
                return
            time.sleep(0.1)
        raise TimeoutError(f"workers did not start:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        """SIGTERM, wait for the drain; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return int(self.proc.returncode)

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines()


def fake_gpus(broken: int | None = None) -> list[GpuStat]:
    """What ``server.gpu.gpu_snapshot`` returns on a host with two GPUs (one
    left out when ``broken``, as NVML failures are)."""
    return [
        GpuStat(
            index=i,
            name="NVIDIA H100",
            utilization_percent=40.0 + i,
            memory_utilization_percent=10.0,
            memory_used_bytes=(i + 1) << 30,
            memory_total_bytes=80 << 30,
        )
        for i in range(2)
        if i != broken
    ]
