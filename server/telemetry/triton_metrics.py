"""Triton's per-model metric families, for dashboards written for Triton
(``--triton-metrics``).

Same names, labels (``model``, ``version``) and units as Triton's
``/metrics``, in the server's registry beside the ``inferd_*`` families,
with Triton's semantics (what ``server.stats`` also keeps for
ModelStatistics):

- ``nv_inference_request_success`` / ``_failure``: requests, each counted
  once whatever its rows; failures by ``reason`` (``REJECTED``: the deadline
  passed in the scheduler; ``CANCELED``; ``BACKEND``: the engine failed;
  ``OTHER``), all four present from the start as in Triton.
- ``nv_inference_count``: rows of successful requests; ``nv_inference_exec_count``:
  engine executions (batches).
- ``nv_inference_*_duration_us``: cumulative microseconds. Request time for
  successful requests; queue time of every request dispatched; compute
  input/infer/output time of its batch counted once per request in it.
- ``nv_inference_*_summary_us``: the same observations as summaries
  (count and sum; no quantile series: the Prometheus client keeps none).
- ``nv_inference_first_response_histogram_ms``: arrival to answer of every
  request a version answered (a unary request's first response is its only one).

Counters are exported as gauges: the Prometheus client library appends
``_total`` to every counter's name and Triton's have no suffix; ``rate()``
and ``increase()`` read them alike. Requests that reached no version (an
unknown model or version) count nowhere here, as in Triton.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, Summary

from inferd.server.telemetry.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from inferd.server.observer import Queued
    from inferd.server.scheduler.records import BatchRecord

#: Triton's default buckets (100, 500, 2000, 5000 ms) and ours, in ms, so a
#: sub-millisecond model still gets a usable histogram.
FIRST_RESPONSE_BUCKETS_MS = tuple(
    sorted({round(b * 1e3, 6) for b in LATENCY_BUCKETS} | {100.0, 500.0, 2000.0, 5000.0})
)

#: Triton's failure reasons, from the gRPC status of the answer.
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
_REASON_OF_CODE = {
    "DEADLINE_EXCEEDED": "REJECTED",
    "CANCELLED": "CANCELED",
    "INTERNAL": "BACKEND",
    "UNKNOWN": "BACKEND",
}

_US = 1e6


def failure_reason(code: str) -> str:
    """Triton's ``reason`` label for a failed request's gRPC status name."""
    return _REASON_OF_CODE.get(code, "OTHER")


class TritonMetrics:
    """The ``nv_inference_*`` families, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        mv = ("model", "version")

        def counter(name: str, doc: str, labels: Sequence[str] = mv) -> Gauge:
            # "sum": with --workers, every worker's value counts, a dead one's too.
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode="sum")

        def summary(name: str, doc: str) -> Summary:
            return Summary(name, doc, mv, registry=registry)

        self.success = counter(
            "nv_inference_request_success",
            "Number of successful inference requests, all batch sizes",
        )
        self.failure = counter(
            "nv_inference_request_failure",
            "Number of failed inference requests, all batch sizes",
            (*mv, "reason"),
        )
        self.count = counter(
            "nv_inference_count", "Number of inferences performed (rows of successful requests)"
        )
        self.exec_count = counter(
            "nv_inference_exec_count", "Number of model executions performed (batches)"
        )
        self.request_us = counter(
            "nv_inference_request_duration_us",
            "Cumulative inference request duration in microseconds (successful requests)",
        )
        self.queue_us = counter(
            "nv_inference_queue_duration_us",
            "Cumulative inference queuing duration in microseconds",
        )
        self.input_us = counter(
            "nv_inference_compute_input_duration_us",
            "Cumulative compute input duration in microseconds",
        )
        self.infer_us = counter(
            "nv_inference_compute_infer_duration_us",
            "Cumulative compute inference duration in microseconds",
        )
        self.output_us = counter(
            "nv_inference_compute_output_duration_us",
            "Cumulative inference compute output duration in microseconds",
        )
        self.request_summary = summary(
            "nv_inference_request_summary_us",
            "Summary of inference request duration in microseconds (successful requests)",
        )
        self.queue_summary = summary(
            "nv_inference_queue_summary_us",
            "Summary of inference queuing duration in microseconds",
        )
        self.input_summary = summary(
            "nv_inference_compute_input_summary_us",
            "Summary of compute input duration in microseconds",
        )
        self.infer_summary = summary(
            "nv_inference_compute_infer_summary_us",
            "Summary of compute inference duration in microseconds",
        )
        self.output_summary = summary(
            "nv_inference_compute_output_summary_us",
            "Summary of inference compute output duration in microseconds",
        )
        self.first_response = Histogram(
            "nv_inference_first_response_histogram_ms",
            "Duration from request to first response in milliseconds",
            mv,
            buckets=FIRST_RESPONSE_BUCKETS_MS,
            registry=registry,
        )

    def version(self, model: str, version: str) -> TritonVersionMetrics:
        return TritonVersionMetrics(self, model, version)


