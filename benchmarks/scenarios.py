"""Benchmark scenarios: what to load, how, on which server config, and the
latency targets each load point must meet.

Targets are for a quiet machine with two or more free cores; ``smoke``'s are
loose on purpose because CI shares its machine. Open-loop loads are
fractions of the capacity measured at the start of the same run (closed-loop
saturation on the model's own config), so the scenarios travel between
machines of different speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Demo models' input: (name, features per row, upper bound of the values).
MODEL_INPUTS = {
    "digits_mlp": ("pixels", 64, 16.0),
    "dense_reference": ("x", 1024, 1.0),
    "batching_reference": ("x", 512, 1.0),
}
MODEL_OUTPUTS = {"digits_mlp": ("label",), "dense_reference": ("y",), "batching_reference": ("y",)}


@dataclass(frozen=True)
class Targets:
    p95_ms: float | None = None
    p99_ms: float | None = None
    #: Least fraction of sent requests answered OK within their deadline.
    min_slo: float | None = None
    #: Least fraction of admitted requests (not refused at arrival) answered
    #: OK within their deadline: whether admission keeps its promises.
    min_admitted_on_time: float | None = None


@dataclass(frozen=True)
class Policy:
    """One server configuration under test: edits to the model's config.pbtxt."""

    name: str
    #: config ``parameters`` (batching_policy, latency_budget_ms, ...).
    params: tuple[tuple[str, str], ...] = ()
    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_us: int | None = None
    #: When set, each candidate is probed at ``Scenario.tune_fraction`` of
    #: capacity and the best by goodput (then p99) is run under this name.
    candidates: tuple[Policy, ...] = ()

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.params]
        if self.preferred_batch_size:
            parts.append(f"preferred={list(self.preferred_batch_size)}")
        if self.max_queue_delay_us is not None:
            parts.append(f"delay={self.max_queue_delay_us}us")
        return ", ".join(parts) or "model's own config"


@dataclass(frozen=True)
class GoodputGoal:
    """At ``attainment`` SLO attainment, the scenario's first policy must
    deliver at least ``ratio`` x the goodput of the best other policy, each
    taken at its own best point that keeps the attainment (a policy with no
    such point counts as zero)."""

    attainment: float = 0.99
    ratio: float = 1.3


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    model: str
    mode: Literal["closed", "open"]
    #: Closed loop: requests in flight per point.
    concurrency: tuple[int, ...] = ()
    #: Open loop: offered load per point, as a fraction of measured capacity.
    load_fractions: tuple[float, ...] = ()
    arrival: Literal["poisson", "bursty", "step"] = "poisson"
    #: Step arrivals: rate multipliers, each held for an equal share of the point.
    step_pattern: tuple[float, ...] = (0.5, 1.5, 1.0)
    duration_s: float = 10.0
    warmup_s: float = 1.0
    batch: int = 1  # rows per request
    deadline_ms: float | None = None  # client SLO, also sent as the gRPC timeout
    #: Mixed deadlines: (share, deadline_ms) per request (``Workload.deadline_mix``);
    #: ``deadline_ms`` is then the longest of them.
    deadline_mix: tuple[tuple[float, float], ...] = ()
    policies: tuple[Policy, ...] = (Policy("default"),)
    targets: Targets = Targets()
    #: Per-point targets keyed by concurrency or load fraction; else ``targets``.
    point_targets: tuple[tuple[float, Targets], ...] = ()
    #: The issue's burst target: compare the policies' goodput at the
    #: highest-goodput point where each keeps this SLO attainment.
    goodput_goal: GoodputGoal | None = None
    capacity_concurrency: int = 64
    tune_fraction: float = 0.85
    raw_engine: bool = False
    reference: bool = False  # also run the bare grpc.aio server

    @property
    def points(self) -> tuple[float, ...]:
        return tuple(self.concurrency) if self.mode == "closed" else self.load_fractions

    def targets_for(self, point: float) -> Targets:
        return dict(self.point_targets).get(point, self.targets)

    @property
    def needs_capacity(self) -> bool:
        return self.mode == "open"


