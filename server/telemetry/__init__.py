"""Telemetry: Prometheus metrics, OpenTelemetry traces, structured logs.

``Telemetry`` implements the ``server.observer`` hooks by fanning each event
out to metrics (with ``--triton-metrics`` Triton's families too,
``triton_metrics``) and tracing, whichever are on. With both off the model manager
gets the no-op observer and nothing here runs on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from inferd.server.observer import NULL_VERSION_OBSERVER, Queued, ServerObserver, VersionObserver
from inferd.server.telemetry.metrics import UNKNOWN_MODEL, Metrics, VersionMetrics
from inferd.server.telemetry.tracing import Tracing, VersionTracing
from inferd.server.telemetry.triton_metrics import TritonMetrics, TritonVersionMetrics

if TYPE_CHECKING:
    import numpy as np

    from inferd.server.monitoring.sampler import VersionMonitor
    from inferd.server.monitoring.worker import Monitoring
    from inferd.server.request import InferRequest
    from inferd.server.scheduler.records import BatchRecord

__all__ = ["Metrics", "Telemetry", "Tracing", "TritonMetrics", "VersionTelemetry"]


class VersionTelemetry(VersionObserver):
    __slots__ = ("m", "n", "s", "t")

    def __init__(
        self,
        m: VersionMetrics | None,
        t: VersionTracing | None,
        n: TritonVersionMetrics | None = None,
        s: VersionMonitor | None = None,
    ) -> None:
        self.m = m
        self.t = t
        self.n = n  # Triton's families (--triton-metrics)
        self.s = s  # model monitoring (server.monitoring)

    def on_answer(self, request: InferRequest, outputs: dict[str, np.ndarray]) -> None:
        if self.s is not None:
            self.s.answer(request, outputs)

    def on_request(self, code: str, seconds: float, rows: int, protocol: str) -> None:
        if self.m is not None:
            self.m.request(code, seconds, rows, protocol)
        if self.n is not None:
            self.n.request(code, seconds, rows)

    def on_cache(self, hit: bool) -> None:
        if self.m is not None:
            self.m.cache(hit)

    def on_pending(self, delta: int) -> None:
        if self.m is not None:
            self.m.pending.inc(delta)

    def on_refused(self, reason: str) -> None:
        if self.m is not None:
            self.m.refused(reason)

    def on_expired(self, entry: Queued, reason: str, now: float) -> None:
        if self.m is not None:
            self.m.expired(reason)
        if self.t is not None:
            self.t.on_dropped(entry, f"expired:{reason}", now)

    def on_cancelled(self, entry: Queued, now: float) -> None:
        if self.m is not None:
            self.m.cancelled.inc()
        if self.t is not None:
            self.t.on_dropped(entry, "cancelled", now)

    def on_dispatch(
        self, entries: Sequence[Queued], reason: str, slack: float, now: float
    ) -> object:
        m = self.m
        if m is not None:
            queue = m.queue
            for entry in entries:
                queue.observe(now - entry.arrival)
        if self.n is not None:
            self.n.dispatched(entries, now)
        if self.t is not None:
            return self.t.on_dispatch(entries, reason, slack, now)
        return None

    def on_executed(self, token: object, entries: Sequence[Queued], record: BatchRecord) -> None:
        if self.s is not None:
            self.s.executed(record.actual_s)
        if self.m is not None:
            self.m.batch(record.reason, record.rows, record.actual_s, record.late)
        if self.n is not None:
            self.n.executed(record)
        if self.t is not None:
            self.t.on_executed(token, record)

    def on_failed(
        self, token: object, entries: Sequence[Queued], error: BaseException, now: float
    ) -> None:
        if self.t is not None:
            self.t.on_failed(token, error, now)


class Telemetry(ServerObserver):
    """What a server reports, to metrics and/or tracing."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
        triton: TritonMetrics | None = None,
        monitoring: Monitoring | None = None,
    ) -> None:
        self.metrics = metrics
        #: Model monitoring (needs metrics): drift, input quality, freshness, cost.
        self.monitoring = monitoring if metrics is not None else None
        self.tracing = tracing
        self.triton = triton
        #: Names the model manager told us about (repository names: trusted).
        self._models: set[str] = set()
        self._unrouted: dict[str, VersionObserver] = {}

    def version(self, name: str, version: int, device: str = "cpu") -> VersionObserver:
        self._models.add(name)
        if self.metrics is None and self.tracing is None:
            return NULL_VERSION_OBSERVER
        v = str(version)
        return VersionTelemetry(
            self.metrics.version(name, v) if self.metrics is not None else None,
            self.tracing.version(name, v) if self.tracing is not None else None,
            self.triton.version(name, v) if self.triton is not None else None,
            self.monitoring.version(name, v, device) if self.monitoring is not None else None,
        )

    def unrouted(self, name: str) -> VersionObserver:
        if self.metrics is None:
            return NULL_VERSION_OBSERVER
        key = name if name in self._models else UNKNOWN_MODEL
        observer = self._unrouted.get(key)
        if observer is None:
            observer = self._unrouted[key] = VersionTelemetry(self.metrics.unrouted(key), None)
        return observer

    def on_model_state(self, name: str, ready_versions: int) -> None:
        self._models.add(name)
        if self.metrics is not None:
            self.metrics.ready_versions.labels(name).set(ready_versions)

    def on_load_failed(self, name: str) -> None:
        self._models.add(name)
        if self.metrics is not None:
            self.metrics.load_failures.labels(name).inc()

    def on_shadow(self, name: str, version: int, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.shadow.labels(name, str(version), outcome).inc()

    def on_cache_change(self, size_bytes: int, entries: int, evicted: int) -> None:
        if self.metrics is not None:
            self.metrics.cache_bytes.set(size_bytes)
            self.metrics.cache_entries.set(entries)
            if evicted:
                self.metrics.cache_evictions.inc(evicted)

    def on_guardrail_trip(self, name: str, version: int) -> None:
        if self.metrics is not None:
            self.metrics.guardrail_trips.labels(name, str(version)).inc()
