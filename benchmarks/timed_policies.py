"""The batching policies on an engine of known speed: what each policy can do
once the host's stalls are taken out of the engine.

``batcher-bursty`` and ``batcher-poisson`` measure the whole server on a real
model, where a shared host's stalls (a batch taking 2-3x its usual time) cause
most late answers under either policy. This runs the same scheduler
(``server.scheduler.dispatch.BatchingScheduler``, warmup, admission and planners
unchanged) in one process against ``TimedEngine``, whose batch of ``b`` rows
sleeps ``fixed + b x row`` seconds (optionally with stalls drawn at a chosen
rate), on the scenarios' arrival schedules, two rows and a 25 ms deadline per
request, the static candidates the scenarios tune from. Sleeping keeps the
engine off the CPU, so the event loop answers on time even on 2 busy cores.
No gRPC is on the path: the attainment here is the policy's, not the server's.

    python -m benchmarks.timed_policies --arrival bursty --fractions 0.1 0.2 0.3
    python -m benchmarks.timed_policies --stall-rate 0.02 --stall-factor 2.5
    python -m benchmarks.timed_policies --optimum-only --fractions 0.24 --rounds 8
    python -m benchmarks.timed_policies --tight-ms 15 --tight-share 0.3

Capacity is the engine's best rows/s (its largest batch back to back); each
point offers a fraction of it. The goal line is the scenario's: the most
requests/s each policy answers on time where it keeps 99% attainment.

Each point also reports the ``optimum``: the most requests any policy could
answer on time on the same arrivals, knowing them all in advance, on the
engine without stalls (``benchmarks.oracle``); its "refused" column is what
even it cannot answer. It bounds what a policy change can win.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TextIO

import numpy as np
from google.protobuf import text_format

from benchmarks import models
from benchmarks.loadgen import Arrival, percentiles, schedule
from benchmarks.oracle import batch_seconds, most_on_time
from benchmarks.report import GoalSample, judge_samples
from benchmarks.runner import apply_policy
from benchmarks.scenarios import BATCHER_ROWS, BUDGET_MS, SCENARIOS, GoodputGoal, Policy
from benchmarks.slow_spells import SlowSpells
from benchmarks.traces import TRACES, make_arrival
from benchmarks.virtual_time import Clock, VirtualThreads
from inferd.engines import Engine, Signature, TensorSpec
from inferd.protos import model_config_pb2
from inferd.server.errors import DeadlineExceeded, Unavailable
from inferd.server.model_io import ModelIO
from inferd.server.request import InferRequest
from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.options import options_from_config
from inferd.server.scheduler.planners import new_latency_model
from inferd.server.scheduler.warmup import synthetic_inputs, warm_up
from inferd.server.stats import ModelStats

MAX_BATCH = models.MAX_BATCH
#: batching_reference's shape (its builder sizes the real model to it).
FIXED_MS = models.FIXED_MS
ROW_MS = models.ROW_MS
#: A loopback gRPC round trip of a small request through inferd, engine aside.
PATH_MS = 1.0
#: The offline optimum's row in the tables.
OPTIMUM = "optimum (offline)"


class TimedEngine(Engine):
    """y = x after sleeping ``fixed_s + rows x row_s``; with ``stall_rate``,
    that fraction of calls (seeded) takes ``stall_factor`` times as long.
    With ``spell_s`` too (simulated time only), the stalls are slow spells of
    that mean length covering ``stall_rate`` of the time from ``origin`` on
    (``benchmarks.slow_spells``): the same for every policy with the seed.
    ``outside_s`` (simulated time, once load starts) is spent outside the
    engine after each call (slowed by any spell), which the scheduler
    measures as such."""

    def __init__(
        self,
        fixed_s: float,
        row_s: float,
        *,
        stall_rate: float = 0.0,
        stall_factor: float = 1.0,
        seed: int = 0,
        clock: Clock | None = None,
        spell_s: float = 0.0,
        outside_s: float = 0.0,
    ) -> None:
        if fixed_s < 0 or row_s < 0 or not 0 <= stall_rate <= 1 or stall_factor < 1:
            raise ValueError("need times >= 0, 0 <= stall_rate <= 1, stall_factor >= 1")
        self.fixed_s, self.row_s = fixed_s, row_s
        self.stall_rate, self.stall_factor = stall_rate, stall_factor
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.calls: list[int] = []  # rows of each call, in order
        #: Simulated time (``benchmarks.virtual_time``): calls take their time on it, unslept.
        self.clock = clock
        self.last_s = 0.0
        self.outside_s = outside_s
        #: The last call's time outside the engine (``outside_s``, spells applied).
        self.last_outside_s = 0.0
        self.spells = (
            SlowSpells(stall_rate, stall_factor, spell_s, seed)
            if spell_s > 0 and stall_rate > 0
            else None
        )
        #: Where the spells' time line starts on the clock (set when load starts).
        self.origin: float | None = None
        spec = TensorSpec("x", np.dtype(np.float32), (-1, -1))
        self._signature = Signature((spec,), (dataclasses.replace(spec, name="y"),))

    @property
    def signature(self) -> Signature:
        return self._signature

    def seconds(self, rows: int) -> float:
        return self.fixed_s + rows * self.row_s

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        x = inputs["x"]
        seconds = self.seconds(len(x))
        # Seconds on the spells' time line (None: before load starts, or slept).
        start: float | None = None
        if self.clock is not None and self.origin is not None:
            start = self.clock.now - self.origin
        with self._lock:
            self.calls.append(len(x))
            if self.spells is None:
                seconds *= self.stall_factor if self._rng.random() < self.stall_rate else 1.0
            elif start is not None:
                seconds = self.spells.duration(start, seconds)
            if start is not None and self.outside_s:
                outside = self.outside_s
                if self.spells is not None:
                    outside = self.spells.duration(start + seconds, outside)
                self.last_outside_s = outside
        self.last_s = seconds
        if self.clock is None:
            time.sleep(seconds)
        elif self.clock.advancing:
            self.clock.now += seconds
        return {"y": x}

    def close(self) -> None:
        return None


@dataclasses.dataclass
class Point:
    policy: str
    fraction: float
    offered_rps: float
    sent: int
    on_time: int
    late: int
    refused: int
    latency_ms: list[float]  # answered requests, scheduled arrival to answer
    #: The scheduler's refusals and expiries by reason (``Counters``).
    reasons: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def attainment(self) -> float:
        return self.on_time / self.sent if self.sent else float("nan")

    @property
    def admitted_on_time(self) -> float:
        admitted = self.sent - self.refused
        return self.on_time / admitted if admitted else float("nan")

    @property
    def goodput_rps(self) -> float:
        return self.attainment * self.offered_rps

    def p(self, q: float) -> float:
        return float(percentiles(self.latency_ms, (q,))[0])


def served_config(policy: Policy) -> model_config_pb2.ModelConfig:
    """batching_reference's config with ``policy``'s edits, as the scenarios serve it."""
    config = text_format.Parse(models.CONFIG, model_config_pb2.ModelConfig())
    apply_policy(config, policy)
    return config


def policies() -> list[Policy]:
    """The batcher scenarios' policies, static as its candidates."""
    out: list[Policy] = []
    for policy in SCENARIOS["batcher-poisson"].policies:
        out.extend(policy.candidates or (policy,))
    return out


