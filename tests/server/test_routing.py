"""The router alone: variant choice, stickiness, statistics and guardrails,
with a stand-in model manager and a controllable clock."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from inferd.server.errors import Unavailable
from inferd.server.lifecycle.state import (
    Guardrails,
    LifecycleState,
    ModelLifecycle,
    RouteMode,
    Stage,
)
from inferd.server.observer import ServerObserver
from inferd.server.routing import CHALLENGER, CHAMPION, Decision, Router, bucket, outputs_agree


@dataclass
class FakeVersion:
    name: str
    version: int


class FakeModels:
    def __init__(self, *versions: int) -> None:
        self.ready = {v: FakeVersion("m", v) for v in versions}

    def get(self, name: str, version: int) -> FakeVersion | None:
        return self.ready.get(version) if name == "m" else None

    def resolve(self, name: str, version: str = "") -> FakeVersion:
        if name != "m" or not self.ready:
            raise Unavailable(f"model '{name}' is not ready")
        return self.ready[max(self.ready)]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_router(*versions: int, seed: int = 7) -> tuple[Router, FakeModels, Clock]:
    models = FakeModels(*versions)
    clock = Clock()
    router = Router(models, rng=random.Random(seed), clock=clock)  # type: ignore[arg-type]
    return router, models, clock


def state(**fields: Any) -> LifecycleState:
    fields.setdefault("stages", {1: Stage.PRODUCTION, 2: Stage.STAGING})
    return LifecycleState(revision=1, models={"m": ModelLifecycle(**fields)})


def test_without_a_route_the_default_version_serves() -> None:
    router, _, _ = make_router(1, 2)
    decision = router.route("m")
    assert (decision.version.version, decision.route, decision.shadow) == (2, None, None)
    router.record(decision, True, 0.001)  # nothing to record: no error
    assert router.variant_stats() == []


def test_canary_share_is_binomial() -> None:
    router, _, _ = make_router(1, 2)
    router.apply(state(champion=1, challenger=2, weight=0.1))
    n = 20_000
    hits = sum(router.route("m").version.version == 2 for _ in range(n))
    sigma = math.sqrt(n * 0.1 * 0.9)
    assert abs(hits - n * 0.1) < 4 * sigma


def test_ab_is_sticky_per_key_and_splits_by_weight() -> None:
    router, _, _ = make_router(1, 2)
    router.apply(state(champion=1, challenger=2, mode=RouteMode.AB, weight=0.3))
    keys = [f"user-{i}" for i in range(4000)]
    first = {k: router.route("m", lambda k=k: k).version.version for k in keys}
    for k in keys[:500]:
        assert router.route("m", lambda k=k: k).version.version == first[k]
    share = sum(v == 2 for v in first.values()) / len(keys)
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(keys))
    # The assignment is a pure function of model, challenger and key: the
    # same on every replica and after a restart.
    other, _, _ = make_router(1, 2, seed=99)
    other.apply(state(champion=1, challenger=2, mode=RouteMode.AB, weight=0.3))
    assert all(other.route("m", lambda k=k: k).version.version == first[k] for k in keys[:200])
    assert bucket("m", 2, "user-1") == bucket("m", 2, "user-1") != bucket("m", 3, "user-1")


def test_routing_key_is_only_read_for_ab_routes() -> None:
    router, _, _ = make_router(1, 2)
    router.apply(state(champion=1, challenger=2, weight=0.5))

    def key() -> str:
        raise AssertionError("canary routes must not parse the routing key")

    for _ in range(20):
        router.route("m", key)


def test_shadow_answers_with_the_champion_and_mirrors_a_share() -> None:
    router, _, _ = make_router(1, 2)
    router.apply(state(champion=1, challenger=2, mode=RouteMode.SHADOW, weight=0.5))
    decisions = [router.route("m") for _ in range(2000)]
    assert {d.version.version for d in decisions} == {1}
    mirrored = sum(d.shadow is not None for d in decisions)
    assert abs(mirrored - 1000) < 4 * math.sqrt(2000 * 0.25)


def test_blue_green_standby_takes_nothing() -> None:
    router, _, _ = make_router(1, 2)
    router.apply(state(champion=1, challenger=2, mode=RouteMode.BLUE_GREEN, weight=1.0))
    assert {router.route("m").version.version for _ in range(200)} == {1}


def test_versions_not_ready_here_are_skipped() -> None:
    router, models, _ = make_router(1)
    router.apply(state(champion=1, challenger=2, weight=1.0))
    assert router.route("m").version.version == 1  # the challenger is still loading
    router.apply(state(champion=3, challenger=0))
    del models.ready[1]
    models.ready[4] = FakeVersion("m", 4)
    decision = router.route("m")
    assert decision.version.version == 4 and decision.route is None  # the default serves
    assert router.serving("m").version == 4


def decide(router: Router, variant: str) -> Decision:
    for _ in range(10_000):
        decision = router.route("m")
        if decision.variant == variant:
            return decision
    raise AssertionError(f"no {variant} decision")


def test_error_guardrail_trips_once_after_min_requests() -> None:
    router, _, _ = make_router(1, 2)
    trips: list[tuple[str, int, str]] = []
    router.on_trip = lambda *a: trips.append(a)
    guard = Guardrails(window_s=10, min_requests=5, max_error_ratio=0.5)
    router.apply(state(champion=1, challenger=2, weight=0.5, guardrails=guard))
    decision = decide(router, CHALLENGER)
    for _ in range(4):
        router.record(decision, False, 0.001)
    assert trips == []  # below min_requests
    router.record(decision, False, 0.001)
    assert len(trips) == 1 and trips[0][:2] == ("m", 2)
    assert "error ratio" in trips[0][2]
    # Tripped: no more challenger traffic here, and no second trip.
    assert {router.route("m").version.version for _ in range(300)} == {1}
    router.record(decision, False, 0.001)
    assert len(trips) == 1
    # The local trip survives re-applying the same split, until it changes.
    router.apply(state(champion=1, challenger=2, weight=0.5, guardrails=guard))
    assert router.route_of("m").tripped  # type: ignore[union-attr]


def test_old_outcomes_leave_the_window() -> None:
    router, _, clock = make_router(1, 2)
    trips: list[Any] = []
    router.on_trip = lambda *a: trips.append(a)
    guard = Guardrails(window_s=10, min_requests=5, max_error_ratio=0.5)
    router.apply(state(champion=1, challenger=2, weight=0.5, guardrails=guard))
    decision = decide(router, CHALLENGER)
    for _ in range(4):
        router.record(decision, False, 0.001)
    clock.now += 11  # those failures are now outside the window
    for _ in range(6):
        router.record(decision, True, 0.001)
    router.record(decision, False, 0.001)
    assert trips == []
    (row,) = [s for s in router.variant_stats() if s.variant == CHALLENGER]
    assert (row.window_requests, row.errors, row.requests) == (7, 5, 11)


def test_latency_guardrail_uses_the_p99() -> None:
    router, _, clock = make_router(1, 2)
    trips: list[Any] = []
    router.on_trip = lambda *a: trips.append(a)
    guard = Guardrails(window_s=60, min_requests=10, max_p99_ms=50)
    router.apply(state(champion=1, challenger=2, weight=0.5, guardrails=guard))
    decision = decide(router, CHALLENGER)
    for _ in range(200):
        clock.now += 0.1
        router.record(decision, True, 0.010)
    router.record(decision, True, 0.500)  # one outlier in 201 is under the p99
    assert trips == []
    for _ in range(5):
        clock.now += 0.1
        router.record(decision, True, 0.500)
    assert trips and "p99 latency" in trips[0][2]


def test_shadow_disagreement_guardrail_and_counters() -> None:
    router, _, _ = make_router(1, 2)
    trips: list[Any] = []
    router.on_trip = lambda *a: trips.append(a)
    guard = Guardrails(window_s=60, min_requests=4, max_disagreement_ratio=0.5)
    router.apply(
        state(champion=1, challenger=2, mode=RouteMode.SHADOW, weight=1.0, guardrails=guard)
    )
    decision = router.route("m")
    assert decision.shadow is not None
    for agree in (True, False, False):
        assert router.begin_shadow(decision)
        router.end_shadow(decision, ok=True, latency_s=0.01, agree=agree)
    assert router.begin_shadow(decision)
    router.end_shadow(decision, ok=True, latency_s=0.01, agree=None, dropped=True)
    assert trips == []  # a dropped mirror is not an outcome
    assert router.begin_shadow(decision)
    router.end_shadow(decision, ok=True, latency_s=0.01, agree=False)
    assert trips and "disagreement" in trips[0][2]
    (row,) = [s for s in router.variant_stats() if s.variant == CHALLENGER]
    assert (row.shadow_requests, row.shadow_disagreements, row.shadow_dropped) == (4, 3, 1)
    # A shadow challenger answers nobody: its window is the mirrored traffic.
    assert (row.requests, row.window_requests, row.window_p50_ms) == (0, 4, 10.0)
    assert router.shadow_inflight == 0


def test_shadow_in_flight_is_bounded() -> None:
    router, _, _ = make_router(1, 2)
    router.max_shadow_inflight = 2
    router.apply(state(champion=1, challenger=2, mode=RouteMode.SHADOW, weight=1.0))
    decision = router.route("m")
    assert router.begin_shadow(decision) and router.begin_shadow(decision)
    assert not router.begin_shadow(decision)
    (row,) = [s for s in router.variant_stats() if s.variant == CHALLENGER]
    assert row.shadow_dropped == 1


class Recorder(ServerObserver):
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def on_shadow(self, name: str, version: int, outcome: str) -> None:
        self.events.append(("shadow", name, str(version), outcome))

    def on_guardrail_trip(self, name: str, version: int) -> None:
        self.events.append(("trip", name, str(version)))


def test_shadow_outcomes_and_trips_reach_the_observer() -> None:
    # What metrics count: every mirrored request's outcome, once, and the trip.
    recorder = Recorder()
    router = Router(FakeModels(1, 2), observer=recorder)  # type: ignore[arg-type]
    router.max_shadow_inflight = 1
    guard = Guardrails(window_s=60, min_requests=4, max_error_ratio=0.4)
    router.apply(
        state(champion=1, challenger=2, mode=RouteMode.SHADOW, weight=1.0, guardrails=guard)
    )
    decision = router.route("m")
    for ok, agree in ((True, True), (True, False), (False, None)):
        assert router.begin_shadow(decision)
        router.end_shadow(decision, ok=ok, latency_s=0.01, agree=agree)
    assert router.begin_shadow(decision)
    assert not router.begin_shadow(decision)  # the bound: dropped before running
    router.end_shadow(decision, ok=False, latency_s=0.01, agree=None, dropped=True)
    assert router.begin_shadow(decision)
    router.end_shadow(decision, ok=False, latency_s=0.01, agree=None)  # 2 errors in 4: trips
    outcomes = [e[3] for e in recorder.events if e[0] == "shadow"]
    assert outcomes == ["agree", "disagree", "error", "dropped", "dropped", "error"]
    assert recorder.events[-1] == ("trip", "m", "2")
    assert all(e[1:3] == ("m", "2") for e in recorder.events)


def test_traffic_share_and_stats_survive_unrelated_state_changes() -> None:
    router, _, _ = make_router(1, 2, 3)
    router.apply(state(champion=1, challenger=2, weight=0.5))
    for _ in range(100):
        d = router.route("m")
        router.record(d, True, 0.001)
    rows = {s.variant: s for s in router.variant_stats("m")}
    assert rows[CHAMPION].requests + rows[CHALLENGER].requests == 100
    assert math.isclose(rows[CHAMPION].traffic_share + rows[CHALLENGER].traffic_share, 1.0)
    # A stage change elsewhere keeps the split, so the counters stay.
    router.apply(state(champion=1, challenger=2, weight=0.5, stages={3: Stage.STAGING}))
    assert sum(s.requests for s in router.variant_stats("m")) == 100
    # A new split starts fresh.
    router.apply(state(champion=1, challenger=3, weight=0.5))
    assert sum(s.requests for s in router.variant_stats("m")) == 0


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"y": np.ones(3, np.float32)}, {"y": np.ones(3, np.float32) + 1e-7}, True),
        ({"y": np.ones(3, np.float32)}, {"y": np.ones(3, np.float32) + 0.01}, False),
        ({"y": np.ones(3)}, {"y": np.ones(4)}, False),
        ({"y": np.ones(3)}, {"z": np.ones(3)}, False),
        ({"y": np.arange(3)}, {"y": np.arange(3)}, True),
        ({"y": np.arange(3)}, {"y": np.arange(3) + 1}, False),
        ({"y": np.array([b"a"], object)}, {"y": np.array([b"a"], object)}, True),
        ({"y": np.array([np.nan])}, {"y": np.array([np.nan])}, True),
    ],
)
def test_outputs_agree(a: dict[str, np.ndarray], b: dict[str, np.ndarray], same: bool) -> None:
    assert outputs_agree(a, b) is same
