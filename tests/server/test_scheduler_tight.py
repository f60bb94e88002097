"""The tightest recent deadlines (``scheduler.tight``) and what the planner
and admission do with them: batches kept short for tight callers at light
load, and the engine's capacity measured within their deadline."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from scheduler_doubles import (
    GatedEngine,
    affine_latency,
    expect_no_more_arrivals,
    hold_first_batch,
    request,
    scheduler,
)

from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.planners import AdaptivePlanner, QueueState
from inferd.server.scheduler.tight import MIN_SHARE, TightArrivals, deadline_class


def test_tightest_is_a_sliding_minimum_over_one_to_two_windows() -> None:
    tight = TightArrivals(window_s=1.0)
    assert math.isinf(tight.tightest(0.0).seconds)
    tight.add(0.015, 2, 10.2)
    tight.add(0.050, 2, 10.3)
    assert (tight.tightest(10.4).seconds, tight.tightest(10.4).rows) == (0.015, 2)
    # Still in view from the previous window...
    tight.add(0.050, 2, 11.5)
    assert tight.tightest(11.6).seconds == 0.015
    # ...gone two windows on.
    tight.add(0.050, 2, 12.1)
    assert tight.tightest(12.2).seconds == 0.050
    tight.add(0.050, 2, 20.0)  # a gap of several windows forgets everything before
    assert tight.tightest(20.0).seconds == 0.050


def test_tightest_share_counts_the_rows_of_its_octave_class() -> None:
    tight = TightArrivals(window_s=1.0)
    for i in range(10):
        tight.add(0.050, 1, 0.01 * i)
    tight.add(0.015, 1, 0.2)  # one of eleven: a stray caller
    stray = tight.tightest(0.3)
    assert stray.seconds == 0.015 and not stray.counts
    assert stray.share < MIN_SHARE
    tight.add(0.014, 1, 0.4)  # same octave (8-16 ms) as 15 ms
    tight.add(0.013, 1, 0.5)
    mix = tight.tightest(0.6)
    assert mix.seconds == 0.013 and mix.share == 3 / 13 and mix.counts
    assert deadline_class(0.013) == deadline_class(0.015) != deadline_class(0.050)


def _planner() -> AdaptivePlanner:
    # 2 ms + 1 ms per row, up to 16 rows, no reserve.
    planner = AdaptivePlanner(
        BatchingOptions(max_batch_size=16), affine_latency(0.002, 0.001, range(1, 17))
    )
    planner.reserve = 0.0
    return planner


def _state(tight_s: float, arrival_rate: float = 0.0) -> QueueState:
    # Sixteen loose rows queued, due in 50 ms.
    return QueueState(16, 0.05, 0.0, arrival_rate, tight_s=tight_s, tight_rows=1)


def test_plan_keeps_batches_short_enough_for_a_tight_arrival() -> None:
    planner = _planner()
    assert planner.plan(0.0, _state(math.inf)).take == 16
    # A 15 ms request arriving as the batch leaves waits for it, then runs
    # alone in 3 ms: the batch may take 12 ms, 10 rows.
    plan = planner.plan(0.0, _state(0.015))
    assert plan.take == 10 and plan.reason == "ready"


def test_plan_caps_no_lower_than_keeping_up_with_arrivals() -> None:
    planner = _planner()
    # 1,300 rows/s: 10-row batches (12 ms) serve ~830 rows/s; the engine
    # keeps up first.
    plan = planner.plan(0.0, _state(0.015, arrival_rate=1300.0))
    assert plan.take == planner.keep_up_size(1300.0) > 10


@pytest.mark.parametrize(("due", "take"), [(0.05, 10), (0.02, 16)])
def test_plan_caps_only_where_the_requests_left_behind_stay_on_time(due: float, take: int) -> None:
    # Sixteen one-row requests queued. Capped at 10 rows (12 ms), the six
    # left behind run after it and a tight request's batch (3 ms), in 8 ms:
    # done at 23 ms. Due at 50 ms they can wait; due at 20 ms the cap would
    # make them late for a tight caller who may never come.
    queued = [(1, due)] * 16
    state = QueueState(
        16, due, 0.0, 0.0, lambda: queued, tight_s=0.015, tight_rows=1
    )  # fmt: skip
    assert _planner().plan(0.0, state).take == take


def test_plan_does_not_cap_for_a_deadline_no_batch_can_meet() -> None:
    # 4 ms: even behind a one-row batch (3 ms) it needs 6 ms.
    assert _planner().plan(0.0, _state(0.004)).take == 16


@pytest.mark.parametrize("light", [True, False])
async def test_scheduler_keeps_batches_short_for_tight_callers_only_at_light_load(
    light: bool,
) -> None:
    # Under load full batches serve more tight requests than short ones:
    # their throughput is what the load needs.
    engine = GatedEngine()
    sched = scheduler(engine, affine_latency(0.002, 0.001, range(1, 17)), max_batch_size=16)
    expect_no_more_arrivals(sched)
    sched.admission.planner.reserve = 0.0
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    loose = [
        asyncio.create_task(sched.submit(request(float(i), deadline=now + 1.0))) for i in range(16)
    ]
    await asyncio.sleep(0)
    assert sched.queued == 16
    for _ in range(4):  # a fifth of the rows due in 15 ms
        sched.admission.tight.add(0.015, 1, time.monotonic())
    # Of what batches short enough for them serve (<= 10 rows: 833 rows/s).
    load = 0.1 if light else 1.0
    _sustained(sched, load * 10 / 0.012)
    engine.gate.set()
    await asyncio.gather(first, *loose)
    # 15 ms - 3 ms for the tight request alone: batches of <= 10 rows (12 ms).
    assert len(engine.batches[1]) == (10 if light else 16)
    await sched.close()


def _sustained(sched: BatchingScheduler, rows_per_s: float) -> None:
    sched.admission.sustained.rate = lambda now: rows_per_s  # type: ignore[method-assign]


def _tight_tenth(sched: BatchingScheduler) -> None:
    """A fifth of the rows lately due in 15 ms, the rest in 1 s."""
    now = time.monotonic()
    for _ in range(4):
        sched.admission.tight.add(0.015, 1, now)
    for _ in range(16):
        sched.admission.tight.add(1.0, 1, now)


def test_the_tight_cap_reads_the_sustained_load_on_the_batches_it_leaves() -> None:
    # 2 ms + 1 ms a row: batches of <= 10 rows (12 ms) leave a tight request
    # its own batch (3 ms) in 15 ms; they serve 833 rows/s. Within 15 ms, where
    # two batches of <= 6 rows must fit, the engine serves 750 rows/s.
    sched = scheduler(GatedEngine(), affine_latency(0.002, 0.001, range(1, 17)), max_batch_size=16)
    sched.admission.planner.reserve = 0.0
    _tight_tenth(sched)
    now = time.monotonic()
    assert sched.admission.capacity_ahead_of(sched.admission.tight.tightest(now)) == (
        pytest.approx(10 / 0.012)
    )
    # A burst: the load within the tight deadline reads heavy ...
    sched.admission.offered_load = lambda now, seconds_left=math.inf: 1.0  # type: ignore[method-assign]
    # ... while the sustained one is a tenth of what the capped batches serve.
    _sustained(sched, 83.0)
    assert sched.admission.tight_at_light_load(now).seconds == pytest.approx(0.015)
    _sustained(sched, 600.0)  # 0.72 of it: not light
    assert math.isinf(sched.admission.tight_at_light_load(now).seconds)