@dataclasses.dataclass(frozen=True)
class Tight:
    """A share of requests due sooner than the rest (``seconds`` after
    arriving), drawn per request from the point's seed."""

    seconds: float
    share: float

    def __post_init__(self) -> None:
        if self.seconds <= 0 or not 0 <= self.share <= 1:
            raise ValueError("need a tight deadline > 0 and a share in [0, 1]")


def deadlines(count: int, deadline_s: float, tight: Tight | None, seed: int) -> list[float]:
    """Each request's deadline (seconds after it arrives), in arrival order."""
    if tight is None:
        return [deadline_s] * count
    rng = random.Random(seed + 1)
    return [tight.seconds if rng.random() < tight.share else deadline_s for _ in range(count)]


async def run_point(
    engine: TimedEngine,
    policy: Policy,
    arrival: Arrival,
    duration_s: float,
    *,
    fraction: float,
    seed: int = 0,
    deadline_s: float = BUDGET_MS / 1e3,
    tight: Tight | None = None,
    rows: int = BATCHER_ROWS,
    path_s: float = 0.0,
    reserve_s: float | None = None,
) -> Point:
    """Offer ``arrival`` for ``duration_s`` to a fresh, warmed-up scheduler,
    each request due ``deadline_s`` after it arrives (``tight``: a share of
    them sooner). ``path_s`` stands for the way to and from the scheduler
    (gRPC, decoding): the scheduler sees that much less of the deadline and
    every answer counts it. ``reserve_s`` pins the planner's reserve (else it
    is learnt from the time outside the engine, ~0 on simulated time)."""
    config = served_config(policy)
    options = options_from_config(config)
    io = ModelIO.from_config(config)
    latency = new_latency_model(options)
    warm_up(engine, io, options, latency)
    sched = BatchingScheduler(engine, ModelStats(), options, latency, name=policy.name)
    if reserve_s is not None:
        sched.admission.planner.reserve = reserve_s
    if engine.clock is not None:
        engine.clock.advancing = False
        sched.slots.threads = VirtualThreads(  # type: ignore[assignment]
            lambda: engine.last_s, lambda: engine.last_outside_s, sched.slots.total
        )
    times = schedule(arrival, duration_s, seed=seed)
    budgets = deadlines(len(times), deadline_s, tight, seed)
    inputs = synthetic_inputs(io, rows)
    latencies: list[float] = []
    counts = {"on_time": 0, "late": 0, "refused": 0}
    start = time.monotonic() + 0.05
    engine.origin = start

    async def one(at: float, budget: float) -> None:
        delay = start + at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        arrived = start + at  # as scheduled: a late start counts against the answer
        request = InferRequest(
            inputs=inputs, outputs=(), rows=rows, deadline=arrived + budget - path_s
        )
        try:
            await sched.submit(request)
        except (DeadlineExceeded, Unavailable):
            counts["refused"] += 1
            return
        took = time.monotonic() - arrived + path_s
        latencies.append(took * 1e3)
        counts["on_time" if took <= budget else "late"] += 1

    await asyncio.gather(*(one(float(t), b) for t, b in zip(times, budgets, strict=True)))
    await sched.close()
    reasons = {f"refused:{k}": v for k, v in sched.counters.refused.items() if v}
    if sched.counters.expired:
        reasons["expired"] = sched.counters.expired
    return Point(
        policy.name,
        fraction,
        len(times) / duration_s,
        len(times),
        latency_ms=latencies,
        reasons=reasons,
        **counts,
    )