class TritonVersionMetrics:
    """Children bound once per (model, version), as ``VersionMetrics``."""

    __slots__ = (
        "count",
        "exec_count",
        "failure",
        "first_response",
        "infer_summary",
        "infer_us",
        "input_summary",
        "input_us",
        "output_summary",
        "output_us",
        "queue_summary",
        "queue_us",
        "request_summary",
        "request_us",
        "success",
    )

    def __init__(self, metrics: TritonMetrics, model: str, version: str) -> None:
        labels = (model, version)
        self.success: Any = metrics.success.labels(*labels)
        self.failure: dict[str, Any] = {
            reason: metrics.failure.labels(*labels, reason) for reason in FAILURE_REASONS
        }
        self.count: Any = metrics.count.labels(*labels)
        self.exec_count: Any = metrics.exec_count.labels(*labels)
        self.request_us: Any = metrics.request_us.labels(*labels)
        self.queue_us: Any = metrics.queue_us.labels(*labels)
        self.input_us: Any = metrics.input_us.labels(*labels)
        self.infer_us: Any = metrics.infer_us.labels(*labels)
        self.output_us: Any = metrics.output_us.labels(*labels)
        self.request_summary: Any = metrics.request_summary.labels(*labels)
        self.queue_summary: Any = metrics.queue_summary.labels(*labels)
        self.input_summary: Any = metrics.input_summary.labels(*labels)
        self.infer_summary: Any = metrics.infer_summary.labels(*labels)
        self.output_summary: Any = metrics.output_summary.labels(*labels)
        self.first_response: Any = metrics.first_response.labels(*labels)

    def request(self, code: str, seconds: float, rows: int) -> None:
        """One request answered (``on_request``)."""
        self.first_response.observe(seconds * 1e3)
        if code == "OK":
            us = seconds * _US
            self.success.inc()
            self.count.inc(rows)
            self.request_us.inc(us)
            self.request_summary.observe(us)
        else:
            self.failure[failure_reason(code)].inc()

    def dispatched(self, entries: Sequence[Queued], now: float) -> None:
        """A batch left the queue: each request's queue time (``on_dispatch``)."""
        total = 0.0
        observe = self.queue_summary.observe
        for entry in entries:
            us = (now - entry.arrival) * _US
            total += us
            observe(us)
        self.queue_us.inc(total)

    def executed(self, record: BatchRecord) -> None:
        """A batch ran: its compute times, once per request in it (``on_executed``)."""
        self.exec_count.inc()
        n = record.requests
        input_us = record.input_s * _US
        infer_us = record.actual_s * _US
        output_us = record.output_s * _US
        self.input_us.inc(input_us * n)
        self.infer_us.inc(infer_us * n)
        self.output_us.inc(output_us * n)
        for _ in range(n):
            self.input_summary.observe(input_us)
            self.infer_summary.observe(infer_us)
            self.output_summary.observe(output_us)
