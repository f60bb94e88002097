"""Batching options, read from a model's config, and the two dispatch plans.

Options come from Triton's ``dynamic_batching`` block and from inferd
parameters in ``config.pbtxt`` (``parameters { key: "..." value {
string_value: "..." } }``); a bad value fails the model's load naming it.

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
- ``priority_levels`` / ``default_priority_level``: requests choose a level
  with the ``priority`` parameter; lower numbers are served first.
- ``warmup_rounds`` (param, timed runs per batch size, 1..100): default 5.
  More rounds give a steadier latency model and a slower start.
- ``inline_max_us`` (param, µs, 0..10000): default 0 (off). A batch predicted
  to take less than this runs on the event loop thread instead of an executor
  thread, saving two thread hops (about 6% CPU per request on a 64-256-256-10
  MLP). Only for single-slot models you trust: while it runs, the server
  answers nothing else, and an engine timeout cannot interrupt it.
- ``engine_timeout_ms`` (param, ms, 1..3.6e6): how long one engine call may
  run before its requests are answered UNAVAILABLE and the model is marked
  unhealthy. Default: the server's ``engine_timeout_s`` (30 s). Set it above
  the slowest batch the model runs, with margin.
- ``reply_allowance_us`` (param, µs, 0..1e6): default 500. The adaptive
  policy treats each deadline as this much earlier, so that the answer is
  ready while it still has time to reach the caller: a gRPC deadline reaches
  the server already late by the request's transit, and the answer must
  travel back and be read. With the load generator on the same 2 cores,
  55-89% of the answers that reached it late had been ready before the
  server's deadline (7 traced runs), and the median answer took 0.7-1.6 ms
  more at the client than inside the server. A/B of 0 / 0.5 / 1 ms (4
  rounds x 10 s, Poisson trace at 0.9x of capacity): admitted on time
  0.9903 / 0.9974 / 0.9936, goodput 254 / 250 / 218 requests/s (1 ms
  refused more and fell more often into small batches); level at 0.5x and
  on the bursty trace. Set it to your callers' round trip to the server; 0
  aims at the deadline itself. The static policy ignores it, as Triton's
  does.
- ``admission`` (param): ``balanced`` | ``strict``, default ``balanced``.
  How much the adaptive policy's admission adds to its prediction for the
  error's tail (``server.batcher._Margin``): ``balanced`` covers the tail
  (p99 + 3 ms) only from 1.2x of what the engine serves within the budget,
  which answers the most requests on time; ``strict`` from 0.8x, for callers
  who would rather be refused at once than answered late (they retry
  elsewhere, or a late answer is worthless to them). ``strict`` also refuses
  a request whose joining a queued batch would make that batch late even
  when the batch is predicted late already (``balanced`` then admits it:
  refusing saves nothing, ``BatchingScheduler._finish_without``), and its
  latency model lets a stalled batch count up to 2x its size's mean where
  ``balanced`` counts 1.25x (``server.latency.STALL_CLIP``). A/B on
  the Poisson trace (25 ms budget, 3 rounds x 10 s, two runs): at 0.9x of
  capacity admitted on time 0.9998 / 0.9988 strict against 0.9977 /
  0.9888 balanced, attainment 0.432 / 0.543 against 0.397 / 0.691; at 0.7x
  0.9990 / 0.9969 against 0.9844 / 0.9826, attainment 0.615 / 0.736 against
  0.746 / 0.800. The static policy ignores it.
- ``batching_utilization`` (param, fraction, 0.1..1): default 0.8. The
  adaptive policy waits for fuller batches only when the arrival rate would
  load the engine past this fraction at the current size. Lower favours
  throughput, higher favours latency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from inferd.protos import model_config_pb2
from inferd.server.errors import InvalidArgument
from inferd.server.latency import STALL_CLIP, STRICT_STALL_CLIP, LatencyModel

POLICIES = ("adaptive", "static", "none")


@dataclass(frozen=True, slots=True)
class AdmissionMode:
    """Everything one ``admission`` setting changes (see ``admission`` above)."""

    #: Fractions of the budget capacity (``BatchingScheduler._budget_capacity``)
    #: over which the admission margin ramps from its light-load quantile to
    #: the p99 plus reserve (``server.batcher._Margin``).
    ramp: tuple[float, float]
    #: Refuse a request whose joining makes its queued batch finish late even
    #: when that batch is predicted late without it.
    whole_batch_rule: bool
    #: How far one stalled batch may lift its size's mean (``server.latency``).
    stall_clip: float


#: Balanced's ramp: the budget capacity counts two batch times in the budget,
#: so at 0.5 / 0.7 / 0.9x of the throughput the server reaches with its
#: largest batches it reads about 0.75 / 1.0 / 1.2-1.4 (batching_reference,
#: 25 ms). The ramp was 0.7-1.0 before, set when the load was taken against
#: that throughput and kept when the signal changed: it put the p99 and the
#: reserve on 0.7x, where adaptive then refused 20-40% while the static policy
#: answered 86-93% on time. Strict's reaches the p99 and the reserve at 0.8 of
#: the budget capacity, about 0.6x of the benchmark's capacity.
ADMISSION_MODES: dict[str, AdmissionMode] = {
    "balanced": AdmissionMode((0.9, 1.2), whole_batch_rule=False, stall_clip=STALL_CLIP),
    "strict": AdmissionMode((0.5, 0.8), whole_batch_rule=True, stall_clip=STRICT_STALL_CLIP),
}
DEFAULT_MAX_QUEUE = 2048
DEFAULT_WARMUP_ROUNDS = 5
DEFAULT_UTILIZATION = 0.8
DEFAULT_REPLY_ALLOWANCE_S = 0.0005
#: Share of a request's budget the adaptive planner may spend waiting for a
#: fuller batch (see ``AdaptivePlanner``). The engine idles meanwhile: at 0.9x
#: of capacity, 36-45% of batches were held ~2.5 ms with work queued. A/B of
#: 0.1 against 0.2 (3 rounds x 10 s each, two runs per trace): Poisson 0.9x
#: attainment +8 and +13 points, admitted on time 0.9985 / 0.9988 vs 0.9948 /
#: 0.9964, level to better at 0.5-0.7x; bursty 0.1-0.2x mixed in one run
#: (-5 / -3 / +7 points), better in the other (+5 / +3 / +7).
MAX_WAIT_SHARE = 0.1


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
    #: Longest one engine call may run (s); None = no limit. See ``server.batcher``.
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


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now: dispatch ``size`` rows (``take`` real ones), or wait."""

    size: int = 0
    take: int = 0
    reason: str = ""
    #: Seconds of slack the earliest request had at dispatch (inf: no deadline).
    slack: float = math.inf
    #: When waiting: the monotonic time to plan again at the latest.
    wake_at: float | None = None


