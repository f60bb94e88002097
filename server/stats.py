"""Cumulative per-version statistics with Triton's ModelStatistics semantics.

Counters only grow. ``success``/``fail`` time a request end to end inside the
server, ``queue`` from admission to execution start, ``compute_*`` the batch
it rode in (counted once per request, as Triton does). ``inference_count``
counts rows, ``execution_count`` engine executions. All updates happen on the
event loop thread, so no locks are needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns


@dataclass(slots=True)
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelStats:
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    #: Response cache lookups that answered (lookup and copy-out time), and
    #: those that did not (lookup and insert time), as Triton counts them.
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, BatchStats] = field(default_factory=dict)

    def record_execution(
        self, batch_rows: int, requests: int, input_ns: int, infer_ns: int, output_ns: int
    ) -> None:
        """One engine execution of ``batch_rows`` rows serving ``requests`` requests."""
        self.execution_count += 1
        stats = self.batches.get(batch_rows)
        if stats is None:
            stats = self.batches[batch_rows] = BatchStats()
        stats.compute_input.add(input_ns)
        stats.compute_infer.add(infer_ns)
        stats.compute_output.add(output_ns)
        self.compute_input.add(input_ns * requests, requests)
        self.compute_infer.add(infer_ns * requests, requests)
        self.compute_output.add(output_ns * requests, requests)

    def record_queue(self, ns: int) -> None:
        self.queue.add(ns)

    def record_success(self, total_ns: int, rows: int) -> None:
        self.success.add(total_ns)
        self.inference_count += rows
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_failure(self, total_ns: int) -> None:
        self.fail.add(total_ns)

    def record_cache_hit(self, ns: int) -> None:
        """A hit: Triton counts it in ``queue`` too (with its lookup time),
        never in ``inference_count``, ``execution_count`` or compute."""
        self.cache_hit.add(ns)
        self.queue.add(ns)

    def record_cache_miss(self, ns: int) -> None:
        self.cache_miss.add(ns)
