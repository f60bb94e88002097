"""Prometheus metrics, served as text on ``/metrics`` (``--metrics-port``).

Every series is labelled by ``model`` and ``version`` (the version that
served; a request that never reached one has ``version=""`` and
``model="_unknown"`` unless the name is a repository model, so callers
cannot mint series). Durations are seconds.

=========================================  =========  ============================
name                                       type       labels
=========================================  =========  ============================
inferd_request_duration_seconds            histogram  model, version, code, protocol
inferd_requests_total                      counter    model, version, code, protocol
inferd_inferences_total (rows, OK only)    counter    model, version
inferd_queue_duration_seconds              histogram  model, version
inferd_compute_duration_seconds            histogram  model, version
inferd_batch_size (rows per execution)     histogram  model, version
inferd_batches_total                       counter    model, version, reason
inferd_pending_requests                    gauge      model, version
inferd_requests_refused_total              counter    model, version, reason
inferd_requests_expired_total              counter    model, version, reason
inferd_requests_late_total                 counter    model, version
inferd_requests_cancelled_total            counter    model, version
inferd_model_load_failures_total           counter    model
inferd_model_ready_versions                gauge      model
inferd_shadow_requests_total               counter    model, version, outcome
inferd_guardrail_trips_total               counter    model, version
inferd_cache_hits_total                    counter    model, version
inferd_cache_misses_total                  counter    model, version
inferd_cache_evictions_total               counter    (the response cache, server-wide)
inferd_cache_bytes / inferd_cache_entries  gauge      (the response cache, server-wide)
process_* (CPU, memory, fds, start time)   various    (``worker`` with --workers)
inferd_gpu_* (only where NVML finds GPUs)  gauge      gpu, name
=========================================  =========  ============================

Model monitoring's families (drift, input quality, feature age, cost) are in
``server.monitoring.metrics`` (docs/monitoring.md).

``code`` is the gRPC status name (``OK``, ``INVALID_ARGUMENT``...), also
for requests the HTTP/REST front end answered; ``protocol`` is the front end
(``grpc`` or ``http``). They agree with ModelStatistics: summed over
``protocol``, ``inferd_requests_total{code="OK"}`` is ``success.count``, the
other codes sum to ``fail.count``,
``inferd_queue_duration_seconds`` matches ``queue``,
``inferd_compute_duration_seconds`` (one observation per execution, engine
time) matches the ``batch_stats`` ``compute_infer`` totals,
``inferd_batch_size_count`` is ``execution_count`` and
``inferd_inferences_total`` is ``inference_count``.

Several worker processes (``inferd serve --workers N``) use prometheus-client's
multiprocess mode: each worker writes its values to memory-mapped files in
``PROMETHEUS_MULTIPROC_DIR`` and the supervising process serves ``/metrics``,
summing counters and histograms over the workers (``pending`` sums the live
workers, ``model_ready_versions`` takes the live workers' minimum) and
reporting each worker's process metrics with a ``worker`` label.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from inferd.server.gpu import GpuStat, gpu_snapshot

log = logging.getLogger("inferd.metrics")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Seconds. Fine steps around the usual 5-50 ms SLOs, coarse out to 10 s, and
#: sub-millisecond steps because small models answer in well under 1 ms.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.0125,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: Rows per execution.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

UNKNOWN_MODEL = "_unknown"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


class Metrics:
    """The server's metric families, in their own registry (several servers
    can share a process, as in tests)."""

    def __init__(self, *, process: bool = True, gpu: GpuCollector | None = None) -> None:
        r = self.registry = CollectorRegistry()
        mv = ("model", "version")
        self.request_duration = Histogram(
            "inferd_request_duration_seconds",
            "Inference request time in the server, arrival to response, by gRPC status "
            "and front end",
            (*mv, "code", "protocol"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "inferd_requests",
            "Inference requests answered, by gRPC status and front end",
            (*mv, "code", "protocol"),
            registry=r,
        )
        self.inferences = Counter(
            "inferd_inferences",
            "Rows inferred by successful requests (ModelStatistics inference_count)",
            mv,
            registry=r,
        )
        self.queue_duration = Histogram(
            "inferd_queue_duration_seconds",
            "Time from admission to dispatch, per request that ran",
            mv,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.compute_duration = Histogram(
            "inferd_compute_duration_seconds",
            "Engine time per execution (batch)",
            mv,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "inferd_batch_size", "Rows per execution", mv, buckets=BATCH_BUCKETS, registry=r
        )
        self.batches = Counter(
            "inferd_batches",
            "Executions by the reason they were dispatched",
            (*mv, "reason"),
            registry=r,
        )
        self.pending = Gauge(
            "inferd_pending_requests",
            "Requests admitted and not yet answered (queued or running)",
            mv,
            registry=r,
            multiprocess_mode="livesum",
        )
        self.refused = Counter(
            "inferd_requests_refused",
            "Requests refused before queueing, by reason",
            (*mv, "reason"),
            registry=r,
        )
        self.expired = Counter(
            "inferd_requests_expired",
            "Queued requests answered DEADLINE_EXCEEDED without running, by reason",
            (*mv, "reason"),
            registry=r,
        )
        self.late = Counter(
            "inferd_requests_late", "Requests answered after their deadline", mv, registry=r
        )
        self.cancelled = Counter(
            "inferd_requests_cancelled",
            "Requests withdrawn from the queue by the caller",
            mv,
            registry=r,
        )
        self.load_failures = Counter(
            "inferd_model_load_failures",
            "Failed loads of a model or one of its versions",
            ("model",),
            registry=r,
        )
        self.ready_versions = Gauge(
            "inferd_model_ready_versions",
            "Versions of the model ready to serve (0: not ready)",
            ("model",),
            registry=r,
            multiprocess_mode="livemin",
        )
        # Rollouts: ``version`` is the challenger's.
        self.shadow = Counter(
            "inferd_shadow_requests",
            "Requests mirrored to a shadow challenger, by outcome (agree, disagree, error, "
            "dropped)",
            (*mv, "outcome"),
            registry=r,
        )
        self.guardrail_trips = Counter(
            "inferd_guardrail_trips",
            "Challengers stopped by a guardrail on this replica",
            mv,
            registry=r,
        )
        # The response cache (--response-cache-bytes); hits and misses are
        # ModelStatistics' cache_hit and cache_miss counts.
        self.cache_hits = Counter(
            "inferd_cache_hits", "Requests answered from the response cache", mv, registry=r
        )
        self.cache_misses = Counter(
            "inferd_cache_misses",
            "Requests of cache-enabled models the response cache could not answer",
            mv,
            registry=r,
        )
        self.cache_evictions = Counter(
            "inferd_cache_evictions",
            "Answers pushed out of the response cache to make room (least recently used)",
            registry=r,
        )
        self.cache_bytes = Gauge(
            "inferd_cache_bytes",
            "Bytes the response cache holds",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_entries = Gauge(
            "inferd_cache_entries",
            "Answers the response cache holds",
            registry=r,
            multiprocess_mode="livesum",
        )
        if process:
            ProcessCollector(registry=r)
        if gpu is not None:
            r.register(gpu)

    def version(self, model: str, version: str) -> VersionMetrics:
        return VersionMetrics(self, model, version)

    def unrouted(self, model: str) -> VersionMetrics:
        return VersionMetrics(self, model, "", requests_only=True)


class VersionMetrics:
    """Metric children bound once per (model, version): the hot path only
    looks up a protocol and a status code in small dicts."""

    __slots__ = (
        "_batches",
        "_cache",
        "_codes",
        "_expired",
        "_labels",
        "_metrics",
        "_refused",
        "batch_size",
        "cancelled",
        "compute",
        "inferences",
        "late",
        "pending",
        "queue",
    )

    # Children of the families (None for requests_only).
    inferences: Any
    queue: Any
    compute: Any
    batch_size: Any
    pending: Any
    late: Any
    cancelled: Any

    def __init__(
        self, metrics: Metrics, model: str, version: str, *, requests_only: bool = False
    ) -> None:
        self._metrics = metrics
        self._labels = (model, version)
        # protocol -> code -> (duration, count) children.
        self._codes: dict[str, dict[str, tuple[Any, Any]]] = {}
        self._refused: dict[str, Any] = {}
        self._expired: dict[str, Any] = {}
        self._batches: dict[str, Any] = {}
        self._cache: dict[bool, Any] = {}  # bound at the first lookup: no series without a cache
        if requests_only:
            # For requests that reached no version: only request series, and
            # only for the codes that happen (no empty queue/batch series).
            self.inferences = self.queue = self.compute = self.batch_size = None
            self.pending = self.late = self.cancelled = None
            return
        self.inferences = metrics.inferences.labels(model, version)
        self.queue = metrics.queue_duration.labels(model, version)
        self.compute = metrics.compute_duration.labels(model, version)
        self.batch_size = metrics.batch_size.labels(model, version)
        self.pending = metrics.pending.labels(model, version)
        self.late = metrics.late.labels(model, version)
        self.cancelled = metrics.cancelled.labels(model, version)
        # gRPC is always served: its OK series exist from the start; HTTP's
        # appear with its first request, so a server without it shows none.
        self._code("OK", "grpc")

    def _code(self, code: str, protocol: str) -> tuple[Any, Any]:
        codes = self._codes.get(protocol)
        if codes is None:
            codes = self._codes[protocol] = {}
        pair = codes.get(code)
        if pair is None:
            m = self._metrics
            pair = codes[code] = (
                m.request_duration.labels(*self._labels, code, protocol),
                m.requests.labels(*self._labels, code, protocol),
            )
        return pair

    def request(self, code: str, seconds: float, rows: int, protocol: str) -> None:
        codes = self._codes.get(protocol)
        pair = codes.get(code) if codes is not None else None
        duration, count = pair or self._code(code, protocol)
        duration.observe(seconds)
        count.inc()
        if rows:
            self.inferences.inc(rows)

    def refused(self, reason: str) -> None:
        child = self._refused.get(reason)
        if child is None:
            child = self._refused[reason] = self._metrics.refused.labels(*self._labels, reason)
        child.inc()

    def expired(self, reason: str) -> None:
        child = self._expired.get(reason)
        if child is None:
            child = self._expired[reason] = self._metrics.expired.labels(*self._labels, reason)
        child.inc()

    def cache(self, hit: bool) -> None:
        child = self._cache.get(hit)
        if child is None:
            family = self._metrics.cache_hits if hit else self._metrics.cache_misses
            child = self._cache[hit] = family.labels(*self._labels)
        child.inc()

    def batch(self, reason: str, rows: int, compute_s: float, late: int) -> None:
        child = self._batches.get(reason)
        if child is None:
            child = self._batches[reason] = self._metrics.batches.labels(*self._labels, reason)
        child.inc()
        self.batch_size.observe(rows)
        self.compute.observe(compute_s)
        if late:
            self.late.inc(late)


# -- GPUs ----------------------------------------------------------------------------------


class GpuCollector(Collector):
    """GPU utilization and memory, read through NVML at scrape time
    (``server.gpu.gpu_snapshot``). Without ``nvidia-ml-py``, a driver or a GPU
    it reports nothing: no series at all, never an error in the scrape."""

    def __init__(self, snapshot: Callable[[], list[GpuStat] | None] = gpu_snapshot) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known once NVML answers

    def collect(self) -> Iterable[Metric]:
        try:
            stats = self._snapshot()
        except Exception as exc:  # never fail a scrape over a GPU
            log.debug("GPU metrics unreadable: %s", type(exc).__name__)
            return []
        if not stats:
            return []
        labels = ["gpu", "name"]
        util = GaugeMetricFamily(
            "inferd_gpu_utilization_ratio",
            "Fraction of the last sample period a kernel ran on the GPU (NVML)",
            labels=labels,
        )
        mem_util = GaugeMetricFamily(
            "inferd_gpu_memory_utilization_ratio",
            "Fraction of the last sample period GPU memory was read or written (NVML)",
            labels=labels,
        )
        used = GaugeMetricFamily(
            "inferd_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=labels
        )
        total = GaugeMetricFamily(
            "inferd_gpu_memory_total_bytes", "GPU memory in all (NVML)", labels=labels
        )
        for gpu in stats:
            key = [str(gpu.index), gpu.name]
            util.add_metric(key, gpu.utilization_percent / 100.0)
            mem_util.add_metric(key, gpu.memory_utilization_percent / 100.0)
            used.add_metric(key, float(gpu.memory_used_bytes))
            total.add_metric(key, float(gpu.memory_total_bytes))
        return [util, mem_util, used, total]


# -- several worker processes --------------------------------------------------------------


class WorkerProcessCollector(Collector):
    """``process_*`` metrics of each worker (and of the supervisor), read from
    /proc by the supervising process at scrape time, labelled ``worker``."""

    def __init__(self, workers: Callable[[], dict[str, int]]) -> None:
        self._workers = workers

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        workers = {"supervisor": os.getpid(), **self._workers()}
        for name, pid in workers.items():
            collector = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]
            for family in collector.collect():
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for s in family.samples:
                    target.add_sample(s.name, {**s.labels, "worker": name}, s.value)
        return list(merged.values())


def supervisor_registry(
    path: str, workers: Callable[[], dict[str, int]], gpu: GpuCollector | None = None
) -> CollectorRegistry:
    """What the supervisor of several workers serves: the workers' metrics
    summed from ``path``, their process metrics, and the GPUs."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    registry.register(WorkerProcessCollector(workers))
    if gpu is not None:
        registry.register(gpu)
    return registry


class MetricsServer:
    """The ``/metrics`` HTTP endpoint (prometheus-client's threaded server)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
        self.port = int(self._httpd.server_port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
