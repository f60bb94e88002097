"""The router: which loaded version answers a request for a served model name.

One direction only: the data plane asks the router, the router asks the model
manager for loaded versions, the chosen version's scheduler runs the request.
The router holds a compiled copy of the lifecycle state (``apply``) and this
replica's statistics per route variant; it never writes state itself. When a
challenger crosses a guardrail it stops routing to it at once and calls
``on_trip``, and the lifecycle controller records the rollback for every
replica.

Without a route a request gets the model manager's default (the highest
ready version). With one, the champion serves, except:

- canary: each request goes to the challenger with probability ``weight``;
- A/B: the routing key's hash picks the variant, so one key always sees one
  variant (requests without a key are split at random, as canary);
- shadow: the champion answers; a ``weight`` share is also mirrored to the
  challenger by the data plane, after the answer, and compared;
- blue/green: the challenger is warm and takes nothing until promoted.

A version the route names that is not ready on this replica (still loading
after another replica changed the state) is skipped: the champion, or the
default version, answers instead.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from inferd.server.lifecycle.state import Guardrails, LifecycleState, ModelLifecycle, RouteMode
from inferd.server.model_version import ModelVersion
from inferd.server.models import ModelManager
from inferd.server.observer import ServerObserver

log = logging.getLogger("inferd.routing")

CHAMPION = "champion"
CHALLENGER = "challenger"
#: Samples kept per window at most (older ones are dropped first).
MAX_WINDOW = 100_000
#: Guardrails are evaluated at most this often per route (p99 sorts the window).
CHECK_INTERVAL_S = 0.02

#: (model, challenger version, why) -> None.
TripHandler = Callable[[str, int, str], None]


class _Window:
    """Outcomes over the last ``span`` seconds: count, failures,
    disagreements, and the latencies (sorted on demand)."""

    __slots__ = ("bad", "differ", "samples", "span")

    def __init__(self, span: float) -> None:
        self.span = span
        self.samples: collections.deque[tuple[float, bool, float, bool]] = collections.deque()
        self.bad = 0
        self.differ = 0

    def add(self, now: float, ok: bool, latency_s: float, disagree: bool = False) -> None:
        self.samples.append((now, ok, latency_s, disagree))
        self.bad += not ok
        self.differ += disagree
        if len(self.samples) > MAX_WINDOW:
            self._pop()
        self.prune(now)

    def prune(self, now: float) -> None:
        horizon = now - self.span
        while self.samples and self.samples[0][0] < horizon:
            self._pop()

    def _pop(self) -> None:
        _, ok, _, disagree = self.samples.popleft()
        self.bad -= not ok
        self.differ -= disagree

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def error_ratio(self) -> float:
        return self.bad / len(self.samples) if self.samples else 0.0

    @property
    def disagreement_ratio(self) -> float:
        return self.differ / len(self.samples) if self.samples else 0.0

    def quantile_ms(self, q: float) -> float:
        if not self.samples:
            return 0.0
        latencies = sorted(s[2] for s in self.samples)
        index = min(len(latencies) - 1, max(0, math.ceil(q * len(latencies)) - 1))
        return latencies[index] * 1000.0


@dataclass(slots=True)
class VariantStats:
    """One variant of one route on this replica."""

    variant: str
    version: int
    window_s: float
    requests: int = 0
    errors: int = 0
    shadow_requests: int = 0
    shadow_errors: int = 0
    shadow_disagreements: int = 0
    shadow_dropped: int = 0
    window: _Window = field(init=False)
    shadow_window: _Window = field(init=False)

    def __post_init__(self) -> None:
        self.window = _Window(self.window_s)
        self.shadow_window = _Window(self.window_s)


@dataclass(frozen=True, slots=True)
class VariantSnapshot:
    """``Router.variant_stats()`` rows: what a dashboard plots per variant."""

    model: str
    variant: str
    version: int
    requests: int
    errors: int
    traffic_share: float
    window_requests: int
    window_error_ratio: float
    window_p50_ms: float
    window_p99_ms: float
    shadow_requests: int
    shadow_errors: int
    shadow_disagreements: int
    shadow_dropped: int
    window_disagreement_ratio: float


class Route:
    """The compiled route of one model name, with its variants' statistics."""

    __slots__ = (
        "challenger",
        "champion",
        "guardrails",
        "last_check",
        "lifecycle",
        "mode",
        "model",
        "stats",
        "tripped",
        "weight",
    )

    def __init__(self, model: str, lifecycle: ModelLifecycle) -> None:
        self.model = model
        self.lifecycle = lifecycle
        self.champion = lifecycle.champion
        self.challenger = lifecycle.challenger
        self.mode = lifecycle.mode
        self.weight = lifecycle.weight
        self.guardrails: Guardrails = lifecycle.guardrails
        self.tripped = ""
        self.last_check = 0.0
        span = lifecycle.guardrails.window_s
        self.stats: dict[str, VariantStats] = {
            CHAMPION: VariantStats(CHAMPION, self.champion, span)
        }
        if self.challenger:
            self.stats[CHALLENGER] = VariantStats(CHALLENGER, self.challenger, span)

    def same_split(self, other: Route) -> bool:
        return (self.champion, self.challenger, self.mode, self.weight, self.guardrails) == (
            other.champion,
            other.challenger,
            other.mode,
            other.weight,
            other.guardrails,
        )