def optimum_point(
    engine: TimedEngine,
    arrival: Arrival,
    duration_s: float,
    *,
    fraction: float,
    seed: int = 0,
    deadline_s: float = BUDGET_MS / 1e3,
    rows: int = BATCHER_ROWS,
    path_s: float = 0.0,
) -> Point:
    """What an offline policy answers on time of ``run_point``'s arrivals
    (same seed), the engine never stalling; the rest counts as refused."""
    times = schedule(arrival, duration_s, seed=seed)
    batch_s = batch_seconds(engine.fixed_s, engine.row_s, rows, MAX_BATCH)
    on_time = most_on_time(times, deadline_s - path_s, batch_s)
    return Point(
        OPTIMUM,
        fraction,
        len(times) / duration_s,
        len(times),
        on_time=on_time,
        late=0,
        refused=len(times) - on_time,
        latency_ms=[],
    )


def capacity_rps(engine: TimedEngine, rows: int = BATCHER_ROWS) -> float:
    """Requests/s at the engine's best throughput (its largest batch back to back)."""
    return MAX_BATCH / engine.seconds(MAX_BATCH) / rows


def format_points(points: Sequence[Point]) -> str:
    lines = [f"{'policy':<20} point  offered   SLO    adm.ok  refused  p50 ms  p99 ms  late"]
    for p in points:
        reasons = " ".join(f"{k}={v}" for k, v in sorted(p.reasons.items()))
        timing = f"{p.p(50):7.2f} {p.p(99):7.2f}" if p.latency_ms else f"{'-':>7} {'-':>7}"
        lines.append(
            f"{p.policy:<20} {p.fraction:4.2f}x {p.offered_rps:7.1f} {p.attainment:6.3f} "
            f"{p.admitted_on_time:7.4f} {p.refused / max(1, p.sent):7.3f} {timing} "
            f"{p.late:5d}  {reasons}"
        )
    return "\n".join(lines)


