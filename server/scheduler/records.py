"""What the scheduler tells telemetry: executed batches and request counters."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field


@dataclass(slots=True)
class BatchRecord:
    """One executed batch, for telemetry. Times are ``time.monotonic()`` seconds."""

    size: int
    rows: int
    requests: int
    reason: str
    slack_s: float
    predicted_s: float
    #: Engine time (compute_infer).
    actual_s: float
    #: Merging inputs (compute_input) and splitting outputs (compute_output).
    input_s: float = 0.0
    output_s: float = 0.0
    dispatched: float = 0.0
    #: When merging inputs began (0.0: not measured).
    started: float = 0.0
    finished: float = 0.0
    #: Requests in the batch answered after their deadline.
    late: int = 0


@dataclass(slots=True)
class Counters:
    """Requests refused at arrival (by reason: ``deadline``: it would finish
    late; ``batch_deadline``: the queued batch it would join would then finish
    late for the requests already in it; ``overtakes``: going ahead of queued
    requests due later would make one of them late; ``queue_full``;
    ``unloading``),
    expired in the queue, or answered late."""

    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    expired: int = 0
    late: int = 0
    cancelled: int = 0
    #: Requests answered with outputs (on time or late).
    answered: int = 0