def _static_candidates(budget_ms: float) -> tuple[Policy, ...]:
    # Triton-style settings a careful operator would try for a 25 ms SLO.
    out = []
    for preferred, delay_us in ((8, 1000), (16, 2000), (32, 4000), (32, 8000)):
        out.append(
            Policy(
                f"static p{preferred}/{delay_us}us",
                params=(("batching_policy", "static"),),
                preferred_batch_size=(preferred,),
                max_queue_delay_us=delay_us,
            )
        )
    return tuple(out)


BUDGET_MS = 25.0
#: The shifting trace's phases as multiples of its mean rate: at 0.6x of
#: capacity it runs 0.2x -> 0.8x -> 0.3x -> 1.1x, each a quarter of the run.
SHIFT = (0.2 / 0.6, 0.8 / 0.6, 0.3 / 0.6, 1.1 / 0.6)
#: The mixed-deadline trace: this share of requests is due in the tight
#: deadline, the rest in the loose one.
MIXED_TIGHT_SHARE, MIXED_TIGHT_MS, MIXED_LOOSE_MS = 0.3, 15.0, 50.0
MIXED_DEADLINES = ((MIXED_TIGHT_SHARE, MIXED_TIGHT_MS), (1 - MIXED_TIGHT_SHARE, MIXED_LOOSE_MS))
#: Rows per request in the batcher scenarios: two keeps the offered requests/s
#: within what a Python open-loop client holds on 2 cores, and exercises merge/split.
BATCHER_ROWS = 2
_ADAPTIVE = Policy(
    "adaptive",
    params=(("batching_policy", "adaptive"), ("latency_budget_ms", f"{BUDGET_MS:g}")),
)
#: The same with ``admission: strict``: the issue's 0.9x bar (what is
#: admitted finishes in time) is this mode's promise; the default trades
#: some of it for more requests answered on time.
_ADAPTIVE_STRICT = Policy("adaptive-strict", params=(*_ADAPTIVE.params, ("admission", "strict")))
_STATIC = Policy("static", candidates=_static_candidates(BUDGET_MS))
# The budget is the callers' loosest SLO, as in the batching grid: tighter
# requests carry their own deadline in the gRPC timeout.
_ADAPTIVE_MIXED = Policy(
    "adaptive",
    params=(("batching_policy", "adaptive"), ("latency_budget_ms", f"{MIXED_LOOSE_MS:g}")),
)
_BATCHER_TARGETS = (
    (0.3, Targets(p95_ms=15, p99_ms=25, min_slo=0.99)),
    (0.5, Targets(p95_ms=15, p99_ms=25, min_slo=0.99)),
    (0.7, Targets(p95_ms=20, p99_ms=25, min_slo=0.98)),
    # The bar: near capacity, admission may refuse, but what it
    # admits must finish within the budget.
    (0.9, Targets(p99_ms=25, min_admitted_on_time=0.999)),
)
_FRACTIONS = (0.3, 0.5, 0.7, 0.9, 1.0, 1.2)
# Bursts run at 4x the mean: from 0.25 on they exceed capacity and the queue
# (bounded by the 25 ms budget) has to absorb them.
_BURSTY_FRACTIONS = (0.1, 0.15, 0.2, 0.35, 0.5, 0.7, 1.0)
_BURSTY_TARGETS = (
    (0.1, Targets(p95_ms=15, p99_ms=25, min_slo=0.99)),
    (0.2, Targets(p95_ms=20, p99_ms=25, min_slo=0.98)),
    (0.35, Targets(p99_ms=25, min_slo=0.9)),
)

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            name="smoke",
            description="digits_mlp, batch 1, closed loop at concurrency 1 and 8 (CI).",
            model="digits_mlp",
            mode="closed",
            concurrency=(1, 8),
            duration_s=3.0,
            warmup_s=0.5,
            targets=Targets(p95_ms=50, p99_ms=100),
        ),
        Scenario(
            name="mlp-closed",
            description="digits_mlp, batch 1, closed loop at concurrency 1/8/32 on the "
            "model's config and with inline execution, next to the bare grpc.aio "
            "reference server (no model): served/bare is inferd's overhead.",
            model="digits_mlp",
            mode="closed",
            concurrency=(1, 8, 32),
            policies=(Policy("default"), Policy("inline", params=(("inline_max_us", "200"),))),
            point_targets=(
                (1, Targets(p95_ms=2, p99_ms=5)),
                (8, Targets(p95_ms=8, p99_ms=15)),
                (32, Targets(p95_ms=30, p99_ms=50)),
            ),
            reference=True,
        ),
        Scenario(
            name="dense-saturation",
            description="dense_reference, batch 1, closed loop at high concurrency: served "
            "rows/s against the raw engine at the batch size the scheduler used.",
            model="dense_reference",
            mode="closed",
            concurrency=(32, 64, 128),
            targets=Targets(p95_ms=100, p99_ms=200),
            raw_engine=True,
        ),
        Scenario(
            name="batcher-poisson",
            description="batching_reference, batch 1, Poisson arrivals at fractions of capacity, "
            f"{BUDGET_MS:g} ms deadline: adaptive (balanced and strict admission) vs "
            "best-tuned static batching.",
            model="batching_reference",
            mode="open",
            load_fractions=_FRACTIONS,
            arrival="poisson",
            batch=BATCHER_ROWS,
            deadline_ms=BUDGET_MS,
            policies=(_ADAPTIVE, _ADAPTIVE_STRICT, _STATIC),
            point_targets=_BATCHER_TARGETS,
            raw_engine=True,
        ),
        Scenario(
            name="batcher-bursty",
            description="As batcher-poisson with ON/OFF bursts at 4x the mean rate for 20 % "
            "of each 0.5 s (same mean); static is tuned where bursts first exceed capacity.",
            model="batching_reference",
            mode="open",
            load_fractions=_BURSTY_FRACTIONS,
            arrival="bursty",
            batch=BATCHER_ROWS,
            deadline_ms=BUDGET_MS,
            policies=(_ADAPTIVE, _STATIC),
            point_targets=_BURSTY_TARGETS,
            goodput_goal=GoodputGoal(attainment=0.99, ratio=1.3),
            tune_fraction=0.35,
            raw_engine=True,
        ),
        Scenario(
            name="batcher-step",
            description="batching_reference, adaptive batching under Poisson arrivals whose rate "
            "steps 0.5x -> 1.5x -> 1x of each point's mean load.",
            model="batching_reference",
            mode="open",
            load_fractions=(0.4, 0.6),
            arrival="step",
            duration_s=12.0,
            batch=BATCHER_ROWS,
            deadline_ms=BUDGET_MS,
            policies=(_ADAPTIVE,),
            targets=Targets(p99_ms=25, min_slo=0.95),
        ),
        Scenario(
            name="batcher-shifting",
            description="As batcher-poisson with the batching grid's shifting load: Poisson "
            "phases at 1/3, 4/3, 1/2 and 11/6 of each point's mean load, a quarter of the run "
            "each (0.2x -> 0.8x -> 0.3x -> 1.1x at 0.6x).",
            model="batching_reference",
            mode="open",
            load_fractions=(0.2, 0.4, 0.6, 0.8),
            arrival="step",
            step_pattern=SHIFT,
            duration_s=12.0,
            batch=BATCHER_ROWS,
            deadline_ms=BUDGET_MS,
            policies=(_ADAPTIVE, _STATIC),
        ),
        Scenario(
            name="batcher-mixed",
            description="As batcher-poisson with the batching grid's mixed deadlines: "
            f"{MIXED_TIGHT_SHARE:.0%} of requests due in {MIXED_TIGHT_MS:g} ms, the rest in "
            f"{MIXED_LOOSE_MS:g} ms (each sent as its gRPC timeout); adaptive's budget is "
            f"the loose {MIXED_LOOSE_MS:g} ms.",
            model="batching_reference",
            mode="open",
            load_fractions=_FRACTIONS,
            arrival="poisson",
            batch=BATCHER_ROWS,
            deadline_ms=MIXED_LOOSE_MS,
            deadline_mix=MIXED_DEADLINES,
            policies=(_ADAPTIVE_MIXED, _STATIC),
        ),
    )
}


@dataclass
class Scaled:
    """A scenario's times after ``--duration-scale``."""

    duration_s: float
    warmup_s: float
    capacity_s: float
    tune_s: float


def scaled(scenario: Scenario, factor: float) -> Scaled:
    duration = max(0.5, scenario.duration_s * factor)
    return Scaled(
        duration_s=duration,
        warmup_s=max(0.3, scenario.warmup_s * min(1.0, factor * 2)),
        capacity_s=max(1.0, 5.0 * factor),
        tune_s=max(1.0, duration / 2),
    )