def goal_line(points: Sequence[Point], attainment: float = 0.99) -> str:
    """Each policy's best goodput at ``attainment``, the adaptive ones and the
    optimum as a ratio to the best static candidate's, judged as the
    scenarios judge their goal (``benchmarks.report.judge_samples``; 1.3x for
    adaptive; the optimum's ratio is the most any policy could show)."""
    goal = GoodputGoal(attainment=attainment)
    samples = [
        GoalSample(p.policy, f"{p.fraction:.2f}x", True, p.attainment, p.goodput_rps, p.offered_rps)
        for p in points
    ]
    names = list(dict.fromkeys(p.policy for p in points))
    statics = [n for n in names if n.startswith("static")]
    parts = []
    for name in names:
        if name in statics:
            continue
        judged = judge_samples(samples, [name, *statics], goal)
        at = judged.best[name]
        ratio = "no static to compare"
        if statics:
            ratio = f"{'at least ' if judged.bound else ''}{judged.ratio:.2f}x"
        parts.append(f"{name} {at[1] if at else 0.0:.1f} req/s ({ratio})")
    best = judge_samples(samples, statics, goal).best if statics else {}
    kept = {n: b[1] for n, b in best.items() if b is not None}
    top = max(kept, key=lambda n: kept[n]) if kept else None
    static_part = (
        f"best static {top} {kept[top]:.1f} req/s"
        if top
        else ("no static kept it" if statics else "no static policy")
    )
    return f"goodput at >= {attainment:.0%} attainment: {', '.join(parts) or 'none'}; {static_part}"


async def run(
    engine: TimedEngine,
    arrival_kind: str,
    fractions: Sequence[float],
    duration_s: float,
    rounds: int,
    names: Sequence[str] | None = None,
    stream: TextIO | None = None,
    path_s: float = 0.0,
    tight: Tight | None = None,
    deadline_s: float = BUDGET_MS / 1e3,
) -> list[Point]:
    """Every chosen policy at every load, ``rounds`` times, pooled; with the
    optimum unless ``tight`` mixes deadlines (the optimum's dynamic program
    needs one deadline for all)."""
    capacity = capacity_rps(engine)
    chosen = [p for p in policies() if names is None or p.name in names]
    points: list[Point] = []
    for r in range(rounds):
        for fraction in fractions:
            rate = fraction * capacity
            arrival = make_arrival(arrival_kind, rate, duration_s)
            seed = 1000 * r + int(fraction * 100)  # the same arrivals for every policy in a round
            optimum = None
            if tight is None:
                optimum = optimum_point(
                    engine,
                    arrival,
                    duration_s,
                    fraction=fraction,
                    seed=seed,
                    deadline_s=deadline_s,
                    path_s=path_s,
                )
            for policy in chosen:
                point = await run_point(
                    engine,
                    policy,
                    arrival,
                    duration_s,
                    fraction=fraction,
                    seed=seed,
                    deadline_s=deadline_s,
                    tight=tight,
                    path_s=path_s,
                )
                points.append(point)
                if stream is not None:
                    print(format_points([point]).splitlines()[1], file=stream, flush=True)
            if optimum is not None:
                points.append(optimum)
    return merge_rounds(points)


