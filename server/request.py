"""The request as the data plane and the layers below it see it: numpy and a deadline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inferd.server.identity import Principal

ParamValue = bool | int | float | str


@dataclass(slots=True)
class InferRequest:
    inputs: dict[str, np.ndarray]
    #: Output names to return, in the caller's order; empty means all.
    outputs: tuple[str, ...]
    #: Rows in the batch dimension (1 for a model that does not batch).
    rows: int
    id: str = ""
    parameters: dict[str, ParamValue] = field(default_factory=dict)
    #: Outputs asked for as class results, with their K; the codec applies
    #: it on the way out and the layers below ignore it.
    classification: dict[str, int] = field(default_factory=dict)
    #: ``time.monotonic()`` seconds by which the answer is due; None: no deadline.
    deadline: float | None = None
    #: 0 is the default level; lower numbers are served first (Triton semantics).
    priority: int = 0
    #: Telemetry's handle on the request (its trace span, or None); the
    #: scheduler passes it to its observer untouched.
    trace: object | None = None
    #: Filled in by the scheduler that ran it: ns queued, and the compute
    #: durations of the batch it rode in (an ensemble sums its steps' into its own).
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0
    #: Who the request runs for (set by the data plane; None: from inside the
    #: server, e.g. warmup). A Python model's BLS calls act for it.
    principal: Principal | None = None
