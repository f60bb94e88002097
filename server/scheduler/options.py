"""Batching options, read from a model's config.

Options come from Triton's ``dynamic_batching`` block and from inferd
parameters in ``config.pbtxt`` (``parameters { key: "..." value {
string_value: "..." } }``); a bad value fails the model's load naming it.
Each entry: unit, bounds, default, then how to tune it.

- ``batching_policy`` (param): ``adaptive`` | ``static`` | ``none``. Default
  ``adaptive`` when the model batches (``max_batch_size`` > 0) and has a
  ``dynamic_batching`` block or no config (auto-complete), else ``none`` (each
  request runs alone, as Triton does without the block). ``static`` reproduces
  Triton's batcher so both can be compared on one server.
- ``latency_budget_ms`` (param, ms, 0.001..3.6e6; else
  ``default_queue_policy.default_timeout_microseconds``): the deadline of
  requests that bring none. Default none. Set it to your callers' SLO.
- ``max_queue_size`` (param or ``default_queue_policy.max_queue_size``,
  requests, 1..2**24): default 2048. Bounds memory under overload: a full queue
  answers UNAVAILABLE at once. Lower it to shed load earlier.
- ``preferred_batch_size`` (rows) and ``max_queue_delay_microseconds`` (µs,
  default 0): the static policy's sizes and window, with Triton's meaning.
  The adaptive policy honours a delay above 0 as the longest it may hold a
  request for a fuller batch (its own rule still stops the wait earlier) and
  ignores preferred sizes (it sizes batches by deadlines and the arrival
  rate); ``ignored_triton_options`` says which, and the model's load logs it.
- ``priority_levels`` / ``default_priority_level``: requests choose a level
  with the ``priority`` parameter; lower numbers are served first.
- ``warmup_rounds`` (param, timed runs per batch size, 1..100): default 5.
  More rounds give a steadier latency model and a slower start.
- ``inline_max_us`` (param, µs, 0..10000): default 0 (off). A batch predicted
  to take less than this runs on the event loop thread instead of an executor
  thread, saving two thread hops (docs/experiments/inline-dispatch.md). Only
  for single-slot models you trust: while it runs, the server
  answers nothing else, and an engine timeout cannot interrupt it.
- ``engine_timeout_ms`` (param, ms, 1..3.6e6): how long one engine call may
  run before its requests are answered UNAVAILABLE and the model is marked
  unhealthy. Default: the server's ``engine_timeout_s`` (30 s). Set it above
  the slowest batch the model runs, with margin.
- ``reply_allowance_us`` (param, µs, 0..1e6): default 500. The adaptive
  policy treats each deadline as this much earlier, so that the answer is
  ready while it still has time to reach the caller: a gRPC deadline reaches
  the server already late by the request's transit, and the answer must
  travel back and be read (docs/experiments/reply-allowance.md). Set it to
  your callers' round trip to the server; 0 aims at the deadline itself. The
  static policy ignores it, as Triton's does.
- ``admission`` (param): ``balanced`` | ``strict``, default ``balanced``.
  How much the adaptive policy's admission adds to its prediction for the
  error's tail (``admission.Margin``): ``balanced`` covers the tail (p99 +
  3 ms) only from 1.2x of what the engine serves within the budget, which
  answers the most requests on time; ``strict`` from 0.8x, for callers who
  would rather be refused at once than answered late (they retry elsewhere,
  or a late answer is worthless to them). ``strict`` also refuses a request
  whose joining a queued batch would make that batch late even when the
  batch is predicted late already (``balanced`` then admits it: refusing
  saves nothing, ``Admission.finish_without``), and its latency model lets a
  stalled batch count up to 2x its size's mean where ``balanced`` counts
  1.25x (``latency.STALL_CLIP``). See docs/experiments/admission-modes.md.
  The static policy ignores it.
- ``batching_utilization`` (param, fraction, 0.1..1): default 0.8. The
  adaptive policy waits for fuller batches only when the arrival rate would
  load the engine past this fraction at the current size. Lower favours
  throughput, higher favours latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from inferd.protos import model_config_pb2
from inferd.server.errors import InvalidArgument
from inferd.server.scheduler.latency import STALL_CLIP, STRICT_STALL_CLIP

POLICIES = ("adaptive", "static", "none")


@dataclass(frozen=True, slots=True)
class AdmissionMode:
    """Everything one ``admission`` setting changes (see ``admission`` above)."""

    #: Fractions of the budget capacity (``Admission.budget_capacity``) over
    #: which the admission margin ramps from its light-load quantile to the
    #: p99 plus reserve (``admission.Margin``).
    ramp: tuple[float, float]
    #: The margin's error quantile on an idle engine: below the ramp it rises
    #: linearly with the load from this to the median at the ramp's start.
    idle_quantile: float
    #: Refuse a request whose joining makes its queued batch finish late even
    #: when that batch is predicted late without it.
    whole_batch_rule: bool
    #: How far one stalled batch may lift its size's mean (``latency``).
    stall_clip: float


#: Balanced puts the p99 and the reserve on the load where the static policy
#: starts to miss (an earlier ramp refused work it answered on time); strict
#: reaches them at 0.8 of the budget capacity. See
#: docs/experiments/admission-ramp.md. Well below the ramp balanced refuses
#: only what is late at the errors' p25 (docs/experiments/idle-quantile.md);
#: strict refuses what is more likely late than not at any load.
ADMISSION_MODES: dict[str, AdmissionMode] = {
    "balanced": AdmissionMode(
        (0.9, 1.2), idle_quantile=0.25, whole_batch_rule=False, stall_clip=STALL_CLIP
    ),
    "strict": AdmissionMode(
        (0.5, 0.8), idle_quantile=0.5, whole_batch_rule=True, stall_clip=STRICT_STALL_CLIP
    ),
}
DEFAULT_MAX_QUEUE = 2048
DEFAULT_WARMUP_ROUNDS = 5
DEFAULT_UTILIZATION = 0.8
DEFAULT_REPLY_ALLOWANCE_S = 0.0005


@dataclass(frozen=True, slots=True)
class BatchingOptions:
    policy: str = "adaptive"
    max_batch_size: int = 0  # rows; 0 = the model does not batch
    #: Batch sizes the engine can run; empty = any size up to max_batch_size.
    engine_sizes: tuple[int, ...] = ()
    budget_s: float | None = None
    max_queue: int = DEFAULT_MAX_QUEUE
    preferred_sizes: tuple[int, ...] = ()
    max_queue_delay_s: float = 0.0
    priority_levels: int = 0
    default_priority: int = 0
    warmup_rounds: int = DEFAULT_WARMUP_ROUNDS
    utilization: float = DEFAULT_UTILIZATION
    #: Seconds before each deadline by which the adaptive policy means the
    #: answer to be ready (its way back to the caller).
    reply_allowance_s: float = DEFAULT_REPLY_ALLOWANCE_S
    #: ``balanced`` | ``strict``: see the module docstring and ``mode``.
    admission: str = "balanced"
    #: Batches predicted faster than this (s) run on the event loop thread.
    inline_max_s: float = 0.0
    #: Triton queue-policy timeout for the static policy (s); None = none.
    queue_timeout_s: float | None = None
    #: Longest one engine call may run (s); None = no limit. See ``execution``.
    engine_timeout_s: float | None = None
    #: Consecutive failed batches after which the engine is probed (and, if
    #: the probe fails too, marked unhealthy).
    failure_threshold: int = 3
    #: Seconds between health probes of an unhealthy engine.
    probe_interval_s: float = 5.0
    sizes: tuple[int, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        # Sizes the scheduler may dispatch (and warmup must measure).
        if self.max_batch_size <= 0:
            sizes: tuple[int, ...] = (1,)
        elif self.engine_sizes:
            sizes = tuple(s for s in sorted(set(self.engine_sizes)) if s <= self.max_batch_size)
        else:
            sizes = tuple(range(1, self.max_batch_size + 1))
        object.__setattr__(self, "sizes", sizes or (1,))

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0 and self.policy != "none"

    @property
    def largest(self) -> int:
        return self.sizes[-1] if self.batched else 1

    def cover(self, rows: int) -> int:
        """Smallest dispatchable size >= rows (padding), else the largest."""
        for s in self.sizes:
            if s >= rows:
                return s
        return self.sizes[-1]

    @property
    def mode(self) -> AdmissionMode:
        return ADMISSION_MODES[self.admission]

    def warmup_sizes(self) -> tuple[int, ...]:
        """Every dispatchable size up to 64; beyond, powers of two and the
        largest (the latency model interpolates between them)."""
        if len(self.sizes) <= 64:
            return self.sizes
        picked = {s for s in self.sizes if s <= 64 or s & (s - 1) == 0}
        picked.add(self.sizes[-1])
        return tuple(sorted(picked))


def ignored_triton_options(options: BatchingOptions) -> list[str]:
    """The Triton ``dynamic_batching`` options set in a model's config that
    its policy does not act on, each with why (empty: all honoured)."""
    if options.policy == "static":
        return []
    ignored = []
    if options.preferred_sizes:
        why = (
            "the adaptive policy sizes batches by deadlines and the arrival rate"
            if options.batched
            else "requests run one at a time"
        )
        ignored.append(f"preferred_batch_size {list(options.preferred_sizes)} ({why})")
    if options.max_queue_delay_s > 0 and not options.batched:
        ignored.append("max_queue_delay_microseconds (requests run one at a time)")
    return ignored


def _param(config: model_config_pb2.ModelConfig, key: str) -> str | None:
    if key in config.parameters:
        return config.parameters[key].string_value.strip()
    return None


def _number(config: model_config_pb2.ModelConfig, key: str, lo: float, hi: float) -> float | None:
    text = _param(config, key)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"parameter '{key}' must be a number, got '{text[:40]}'") from None
    if not (lo <= value <= hi) or math.isnan(value):
        raise InvalidArgument(f"parameter '{key}' must be between {lo:g} and {hi:g}")
    return value


def options_from_config(
    config: model_config_pb2.ModelConfig,
    engine_sizes: Sequence[int] = (),
    *,
    auto_completed: bool = False,
    default_engine_timeout_s: float | None = None,
) -> BatchingOptions:
    """Read the batching options; a bad value raises InvalidArgument naming it."""
    has_block = config.HasField("dynamic_batching")
    dyn = config.dynamic_batching
    policy = _param(config, "batching_policy")
    if policy is None:
        batches = config.max_batch_size > 0 and (has_block or auto_completed)
        policy = "adaptive" if batches else "none"
    if policy not in POLICIES:
        raise InvalidArgument(f"parameter 'batching_policy' must be one of {list(POLICIES)}")
    queue_policy = dyn.default_queue_policy
    budget_ms = _number(config, "latency_budget_ms", 0.001, 3_600_000)
    queue_timeout = (
        queue_policy.default_timeout_microseconds / 1e6
        if queue_policy.default_timeout_microseconds
        else None
    )
    budget_s = budget_ms / 1e3 if budget_ms is not None else queue_timeout
    max_queue = _number(config, "max_queue_size", 1, 1 << 24)
    if max_queue is None and queue_policy.max_queue_size:
        max_queue = queue_policy.max_queue_size
    rounds = _number(config, "warmup_rounds", 1, 100)
    utilization = _number(config, "batching_utilization", 0.1, 1.0)
    inline_us = _number(config, "inline_max_us", 0, 10_000)
    reply_us = _number(config, "reply_allowance_us", 0, 1_000_000)
    timeout_ms = _number(config, "engine_timeout_ms", 1, 3_600_000)
    admission = _param(config, "admission") or "balanced"
    if admission not in ADMISSION_MODES:
        raise InvalidArgument(f"parameter 'admission' must be one of {list(ADMISSION_MODES)}")
    engine_timeout = timeout_ms / 1e3 if timeout_ms is not None else default_engine_timeout_s
    return BatchingOptions(
        policy=policy,
        max_batch_size=max(0, config.max_batch_size),
        engine_sizes=tuple(engine_sizes),
        budget_s=budget_s,
        max_queue=int(max_queue) if max_queue is not None else DEFAULT_MAX_QUEUE,
        preferred_sizes=tuple(sorted(s for s in dyn.preferred_batch_size if s > 0)),
        max_queue_delay_s=dyn.max_queue_delay_microseconds / 1e6,
        priority_levels=int(dyn.priority_levels),
        default_priority=int(dyn.default_priority_level),
        warmup_rounds=int(rounds) if rounds is not None else DEFAULT_WARMUP_ROUNDS,
        utilization=utilization if utilization is not None else DEFAULT_UTILIZATION,
        queue_timeout_s=queue_timeout,
        inline_max_s=(inline_us or 0.0) / 1e6,
        reply_allowance_s=reply_us / 1e6 if reply_us is not None else DEFAULT_REPLY_ALLOWANCE_S,
        admission=admission,
        engine_timeout_s=engine_timeout,
    )