def merge_rounds(points: Sequence[Point]) -> list[Point]:
    """One point per (policy, fraction): the rounds' counts and latencies pooled."""
    merged: dict[tuple[str, float], Point] = {}
    for p in points:
        key = (p.policy, p.fraction)
        if key not in merged:
            merged[key] = dataclasses.replace(
                p, latency_ms=list(p.latency_ms), reasons=dict(p.reasons)
            )
            continue
        m = merged[key]
        n = m.sent + p.sent
        m.offered_rps = (m.offered_rps * m.sent + p.offered_rps * p.sent) / n if n else 0.0
        m.sent, m.on_time, m.late, m.refused = (
            n,
            m.on_time + p.on_time,
            m.late + p.late,
            m.refused + p.refused,
        )
        m.latency_ms.extend(p.latency_ms)
        for k, v in p.reasons.items():
            m.reasons[k] = m.reasons.get(k, 0) + v
    return sorted(merged.values(), key=lambda p: (p.policy, p.fraction))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.timed_policies", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--arrival", choices=TRACES, default="bursty")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.15, 0.2, 0.25, 0.3])
    parser.add_argument("--seconds", type=float, default=10.0, help="per point and round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--fixed-ms", type=float, default=FIXED_MS, help="engine time per call")
    parser.add_argument("--row-ms", type=float, default=ROW_MS, help="engine time per row")
    parser.add_argument("--stall-rate", type=float, default=0.0, help="fraction of calls stalled")
    parser.add_argument("--stall-factor", type=float, default=1.0, help="a stalled call's slowdown")
    parser.add_argument("--policy", action="append", help="only these (repeatable)")
    parser.add_argument(
        "--deadline-ms", type=float, default=BUDGET_MS, help="each request's, after arriving"
    )
    parser.add_argument(
        "--tight-ms",
        type=float,
        default=0.0,
        help="mix deadlines: this share (--tight-share) of requests is due this soon",
    )
    parser.add_argument("--tight-share", type=float, default=0.0)
    parser.add_argument(
        "--optimum-only",
        action="store_true",
        help="no policy, only the offline optimum (seconds per point, not the run's length)",
    )
    parser.add_argument(
        "--path-ms",
        type=float,
        default=PATH_MS,
        help="time outside the scheduler per request (gRPC, decoding)",
    )
    opts = parser.parse_args(argv)
    if opts.seconds <= 0 or opts.rounds < 1 or not all(f > 0 for f in opts.fractions):
        parser.error("--seconds and --fractions must be > 0, --rounds >= 1")
    if opts.deadline_ms <= opts.path_ms:
        parser.error("--deadline-ms must exceed --path-ms")
    tight = None
    if opts.tight_share or opts.tight_ms:
        if opts.optimum_only:
            parser.error("the optimum needs one deadline for all requests: no --tight-*")
        try:
            tight = Tight(opts.tight_ms / 1e3, opts.tight_share)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        engine = TimedEngine(
            opts.fixed_ms / 1e3,
            opts.row_ms / 1e3,
            stall_rate=opts.stall_rate,
            stall_factor=opts.stall_factor,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(
        f"engine: {opts.fixed_ms:g} ms + {opts.row_ms:g} ms/row, stalls {opts.stall_rate:g} x "
        f"{opts.stall_factor:g}; capacity {capacity_rps(engine):.1f} req/s of {BATCHER_ROWS} rows; "
        f"{opts.arrival}, {opts.seconds:g} s x {opts.rounds} per point; due in "
        f"{opts.deadline_ms:g} ms"
        + (f", {tight.share:.0%} of requests in {opts.tight_ms:g} ms" if tight else "")
    )
    points = asyncio.run(
        run(
            engine,
            opts.arrival,
            opts.fractions,
            opts.seconds,
            opts.rounds,
            [] if opts.optimum_only else opts.policy,
            sys.stdout,
            opts.path_ms / 1e3,
            tight,
            opts.deadline_ms / 1e3,
        )
    )
    print(format_points(points))
    print(goal_line(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