@dataclass(frozen=True, slots=True)
class QueueState:
    """What a planner sees when an execution slot is free."""

    #: Rows queued (all shapes).
    rows: int
    head_deadline: float
    head_arrival: float
    #: Rows/s offered to the model (refused ones included).
    arrival_rate: float
    #: Returns the first queued requests in dispatch order, as (rows,
    #: deadline), enough for two batches; called only when a batch may need
    #: cutting (building the view costs more than the rest of a plan).
    queue: Callable[[], Sequence[tuple[int, float]]] = tuple


class Planner:
    """Decides, when a slot is free, whether to dispatch and how big."""

    #: Seconds kept free before each deadline for what happens outside the
    #: engine (gRPC, the event loop, merging). 3 ms is what this work measured
    #: on 2 busy cores.
    #: The static policy ignores it, as Triton's does.
    reserve: float = 0.003

    def __init__(self, options: BatchingOptions, latency: LatencyModel) -> None:
        self.options = options
        self.latency = latency

    def plan(self, now: float, state: QueueState) -> Plan:
        raise NotImplementedError

    def _fit(self, rows: int) -> int:
        """Largest dispatchable size <= rows (at least the smallest size)."""
        sizes = self.options.sizes
        best = sizes[0]
        for s in sizes:
            if s <= rows:
                best = s
        return best

    def cover(self, rows: int) -> int:
        """Smallest dispatchable size >= rows (padding), else the largest."""
        for s in self.options.sizes:
            if s >= rows:
                return s
        return self.options.sizes[-1]