@dataclass(slots=True)
class Decision:
    """Where one request goes: ``version`` answers; ``shadow`` (if set) gets a
    mirrored copy afterwards; ``route``/``variant`` say what to record."""

    version: ModelVersion
    route: Route | None = None
    variant: str = ""
    shadow: ModelVersion | None = None


def bucket(model: str, challenger: int, key: str) -> float:
    """A stable number in [0, 1) for a routing key: the same on every replica
    and across restarts (unlike ``hash()``), different per experiment."""
    digest = hashlib.blake2b(f"{model}\0{challenger}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def outputs_agree(
    a: Mapping[str, np.ndarray],
    b: Mapping[str, np.ndarray],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> bool:
    """Whether two answers match: the same outputs, shapes and (within the
    tolerance for floats, exactly otherwise) values."""
    if a.keys() != b.keys():
        return False
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape:
            return False
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            try:
                if not np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
                    return False
            except TypeError:
                return False
        elif not np.array_equal(x, y):
            return False
    return True


class Router:
    def __init__(
        self,
        models: ModelManager,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_shadow_inflight: int = 64,
        observer: ServerObserver | None = None,
    ) -> None:
        self.models = models
        #: Shadow outcomes and guardrail trips, for metrics.
        self.observer = observer or ServerObserver()
        self._rng = rng or random.Random()
        self._clock = clock
        self._routes: dict[str, Route] = {}
        self.max_shadow_inflight = max_shadow_inflight
        self._shadow_inflight = 0
        self.on_trip: TripHandler | None = None
        self.revision = 0

    # -- state -----------------------------------------------------------------------------

    def apply(self, state: LifecycleState) -> None:
        """Take a new lifecycle state. Routes whose split is unchanged keep
        their statistics (and a local guardrail trip); the swap is atomic."""
        routes: dict[str, Route] = {}
        for name, lifecycle in state.models.items():
            if not (lifecycle.champion or lifecycle.challenger):
                continue
            route = Route(name, lifecycle)
            old = self._routes.get(name)
            if old is not None and old.same_split(route):
                route.stats = old.stats
                route.tripped = old.tripped
            routes[name] = route
        self._routes = routes
        self.revision = state.revision

    def route_of(self, name: str) -> Route | None:
        return self._routes.get(name)

    def pairs(self) -> list[tuple[str, str, str]]:
        """(model, champion, challenger) of each rollout whose challenger sees
        traffic (shadow, canary, A/B); safe from another thread."""
        return [
            (route.model, str(route.champion), str(route.challenger))
            for route in list(self._routes.values())
            if route.champion and route.challenger and route.mode is not RouteMode.BLUE_GREEN
        ]

    # -- the hot path ----------------------------------------------------------------------

    def route(self, name: str, key: Callable[[], str] = lambda: "") -> Decision:
        """The version for an unversioned request; raises as the model manager
        does when the model has nothing ready. ``key`` gives the routing key
        (called only for A/B routes)."""
        route = self._routes.get(name)
        if route is None:
            return Decision(self.models.resolve(name))
        champion = self.models.get(name, route.champion)
        if route.challenger and not route.tripped and route.mode is not RouteMode.BLUE_GREEN:
            challenger = self.models.get(name, route.challenger)
            if challenger is not None:
                if route.mode is RouteMode.SHADOW:
                    if champion is not None and self._rng.random() < route.weight:
                        return Decision(champion, route, CHAMPION, shadow=challenger)
                else:
                    routing_key = key() if route.mode is RouteMode.AB else ""
                    if routing_key:
                        chosen = bucket(name, route.challenger, routing_key) < route.weight
                    else:
                        chosen = self._rng.random() < route.weight
                    if chosen:
                        return Decision(challenger, route, CHALLENGER)
        if champion is None:
            # This replica has not loaded the champion (yet): the default serves.
            return Decision(self.models.resolve(name))
        return Decision(champion, route, CHAMPION)

    def serving(self, name: str) -> ModelVersion:
        """The version answering unversioned requests (the champion when ready)."""
        route = self._routes.get(name)
        if route is not None and route.champion:
            champion = self.models.get(name, route.champion)
            if champion is not None:
                return champion
        return self.models.resolve(name)

    def record(self, decision: Decision, ok: bool, latency_s: float) -> None:
        route = decision.route
        if route is None:
            return
        stats = route.stats.get(decision.variant)
        if stats is None or stats.version != decision.version.version:
            return
        now = self._clock()
        stats.requests += 1
        stats.errors += not ok
        stats.window.add(now, ok, latency_s)
        if decision.variant == CHALLENGER:
            self._check(route, stats, stats.window, now)

    # -- shadow ----------------------------------------------------------------------------

    def begin_shadow(self, decision: Decision) -> bool:
        """Whether the mirrored copy may run now (bounded in flight)."""
        if decision.shadow is None or decision.route is None:
            return False
        if self._shadow_inflight >= self.max_shadow_inflight:
            stats = decision.route.stats.get(CHALLENGER)
            if stats is not None:
                stats.shadow_dropped += 1
                self.observer.on_shadow(decision.route.model, stats.version, "dropped")
            return False
        self._shadow_inflight += 1
        return True

    def end_shadow(
        self,
        decision: Decision,
        *,
        ok: bool,
        latency_s: float,
        agree: bool | None,
        dropped: bool = False,
    ) -> None:
        """The outcome of a mirrored copy; ``agree`` None: not compared (the
        challenger failed); ``dropped``: it never ran (counted as dropped only)."""
        self._shadow_inflight -= 1
        route = decision.route
        shadow = decision.shadow
        if route is None or shadow is None:
            return
        stats = route.stats.get(CHALLENGER)
        if stats is None or stats.version != shadow.version:
            return
        if dropped:
            stats.shadow_dropped += 1
            self.observer.on_shadow(route.model, stats.version, "dropped")
            return
        now = self._clock()
        disagree = agree is False
        outcome = "error" if not ok else "disagree" if disagree else "agree"
        self.observer.on_shadow(route.model, stats.version, outcome)
        stats.shadow_requests += 1
        stats.shadow_errors += not ok
        stats.shadow_disagreements += disagree
        stats.shadow_window.add(now, ok, latency_s, disagree)
        self._check(route, stats, stats.shadow_window, now)

    @property
    def shadow_inflight(self) -> int:
        return self._shadow_inflight

    # -- guardrails ------------------------------------------------------------------------

    def _check(self, route: Route, stats: VariantStats, window: _Window, now: float) -> None:
        guard = route.guardrails
        if route.tripped or not guard.enabled or len(window) < guard.min_requests:
            return
        why = ""
        if guard.max_error_ratio and window.error_ratio > guard.max_error_ratio:
            why = (
                f"error ratio {window.error_ratio:.3f} > {guard.max_error_ratio:g} over the "
                f"last {len(window)} requests"
            )
        elif (
            guard.max_disagreement_ratio
            and window.disagreement_ratio > guard.max_disagreement_ratio
        ):
            why = (
                f"shadow disagreement {window.disagreement_ratio:.3f} > "
                f"{guard.max_disagreement_ratio:g} over {len(window)} requests"
            )
        elif guard.max_p99_ms and now - route.last_check >= CHECK_INTERVAL_S:
            # The percentile sorts the window: at most every CHECK_INTERVAL_S.
            route.last_check = now
            p99 = window.quantile_ms(0.99)
            if p99 > guard.max_p99_ms:
                why = (
                    f"p99 latency {p99:.1f} ms > {guard.max_p99_ms:g} ms over "
                    f"{len(window)} requests"
                )
        if not why:
            return
        route.tripped = why
        self.observer.on_guardrail_trip(route.model, stats.version)
        log.warning(
            "guardrail: model '%s' challenger version %d rolled back: %s",
            route.model,
            stats.version,
            why,
        )
        if self.on_trip is not None:
            self.on_trip(route.model, stats.version, why)

    # -- statistics ------------------------------------------------------------------------

    def variant_stats(self, model: str = "") -> list[VariantSnapshot]:
        """Per-variant counters of every route (or one model's), this replica."""
        now = self._clock()
        rows: list[VariantSnapshot] = []
        for name in sorted(self._routes):
            if model and name != model:
                continue
            route = self._routes[name]
            total = sum(s.requests for s in route.stats.values())
            for stats in route.stats.values():
                stats.window.prune(now)
                stats.shadow_window.prune(now)
                # A shadow challenger answers nobody: its window is the mirrored one.
                shadowing = route.mode is RouteMode.SHADOW and stats.variant == CHALLENGER
                window = stats.shadow_window if shadowing else stats.window
                rows.append(
                    VariantSnapshot(
                        model=name,
                        variant=stats.variant,
                        version=stats.version,
                        requests=stats.requests,
                        errors=stats.errors,
                        traffic_share=stats.requests / total if total else 0.0,
                        window_requests=len(window),
                        window_error_ratio=window.error_ratio,
                        window_p50_ms=window.quantile_ms(0.5),
                        window_p99_ms=window.quantile_ms(0.99),
                        shadow_requests=stats.shadow_requests,
                        shadow_errors=stats.shadow_errors,
                        shadow_disagreements=stats.shadow_disagreements,
                        shadow_dropped=stats.shadow_dropped,
                        window_disagreement_ratio=stats.shadow_window.disagreement_ratio,
                    )
                )
        return rows


__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "Decision",
    "Route",
    "Router",
    "VariantSnapshot",
    "bucket",
    "outputs_agree",
]
