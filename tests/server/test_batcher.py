"""Behaviour of the batching scheduler with a controllable engine.

The engine here is a test double on purpose: these tests need to hold a batch
mid-execution and to know exactly which rows ran in which batch, which a real
onnxruntime session cannot show. The real engine is covered end to end in the
server and client tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from engine_doubles import DoublingEngine

from inferd.engines import EngineError
from inferd.server.errors import DeadlineExceeded, EngineFailure, Unavailable
from inferd.server.request import InferRequest
from inferd.server.scheduler.admission import BurstRate
from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.planners import AdaptivePlanner, Plan, QueueState, StaticPlanner
from inferd.server.stats import ModelStats


class GatedEngine(DoublingEngine):
    """y = 2x. Each call records the first column of its batch, waits on
    ``gate`` while it is closed, then sleeps ``seconds``."""

    def __init__(self, *, concurrency: int = 1, seconds: float = 0.0, width: int = 2) -> None:
        super().__init__(width)
        self.max_concurrency = concurrency
        self.seconds = seconds
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.batches: list[list[float]] = []
        self.fail_next = False

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append([float(v) for v in x[:, 0]])
        self.started.set()
        self.gate.wait(10)
        if self.seconds:
            time.sleep(self.seconds)
        if self.fail_next:
            self.fail_next = False
            raise EngineError("boom")
        return {"y": x * 2}


def request(
    value: float, rows: int = 1, deadline: float | None = None, **kw: object
) -> InferRequest:
    x = np.full((rows, 2), value, dtype=np.float32)
    x[:, 1] = np.arange(rows)
    return InferRequest(inputs={"x": x}, outputs=(), rows=rows, deadline=deadline, **kw)  # type: ignore[arg-type]


def scheduler(
    engine: GatedEngine, latency: LatencyModel | None = None, **options: object
) -> BatchingScheduler:
    options.setdefault("max_batch_size", 8)
    return BatchingScheduler(engine, ModelStats(), BatchingOptions(**options), latency)  # type: ignore[arg-type]


async def hold_first_batch(
    sched: BatchingScheduler, engine: GatedEngine
) -> asyncio.Task[dict[str, np.ndarray]]:
    """Start a batch and keep it running until ``engine.gate`` is set."""
    engine.gate.clear()
    first = asyncio.create_task(sched.submit(request(-1.0)))
    while not engine.started.is_set():
        await asyncio.sleep(0.001)
    return first


async def queue_behind_first_batch(
    sched: BatchingScheduler, engine: GatedEngine, value: float
) -> tuple[asyncio.Task[dict[str, np.ndarray]], asyncio.Task[dict[str, np.ndarray]]]:
    """Hold a first batch running, then queue one request of ``value`` behind it."""
    first = await hold_first_batch(sched, engine)
    queued = asyncio.create_task(sched.submit(request(value)))
    while sched.queued == 0:
        await asyncio.sleep(0)
    return first, queued


async def test_queue_is_served_earliest_deadline_first() -> None:
    engine = GatedEngine()
    sched = scheduler(engine, max_batch_size=1)
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    far = asyncio.create_task(sched.submit(request(3.0, deadline=now + 30)))
    near = asyncio.create_task(sched.submit(request(1.0, deadline=now + 10)))
    mid = asyncio.create_task(sched.submit(request(2.0, deadline=now + 20)))
    await asyncio.sleep(0.01)
    engine.gate.set()
    await asyncio.gather(first, far, near, mid)
    assert engine.batches == [[-1.0], [1.0], [2.0], [3.0]]
    await sched.close()


async def test_priority_level_beats_an_earlier_deadline() -> None:
    engine = GatedEngine()
    sched = scheduler(engine, max_batch_size=1, priority_levels=2)
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    low = asyncio.create_task(sched.submit(request(2.0, deadline=now + 1, priority=2)))
    high = asyncio.create_task(sched.submit(request(1.0, deadline=now + 30, priority=1)))
    await asyncio.sleep(0.01)
    engine.gate.set()
    await asyncio.gather(first, low, high)
    assert engine.batches[1:] == [[1.0], [2.0]]
    await sched.close()


async def test_requests_queued_behind_a_batch_merge_and_split_back() -> None:
    engine = GatedEngine()
    sched = scheduler(engine)
    first = await hold_first_batch(sched, engine)
    tasks = [
        asyncio.create_task(sched.submit(request(float(v), rows=r)))
        for v, r in ((1, 1), (2, 3), (3, 2))
    ]
    await asyncio.sleep(0.01)
    engine.gate.set()
    results = await asyncio.gather(*tasks)
    await first
    assert engine.batches[1] == [1.0, 2.0, 2.0, 2.0, 3.0, 3.0]  # one batch of 6 rows
    for (value, rows), out in zip(((1, 1), (2, 3), (3, 2)), results, strict=True):
        expected = np.full((rows, 2), value * 2, dtype=np.float32)
        expected[:, 1] = np.arange(rows) * 2
        np.testing.assert_array_equal(out["y"], expected)
    assert sched.stats.execution_count == 2
    assert sched.batches[-1].rows == 6 and sched.batches[-1].requests == 3
    await sched.close()


async def test_cancelled_request_leaves_the_queue_before_compute() -> None:
    engine = GatedEngine()
    sched = scheduler(engine)
    first = await hold_first_batch(sched, engine)
    doomed = asyncio.create_task(sched.submit(request(7.0)))
    kept = asyncio.create_task(sched.submit(request(8.0)))
    await asyncio.sleep(0.01)
    doomed.cancel()
    await asyncio.sleep(0.01)
    engine.gate.set()
    await asyncio.gather(first, kept)
    assert all(7.0 not in batch for batch in engine.batches)
    assert [8.0] in engine.batches
    assert sched.counters.cancelled == 1
    await sched.close()


async def test_expired_request_is_answered_and_never_run() -> None:
    engine = GatedEngine()
    sched = scheduler(engine)
    first = await hold_first_batch(sched, engine)
    late = asyncio.create_task(sched.submit(request(5.0, deadline=time.monotonic() + 0.05)))
    await asyncio.sleep(0.1)  # its deadline passes while the first batch runs
    engine.gate.set()
    await first
    with pytest.raises(DeadlineExceeded, match="expired"):
        await late
    assert all(5.0 not in batch for batch in engine.batches)
    assert sched.counters.expired == 1
    await sched.close()


async def test_admission_refuses_what_cannot_finish_in_time() -> None:
    engine = GatedEngine()
    latency = affine_latency(0.05, 0.0, range(1, 9))  # 50 ms per batch, any size
    sched = scheduler(engine, latency)
    first = await hold_first_batch(sched, engine)
    with pytest.raises(DeadlineExceeded, match=r"predicted \d+\.\d ms"):
        await sched.submit(request(9.0, deadline=time.monotonic() + 0.01))
    assert sched.counters.refused["deadline"] == 1
    assert sched.queued == 0  # refused at arrival, never queued
    engine.gate.set()
    await first
    ok = await sched.submit(request(4.0, deadline=time.monotonic() + 1.0))
    assert ok["y"][0, 0] == 8.0
    await sched.close()


async def test_admission_refuses_a_request_that_would_make_its_batch_late() -> None:
    # Joining a queued batch makes it bigger and slower: the requests already
    # in it were admitted on the promise of the smaller batch.
    engine = GatedEngine()
    latency = affine_latency(0.0, 0.1, range(1, 9))  # 100 ms per row
    sched = scheduler(engine, latency)
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    # Alone behind the running batch: <= 100 + 100 ms + reserve, within 250 ms.
    tight = asyncio.create_task(sched.submit(request(1.0, deadline=now + 0.25)))
    await asyncio.sleep(0)
    assert sched.queued == 1
    # Fits its own 10 s, but in tight's batch it would end ~300 ms in.
    with pytest.raises(DeadlineExceeded, match="batch it would join must finish within"):
        await sched.submit(request(2.0, deadline=now + 10))
    # Eight rows cannot share tight's batch, so they do not threaten it.
    own_batch = asyncio.create_task(sched.submit(request(3.0, rows=8, deadline=now + 10)))
    await asyncio.sleep(0)
    assert sched.queued == 2
    engine.gate.set()
    await asyncio.gather(first, tight, own_batch)
    assert engine.batches[1] == [1.0] and engine.batches[2] == [3.0] * 8
    # Counted apart from refusals for the request's own deadline: operators
    # see which rule refuses.
    assert sched.counters.refused == {"batch_deadline": 1}
    await sched.close()


async def test_admission_counts_only_the_work_ahead_in_deadline_order() -> None:
    # Eight rows due in 950 ms queued behind a running batch (100 ms per row:
    # they need 100 + 800 ms). A request due in 400 ms goes ahead of them
    # (earliest deadline first): it needs the running batch and its own, so
    # it is admitted, where counted behind every queued row (1 s) it was not.
    engine = GatedEngine()
    latency = affine_latency(0.0, 0.1, range(1, 9))  # 100 ms per row
    sched = scheduler(engine, latency)
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    loose = [asyncio.create_task(sched.submit(request(2.0, deadline=now + 0.95))) for _ in range(8)]
    await asyncio.sleep(0)
    assert sched.queued == 8
    tight = asyncio.create_task(sched.submit(request(1.0, deadline=now + 0.4)))
    await asyncio.sleep(0)
    assert sched.queued == 9 and not sched.counters.refused
    # Due after every queued request, a newcomer still waits for all of them.
    with pytest.raises(DeadlineExceeded, match=r"predicted 1\d{3}\.\d ms"):
        await sched.submit(request(3.0, deadline=now + 1.0))
    engine.gate.set()
    await asyncio.gather(first, tight, *loose)
    assert engine.batches[1][0] == 1.0  # the tight request runs first
    assert sched.counters.late == 0
    await sched.close()


@pytest.mark.parametrize("admission", ["balanced", "strict"])
async def test_a_batch_predicted_late_already_refuses_newcomers_only_under_strict_admission(
    admission: str,
) -> None:
    # Refusing a newcomer saves none of a batch that is late without it:
    # balanced admission admits it (its own deadline allows), strict refuses.
    engine = GatedEngine()
    latency = affine_latency(0.0, 0.1, range(1, 9))  # 100 ms per row
    sched = scheduler(engine, latency, admission=admission)
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    # Behind the running batch: ~100 + 100 ms + reserve, within 250 ms.
    tight = asyncio.create_task(sched.submit(request(1.0, deadline=now + 0.25)))
    await asyncio.sleep(0)
    assert sched.queued == 1
    # The running batch overruns its 100 ms: tight's batch is now predicted
    # to end past 250 ms with or without a newcomer.
    await asyncio.sleep(0.2)
    newcomer = sched.submit(request(2.0, deadline=time.monotonic() + 10))
    if admission == "strict":
        with pytest.raises(DeadlineExceeded, match="batch it would join must finish within"):
            await newcomer
        assert sched.counters.refused == {"batch_deadline": 1}
    else:
        joined = asyncio.create_task(newcomer)
        await asyncio.sleep(0)
        assert sched.queued == 2 and not sched.counters.refused
    engine.gate.set()
    await first
    assert (await tight)["y"][0, 0] == 2.0  # the double runs at once when let go
    if admission == "balanced":
        assert (await joined)["y"][0, 0] == 4.0
        assert engine.batches[1] == [1.0, 2.0]
    await sched.close()


async def test_admission_keeps_the_planners_reserve_behind_queued_work_only() -> None:
    # Behind queued work, admitting into the reserve would promise what
    # dispatch then cuts short (it keeps the reserve free before the head's
    # deadline). A request with nothing ahead runs once the slot frees.
    engine = GatedEngine()
    latency = affine_latency(0.05, 0.0, range(1, 9))
    sched = scheduler(engine, latency)
    sched.planner.reserve = 0.05
    first = await hold_first_batch(sched, engine)
    # Predicted <= 100 ms (the running batch, then its own): fits 110 ms
    # without the reserve, and nothing is queued ahead of it.
    head = asyncio.create_task(sched.submit(request(1.0, deadline=time.monotonic() + 0.11)))
    await asyncio.sleep(0)
    assert sched.queued == 1 and not sched.counters.refused
    # Behind it, in the same batch: <= 100 ms fits 120 ms, + 50 ms does not.
    with pytest.raises(DeadlineExceeded, match="cannot finish within the deadline"):
        await sched.submit(request(2.0, deadline=time.monotonic() + 0.12))
    assert sched.counters.refused["deadline"] == 1 and sched.queued == 1
    engine.gate.set()
    await asyncio.gather(first, head)
    await sched.close()


async def test_admission_pads_with_the_larger_of_margin_and_reserve_not_both() -> None:
    # Reserve and margin both stand for time outside the engine.
    engine = GatedEngine()
    latency = affine_latency(0.05, 0.0, range(1, 9))
    sched = scheduler(engine, latency)
    sched.planner.reserve = 0.03
    sched.admission.margin.b = 0.2  # 20 % of a ~100 ms prediction: 20 ms
    first = await hold_first_batch(sched, engine)
    # Nothing ahead: <= 100 ms predicted + the 20 ms margin fits 130 ms.
    head = asyncio.create_task(sched.submit(request(0.5, deadline=time.monotonic() + 0.13)))
    await asyncio.sleep(0)
    # Behind it: <= 100 ms + 30 ms (the larger) fits 140 ms; + 50 ms (both) would not.
    admitted = asyncio.create_task(sched.submit(request(1.0, deadline=time.monotonic() + 0.14)))
    await asyncio.sleep(0)
    assert sched.queued == 2 and not admitted.done()
    sched.admission.margin.b = 0.5  # 50 ms: now the margin is the larger, and too large
    with pytest.raises(DeadlineExceeded, match="cannot finish within the deadline"):
        await sched.submit(request(2.0, deadline=time.monotonic() + 0.14))
    engine.gate.set()
    await asyncio.gather(first, head, admitted)
    await sched.close()


def test_load_is_measured_against_what_the_engine_serves_within_the_budget() -> None:
    # A fixed-cost engine: 6 ms + 0.5 ms per row. A request waits for the
    # running batch, then runs in the next: two batch times must fit the budget.
    latency = LatencyModel()
    for size in range(1, 17):
        latency.observe(size, 0.006 + 0.0005 * size)
    budgeted = scheduler(GatedEngine(), latency, max_batch_size=16, budget_s=0.0251)
    budgeted.planner.reserve = 0.003
    # (25.1 - 3) / 2 = 11.05 ms holds 10 rows (11 ms), not 11 (11.5 ms).
    assert budgeted.admission.budget_capacity() == pytest.approx(10 / 0.011)
    unbounded = scheduler(GatedEngine(), latency, max_batch_size=16)
    assert unbounded.admission.budget_capacity() == pytest.approx(16 / 0.014)
    budgeted.admission.offered.add(500, time.monotonic())
    load = budgeted.admission.offered_load(time.monotonic())
    offered = budgeted.admission.offered.rate(time.monotonic())
    assert load == pytest.approx(offered * 0.011 / 10, rel=1e-3)


async def test_full_queue_answers_unavailable_with_a_retry_hint() -> None:
    engine = GatedEngine()
    sched = scheduler(engine, max_queue=2, max_batch_size=1)
    first = await hold_first_batch(sched, engine)
    queued = [asyncio.create_task(sched.submit(request(float(i)))) for i in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(Unavailable, match="retry after"):
        await sched.submit(request(9.0))
    engine.gate.set()
    await asyncio.gather(first, *queued)
    await sched.close()


async def test_engine_failure_fails_only_its_own_batch() -> None:
    engine = GatedEngine()
    sched = scheduler(engine)
    engine.fail_next = True
    with pytest.raises(EngineFailure, match="boom"):
        await sched.submit(request(1.0))
    out = await sched.submit(request(2.0))
    assert out["y"][0, 0] == 4.0
    await sched.close()


async def test_padding_to_an_engine_size_returns_only_real_rows() -> None:
    engine = GatedEngine()
    sched = scheduler(engine, engine_sizes=(1, 4, 8))
    first = await hold_first_batch(sched, engine)
    tasks = [asyncio.create_task(sched.submit(request(float(v)))) for v in (1, 2, 3)]
    await asyncio.sleep(0.01)
    engine.gate.set()
    results = await asyncio.gather(*tasks)
    await first
    assert len(engine.batches[1]) == 4  # 3 rows padded to the engine's size 4
    assert [r["y"].shape for r in results] == [(1, 2)] * 3
    assert sched.batches[-1].size == 4 and sched.batches[-1].rows == 3
    await sched.close()


async def test_requests_with_different_inner_shapes_do_not_merge() -> None:
    engine = GatedEngine()
    sched = scheduler(engine)
    first = await hold_first_batch(sched, engine)
    wide = InferRequest(inputs={"x": np.ones((1, 3), np.float32)}, outputs=(), rows=1)
    narrow = asyncio.create_task(sched.submit(request(2.0)))
    other = asyncio.create_task(sched.submit(wide))
    await asyncio.sleep(0.01)
    engine.gate.set()
    await asyncio.gather(first, narrow, other)
    assert sorted(len(b) for b in engine.batches[1:]) == [1, 1]
    await sched.close()


async def test_policy_none_runs_each_request_alone() -> None:
    engine = GatedEngine()
    sched = scheduler(engine, policy="none")
    first = await hold_first_batch(sched, engine)
    tasks = [asyncio.create_task(sched.submit(request(float(v), rows=2))) for v in (1, 2)]
    await asyncio.sleep(0.01)
    engine.gate.set()
    await asyncio.gather(first, *tasks)
    assert engine.batches[1:] == [[1.0, 1.0], [2.0, 2.0]]
    await sched.close()


async def test_close_finishes_admitted_work_and_refuses_new() -> None:
    engine = GatedEngine()
    sched = scheduler(engine)
    first = await hold_first_batch(sched, engine)
    queued = asyncio.create_task(sched.submit(request(3.0)))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(sched.close())
    await asyncio.sleep(0.01)
    with pytest.raises(Unavailable):
        await sched.submit(request(4.0))
    engine.gate.set()
    await closing
    assert (await queued)["y"][0, 0] == 6.0 and (await first)["y"][0, 0] == -2.0


async def test_static_policy_fires_on_preferred_size_or_window() -> None:
    engine = GatedEngine()
    sched = scheduler(engine, policy="static", preferred_sizes=(4,), max_queue_delay_s=0.3)
    start = time.monotonic()
    await asyncio.gather(*(sched.submit(request(float(v))) for v in range(4)))
    assert engine.batches[0] == [0.0, 1.0, 2.0, 3.0]
    assert sched.batches[-1].reason == "full"
    # A window long enough that a stall of the shared CI host cannot pass for it.
    assert time.monotonic() - start < 0.3  # did not wait for the window
    start = time.monotonic()
    await sched.submit(request(9.0))
    assert time.monotonic() - start >= 0.28  # a lone request waits the window out
    assert sched.batches[-1].reason == "window"
    await sched.close()


# -- the adaptive plan, deterministic --------------------------------------------------------


def affine_latency(base: float, per_row: float, sizes: range) -> LatencyModel:
    model = LatencyModel()
    for s in sizes:
        model.observe(s, base + per_row * s)
    return model


def test_adaptive_plan_dispatches_at_once_under_light_load() -> None:
    opts = BatchingOptions(max_batch_size=32)
    planner = AdaptivePlanner(opts, affine_latency(0.002, 0.0001, range(1, 33)))
    plan = planner.plan(
        0.0, QueueState(rows=1, head_deadline=0.025, head_arrival=0.0, arrival_rate=10.0)
    )
    assert plan.take == 1 and plan.reason == "ready"


def test_adaptive_plan_waits_for_a_fuller_batch_under_heavy_load_until_slack_runs_out() -> None:
    opts = BatchingOptions(max_batch_size=32)
    latency = affine_latency(0.002, 0.0001, range(1, 33))
    planner = AdaptivePlanner(opts, latency)
    # 2,000 rows/s: batches of 1 (2.1 ms each) cannot keep up, so it waits...
    plan = planner.plan(
        0.0, QueueState(rows=1, head_deadline=0.025, head_arrival=0.0, arrival_rate=2000)
    )
    assert plan.take == 0 and plan.wake_at is not None and 0 < plan.wake_at < 0.025
    # ...but not past the moment the earliest deadline would be missed.
    late = planner.plan(
        0.0224, QueueState(rows=3, head_deadline=0.025, head_arrival=0.0, arrival_rate=2000)
    )
    assert late.take == 3 and late.reason == "deadline"


def plan_queue(queue: list[tuple[int, float]], arrival_rate: float = 0) -> Plan:
    """Plan, at t=0 with no reserve, over ``queue`` (rows, deadline) on an
    engine taking 1 ms + 1 ms per row, up to 32 rows."""
    planner = AdaptivePlanner(
        BatchingOptions(max_batch_size=32), affine_latency(0.001, 0.001, range(1, 33))
    )
    planner.reserve = 0.0
    rows = sum(r for r, _ in queue)
    state = QueueState(rows, queue[0][1], 0.0, arrival_rate, queue=lambda: queue)
    return planner.plan(0.0, state)


def test_adaptive_plan_cuts_a_batch_short_to_save_a_tight_head() -> None:
    # One request due in 10 ms, nineteen with time to spare: 1 ms + 1 ms/row.
    plan = plan_queue([(1, 0.010)] + [(1, 0.100)] * 19)
    assert 1 <= plan.take <= 9  # the head finishes in time, the rest still do after it
    assert plan.slack >= 0


def test_adaptive_plan_keeps_the_batch_whole_when_cutting_would_make_the_rest_late() -> None:
    # The head is already tight; cutting to save it would push the other
    # eleven (due a little later) a whole batch back, all of them late.
    plan = plan_queue([(1, 0.0125)] + [(1, 0.0135)] * 11)
    assert plan.take == 12


def test_adaptive_plan_fires_a_full_batch_at_once() -> None:
    opts = BatchingOptions(max_batch_size=8)
    planner = AdaptivePlanner(opts, affine_latency(0.001, 0.0001, range(1, 9)))
    plan = planner.plan(
        0.0, QueueState(rows=50, head_deadline=1.0, head_arrival=0.0, arrival_rate=1e6)
    )
    assert (plan.take, plan.reason) == (8, "full")


def test_adaptive_plan_pads_only_when_the_padded_batch_fits() -> None:
    opts = BatchingOptions(max_batch_size=16, engine_sizes=(1, 8, 16))
    latency = LatencyModel()
    latency.observe(1, 0.001)
    latency.observe(8, 0.004)
    latency.observe(16, 0.050)
    planner = AdaptivePlanner(opts, latency)
    fits = planner.plan(
        0.0, QueueState(rows=5, head_deadline=1.0, head_arrival=0.0, arrival_rate=0)
    )
    assert (fits.size, fits.take) == (8, 5)
    tight = planner.plan(
        0.0, QueueState(rows=10, head_deadline=0.02, head_arrival=0.0, arrival_rate=0)
    )
    assert tight.size == 8 and tight.take == 8  # padding 10 -> 16 would miss the deadline


def test_static_plan_takes_the_largest_preferred_size_when_the_window_closes() -> None:
    opts = BatchingOptions(max_batch_size=32, preferred_sizes=(4, 8), max_queue_delay_s=0.01)
    planner = StaticPlanner(opts, LatencyModel())
    assert planner.plan(0.005, QueueState(6, 1.0, 0.0, 0)).take == 0
    assert planner.plan(0.011, QueueState(6, 1.0, 0.0, 0)).take == 4
    assert planner.plan(0.0, QueueState(9, 1.0, 0.0, 0)).take == 8


def test_latency_model_interpolates_and_keeps_a_high_quantile() -> None:
    model = LatencyModel()
    model.observe(1, 0.001)
    model.observe(9, 0.009)
    assert model.mean(5) == pytest.approx(0.005)
    for _ in range(20):
        model.observe(2, 0.002)
    model.observe(2, 0.020)  # two outliers in 22: above the 95th percentile
    model.observe(2, 0.020)
    assert model.high(2) > model.mean(2)
    assert model.mean(100) > model.mean(9)  # extrapolates upward


async def test_fast_batches_can_run_inline_on_the_event_loop_thread() -> None:
    threads: list[str] = []

    class Recording(GatedEngine):
        def infer(self, inputs, outputs=None):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            return super().infer(inputs, outputs)

    latency = LatencyModel()
    for s in range(1, 9):
        latency.observe(s, 0.0001)
    inline = scheduler(Recording(), latency, inline_max_s=0.001)
    out = await inline.submit(request(3.0, rows=2))
    threaded = scheduler(Recording(), latency)
    await threaded.submit(request(3.0))
    assert out["y"][0, 0] == 6.0 and inline.stats.execution_count == 1
    assert threads[0] == threading.current_thread().name  # the loop's own thread
    assert threads[1] != threading.current_thread().name
    await inline.close()
    await threaded.close()


def test_inline_option_is_read_from_config_parameters() -> None:
    from inferd.protos import model_config_pb2
    from inferd.server.scheduler.options import options_from_config

    config = model_config_pb2.ModelConfig(max_batch_size=8)
    config.dynamic_batching.SetInParent()
    config.parameters["inline_max_us"].string_value = "300"
    assert options_from_config(config).inline_max_s == pytest.approx(0.0003)
    config.parameters["inline_max_us"].string_value = "lots"
    with pytest.raises(Exception, match="inline_max_us"):
        options_from_config(config)


def test_reply_allowance_is_read_from_config_parameters() -> None:
    from inferd.protos import model_config_pb2
    from inferd.server.scheduler.options import options_from_config

    config = model_config_pb2.ModelConfig(max_batch_size=8)
    config.dynamic_batching.SetInParent()
    assert options_from_config(config).reply_allowance_s == pytest.approx(0.0005)
    config.parameters["reply_allowance_us"].string_value = "0"
    assert options_from_config(config).reply_allowance_s == 0.0
    config.parameters["reply_allowance_us"].string_value = "-5"
    with pytest.raises(Exception, match="reply_allowance_us"):
        options_from_config(config)


async def test_admission_keeps_the_reply_allowance_before_the_deadline() -> None:
    # The answer must still reach the caller: a request that fits its
    # deadline only if the answer needed no time to travel is refused.
    latency = affine_latency(0.01, 0.0, range(1, 9))  # 10 ms per batch
    for allowance, admitted in ((0.05, False), (0.0, True)):
        engine = GatedEngine()
        sched = scheduler(engine, latency, reply_allowance_s=allowance)
        first = await hold_first_batch(sched, engine)
        # <= 10 ms for the running batch + 10 ms + 3 ms reserve: fits 60 ms, not 10.
        task = asyncio.create_task(sched.submit(request(2.0, deadline=time.monotonic() + 0.06)))
        await asyncio.sleep(0)
        engine.gate.set()
        await first
        if admitted:
            assert (await task)["y"][0, 0] == 4.0
        else:
            with pytest.raises(DeadlineExceeded, match="cannot finish within the deadline"):
                await task
        await sched.close()


async def test_a_request_inside_the_reply_allowance_is_refused_even_by_an_idle_model() -> None:
    # An idle model always tries, but an answer ready now would still reach
    # the caller late: refused at once, saying why, never queued or run.
    engine = GatedEngine()
    sched = scheduler(engine, reply_allowance_s=0.05)
    with pytest.raises(DeadlineExceeded, match="the answer needs to reach the caller"):
        await sched.submit(request(3.0, deadline=time.monotonic() + 0.02))
    assert engine.batches == [] and sched.counters.expired == 0
    assert sched.counters.refused["deadline"] == 1
    await sched.close()


async def test_static_policy_ignores_the_reply_allowance() -> None:
    # Triton's semantics: the static policy runs what has not timed out.
    engine = GatedEngine()
    sched = scheduler(engine, policy="static", reply_allowance_s=0.05)
    out = await sched.submit(request(3.0, deadline=time.monotonic() + 0.02))
    assert out["y"][0, 0] == 6.0
    await sched.close()


async def test_an_idle_model_runs_despite_a_pessimistic_latency_model() -> None:
    # Warmup on a busy host can learn absurd figures; refusing everything would
    # then lock the model shut, since only running corrects the model.
    engine = GatedEngine()
    latency = LatencyModel()
    for size in range(1, 9):
        latency.observe(size, 0.5)
    sched = scheduler(engine, latency)
    out = await sched.submit(request(2.0, deadline=time.monotonic() + 0.05))
    assert out["y"][0, 0] == 4.0
    assert latency.mean(1) < 0.5  # the real run pulled the estimate down
    await sched.close()


async def test_static_policy_runs_work_a_prediction_calls_hopeless() -> None:
    # Triton's batcher drops only what has timed out, not what it predicts late.
    engine = GatedEngine()
    latency = LatencyModel()
    for size in range(1, 9):
        latency.observe(size, 1.0)
    sched = scheduler(engine, latency, policy="static")
    first = await hold_first_batch(sched, engine)
    queued = asyncio.create_task(sched.submit(request(6.0, deadline=time.monotonic() + 0.5)))
    await asyncio.sleep(0.01)
    engine.gate.set()
    await first
    assert (await queued)["y"][0, 0] == 12.0
    await sched.close()


def test_warmup_seed_takes_the_median_not_the_first_sample() -> None:
    model = LatencyModel()
    model.seed(4, [0.030, 0.001, 0.001, 0.002, 0.001])
    assert model.mean(4) == pytest.approx(0.001)
    assert model.high(4) >= model.mean(4)


def test_adaptive_plan_spends_at_most_a_tenth_of_the_budget_waiting() -> None:
    opts = BatchingOptions(max_batch_size=32)
    planner = AdaptivePlanner(opts, affine_latency(0.002, 0.0001, range(1, 33)))
    # Heavy load says "wait for more", but the head already waited 3 ms of
    # 25 (less the 3 ms reserve: a tenth is 2.2 ms).
    plan = planner.plan(
        0.003, QueueState(rows=1, head_deadline=0.025, head_arrival=0.0, arrival_rate=2000)
    )
    assert plan.take == 1 and plan.reason == "waited"
    early = planner.plan(
        0.001, QueueState(rows=1, head_deadline=0.025, head_arrival=0.0, arrival_rate=2000)
    )
    assert early.take == 0 and early.wake_at is not None and early.wake_at <= 0.00221


def test_adaptive_plan_keeps_a_reserve_before_the_deadline() -> None:
    opts = BatchingOptions(max_batch_size=8)
    planner = AdaptivePlanner(opts, affine_latency(0.010, 0.0, range(1, 9)))
    planner.reserve = 0.005
    # 10 ms of engine + 5 ms reserve no longer fit 14 ms: dispatch now.
    plan = planner.plan(
        0.0, QueueState(rows=1, head_deadline=0.014, head_arrival=0.0, arrival_rate=5000)
    )
    assert plan.take == 1 and plan.reason == "deadline"


def test_offered_rate_follows_a_burst_at_once_and_falls_back_after_it() -> None:
    # 10 rows/s for 2 s, then 20 rows within 20 ms (1000 rows/s): an average
    # over 250 ms alone reads ~90 rows/s at the burst's end.
    rate = BurstRate()
    t = time.monotonic()
    for _ in range(20):
        t += 0.1
        rate.add(1, t)
    for _ in range(10):
        t += 0.002
        rate.add(2, t)
    assert rate.slow.rate(t) < 100
    assert rate.rate(t) > 300
    # 300 ms later the fast average has decayed: the slow one speaks again.
    assert rate.rate(t + 0.3) == pytest.approx(rate.slow.rate(t + 0.3))


async def test_batches_are_sized_for_offered_demand_including_refused_requests() -> None:
    """Sizing batches for the admitted rate alone fed back under load:
    refusals made batches smaller, which cut throughput and refused more."""
    engine = GatedEngine()
    sched = scheduler(engine, max_queue=1)
    first = await hold_first_batch(sched, engine)
    queued = asyncio.create_task(sched.submit(request(1.0)))
    await asyncio.sleep(0)
    refused = 0
    for i in range(30):
        try:
            await sched.submit(request(2.0 + i))
        except Unavailable:
            refused += 1
    assert refused == 30
    # 32 rows offered within milliseconds: a rate far above what was admitted (2 rows).
    offered = sched.admission.offered
    assert offered.rate(time.monotonic()) > 30 / offered.SLOW_TAU * 0.9
    engine.gate.set()
    await asyncio.gather(first, queued)
    await sched.close()


def test_adaptive_plan_dispatches_a_cut_batch_at_once_even_when_load_says_wait() -> None:
    # A heavy arrival rate alone would hold for a fuller batch; the cut is
    # there to save the head, so it goes now.
    plan = plan_queue([(1, 0.010)] + [(1, 0.100)] * 19, arrival_rate=1e6)
    assert 1 <= plan.take <= 9 and plan.reason == "deadline"


async def test_a_freed_slot_is_refilled_without_waiting_for_the_dispatcher_task() -> None:
    # Under load the dispatcher task gets its turn on the event loop behind the
    # answers being sent; the engine sat idle meanwhile. The callback that
    # frees the slot dispatches the queued work itself.
    engine = GatedEngine()
    sched = scheduler(engine)
    first, queued = await queue_behind_first_batch(sched, engine, 2.0)
    assert sched.dispatcher is not None
    sched.dispatcher.cancel()  # no dispatcher task from here on
    with contextlib.suppress(asyncio.CancelledError):
        await sched.dispatcher
    engine.gate.set()
    out = await asyncio.wait_for(queued, 5)
    await first
    assert out["y"][0, 0] == 4.0 and engine.batches == [[-1.0], [2.0]]
    await sched.close()


async def test_a_dispatched_batch_reaches_the_engine_thread_within_the_same_loop_turn() -> None:
    # Handing the batch over from a task of its own waited for one more turn
    # of a busy event loop before the engine thread could start.
    engine = GatedEngine()
    engine.gate.clear()  # the call, once started, waits: the request stays pending
    sched = scheduler(engine)
    task = asyncio.create_task(sched.submit(request(3.0)))
    for _ in range(1000):
        if sched.pending and sched.queued == 0:  # admitted, then taken from the queue
            break
        await asyncio.sleep(0)
    # Block the event loop: only a batch already handed over can start now.
    assert engine.started.wait(2)
    engine.gate.set()
    out = await task
    assert out["y"][0, 0] == 6.0
    await sched.close()


async def test_the_dispatcher_task_takes_over_when_the_direct_refill_fails() -> None:
    engine = GatedEngine()
    sched = scheduler(engine)
    first, queued = await queue_behind_first_batch(sched, engine, 2.0)
    await asyncio.sleep(0.01)  # the dispatcher task has seen it (no slot free)
    pump = sched.pump
    failures: list[int] = []

    def failing_once() -> None:
        if not failures:
            failures.append(1)
            raise RuntimeError("refill failed")
        pump()

    sched.pump = failing_once  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, _context: None)  # the failure is expected
    try:
        engine.gate.set()
        out = await asyncio.wait_for(queued, 5)
    finally:
        loop.set_exception_handler(None)
    await first
    assert failures == [1] and out["y"][0, 0] == 4.0
    await sched.close()