class AdaptivePlanner(Planner):
    """Plan each batch against the earliest deadline and the arrival rate.

    With a free slot and ``rows`` queued it dispatches at once, unless the
    arrival rate says the engine could not keep up at this batch size (its
    utilization would pass ``options.utilization``); then it waits for the
    smallest batch that keeps up, but never past the moment the earliest
    deadline would be missed (its slack). Batches are cut where the most
    queued requests finish on time (``cut``); padding up to an engine size is
    used only when the padded batch still fits.
    """

    def plan(self, now: float, state: QueueState) -> Plan:
        opts, lat = self.options, self.latency
        rows, head_arrival, arrival_rate = state.rows, state.head_arrival, state.arrival_rate
        head_deadline = state.head_deadline - self.reserve
        largest = opts.largest
        take = min(rows, largest)
        if now + lat.mean(self.cover(take)) > head_deadline:
            # The head would be late in the whole batch: weigh cutting it.
            # (Otherwise a cut only delays the rest. A batch cut short needs
            # no rule against waiting: a fuller batch would make the head late
            # too, so the slack check below dispatches it.)
            take = self.cut(now, state.queue(), take)
        size = self.cover(take)
        if size != take and now + lat.high(size) > head_deadline:
            size = take = self._fit(take)  # padding would make the head late
        slack = head_deadline - now - lat.high(size)
        if take >= largest:
            return Plan(size, take, "full", slack)
        if slack <= 0:
            return Plan(size, take, "deadline", slack)
        target = self._keep_up_size(arrival_rate)
        if take >= target:
            return Plan(size, take, "ready", slack)
        # Waiting gathers about rate * t rows; stop waiting before slack runs out.
        target_slack = head_deadline - now - lat.high(self.cover(target))
        if target_slack <= 0:
            return Plan(size, take, "deadline", slack)
        # Waiting is a bet on arrivals; cap it at a tenth of the head's budget so
        # a lull never spends the slack that admission promised to callers.
        wait_until = head_arrival + MAX_WAIT_SHARE * (head_deadline - head_arrival)
        if now >= wait_until:
            return Plan(size, take, "waited", slack)
        needed = (target - take) / arrival_rate if arrival_rate > 0 else math.inf
        return Plan(wake_at=min(now + min(target_slack, needed), wait_until))

    def cut(self, now: float, queue: Sequence[tuple[int, float]], take: int) -> int:
        """How many of ``take`` rows to run now: the cut (at a request
        boundary, in queue order) under which the most requests finish on
        time, counting this batch and the one after it, by mean engine times
        (the likeliest outcome; the p95 made cuts that saved the head by a
        margin it did not need); ties go to the larger batch. A smaller batch
        can save a tight head; it also pushes the rest a whole batch later,
        which under load costs more requests than it saves (the first design
        always shrank for the head)."""
        lat, reserve, largest = self.latency, self.reserve, self.options.largest
        rows_before: list[int] = []
        total = 0
        for rows, _ in queue:
            rows_before.append(total)
            total += rows
        best_rows, best_score = 0, -1
        for k in range(1, len(queue) + 1):
            first = rows_before[k] if k < len(queue) else total
            if first > take:
                break
            end1 = now + lat.mean(self.cover(first)) + reserve
            score = sum(1 for _, deadline in queue[:k] if deadline >= end1)
            rows2, later = 0, []
            for rows, deadline in queue[k:]:
                if rows2 + rows > largest:
                    break
                rows2 += rows
                later.append(deadline)
            second = 0
            if later:
                end2 = end1 + lat.mean(self.cover(rows2))
                second = sum(1 for deadline in later if deadline >= end2)
            if score + second >= best_score:
                best_rows, best_score = first, score + second
        return best_rows or take

    def _keep_up_size(self, arrival_rate: float) -> int:
        """Smallest size whose throughput serves ``arrival_rate`` rows/s at the
        utilization target; 1 when the rate is unknown or low."""
        if arrival_rate <= 0:
            return 1
        for s in self.options.sizes:
            per_batch = self.latency.mean(s)
            if per_batch <= 0 or arrival_rate * per_batch / s <= self.options.utilization:
                return s
        return self.options.sizes[-1]


class StaticPlanner(Planner):
    """Triton's dynamic batcher: wait until the largest preferred size is
    queued or the oldest request has waited ``max_queue_delay``, then take the
    largest preferred size available (or everything up to max)."""

    def plan(self, now: float, state: QueueState) -> Plan:
        opts, rows, head_arrival = self.options, state.rows, state.head_arrival
        largest = opts.largest
        preferred = [p for p in opts.preferred_sizes if p <= largest]
        goal = preferred[-1] if preferred else largest
        if rows >= goal:
            return Plan(goal, goal, "full")
        due = head_arrival + opts.max_queue_delay_s
        if now >= due:
            fitting = [p for p in preferred if p <= rows]
            take = fitting[-1] if fitting else min(rows, largest)
            return Plan(take, take, "window")
        return Plan(wake_at=due)


def new_latency_model(options: BatchingOptions) -> LatencyModel:
    """The latency model a version plans with (its stall clip follows ``admission``)."""
    return LatencyModel(stall_clip=options.mode.stall_clip)


def make_planner(options: BatchingOptions, latency: LatencyModel) -> Planner:
    if options.policy == "static":
        return StaticPlanner(options, latency)
    return AdaptivePlanner(options, latency)
