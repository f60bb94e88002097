"""The planners' decisions, deterministic: the adaptive plan (dispatch,
wait, cut, pad, reserve) and the static (Triton) plan."""

from __future__ import annotations

import dataclasses
import math

import pytest
from scheduler_doubles import affine_latency, plan_queue

from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.planners import (
    FULLER_MIN_GAIN,
    FULLER_PROBE_S,
    LOOP_BOUND_WAIT_S,
    LOOP_BUSY_FROM,
    LOOP_BUSY_FULL,
    AdaptivePlanner,
    FullerHolds,
    Plan,
    QueueState,
    StaticPlanner,
    make_planner,
)


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


def test_adaptive_plan_cuts_only_for_a_head_due_well_before_the_rest() -> None:
    # Twelve rows take 13 ms; the head is due at 10 ms. Cut to one row, it
    # makes it and the other eleven, due at 20 ms, still finish at 14 ms in
    # the next batch: by these two batches a cut wins. But they are due
    # within two batch times (26 ms) of the head: under load such a queue is
    # the common case, and cutting for each late head halves the batches the
    # load needs. The batch stays whole.
    assert plan_queue([(1, 0.010)] + [(1, 0.020)] * 11).take == 12
    # Due 30 ms after the head (more than two batch times): cut for it.
    assert plan_queue([(1, 0.010)] + [(1, 0.040)] * 11).take < 12


def test_adaptive_plan_counts_a_cut_by_engine_times_without_the_reserve() -> None:
    # 1 ms + 1 ms/row, a 1 ms reserve. The head is due at 4.5 ms, two more at
    # 14.5 ms, nine at 100 ms. Cut to the first three rows, all three finish
    # at 4 ms and the nine at 14 ms in the next batch: everyone on time.
    # Counting the reserve, the head looked lost in that cut (4 + 1 > 4.5),
    # the cut tied with the whole batch, and the whole batch (13 ms) made the
    # head late for certain.
    planner = AdaptivePlanner(
        BatchingOptions(max_batch_size=32), affine_latency(0.001, 0.001, range(1, 33))
    )
    planner.reserve = 0.001
    queue = [(1, 0.0045)] + [(1, 0.0145)] * 2 + [(1, 0.100)] * 9
    state = QueueState(12, queue[0][1], 0.0, 0.0, queue=lambda: queue)
    assert planner.plan(0.0, state).take == 3


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


def test_adaptive_plan_dispatches_a_cut_batch_at_once_even_when_load_says_wait() -> None:
    # A heavy arrival rate alone would hold for a fuller batch; the cut is
    # there to save the head, so it goes now.
    plan = plan_queue([(1, 0.010)] + [(1, 0.100)] * 19, arrival_rate=1e6)
    assert 1 <= plan.take <= 9 and plan.reason == "deadline"


# -- what differs between policies, behind the Planner interface -----------------------------


def test_make_planner_picks_the_policys_planner() -> None:
    latency = LatencyModel()
    static = make_planner(BatchingOptions(policy="static", max_batch_size=8), latency)
    adaptive = make_planner(BatchingOptions(policy="adaptive", max_batch_size=8), latency)
    alone = make_planner(BatchingOptions(policy="none", max_batch_size=8), latency)
    assert type(static) is StaticPlanner
    assert type(adaptive) is AdaptivePlanner and type(alone) is AdaptivePlanner
    assert adaptive.by_deadline and adaptive.predicts_finish
    assert not static.by_deadline and not static.predicts_finish


def test_adaptive_deadline_is_the_earlier_of_callers_and_budget_less_the_reply_allowance() -> None:
    opts = BatchingOptions(max_batch_size=8, budget_s=0.025, reply_allowance_s=0.001)
    planner = AdaptivePlanner(opts, LatencyModel())
    assert planner.deadline(None, 10.0) == pytest.approx(10.024)
    assert planner.deadline(10.010, 10.0) == pytest.approx(10.009)
    assert planner.deadline(10.100, 10.0) == pytest.approx(10.024)
    unbounded = AdaptivePlanner(BatchingOptions(max_batch_size=8), LatencyModel())
    assert unbounded.deadline(None, 10.0) == math.inf


def test_static_deadline_is_tritons_queue_timeout_without_allowance() -> None:
    opts = BatchingOptions(policy="static", max_batch_size=8, budget_s=0.025, queue_timeout_s=0.5)
    planner = StaticPlanner(opts, LatencyModel())
    assert planner.deadline(None, 10.0) == pytest.approx(10.5)  # not the budget
    assert planner.deadline(10.010, 10.0) == 10.010  # no reply allowance
    no_timeout = StaticPlanner(BatchingOptions(policy="static", budget_s=0.025), LatencyModel())
    assert no_timeout.deadline(None, 10.0) == math.inf


def test_adaptive_calls_work_hopeless_that_cannot_finish_alone_only_while_busy() -> None:
    planner = AdaptivePlanner(
        BatchingOptions(max_batch_size=8), affine_latency(0.010, 0.0, range(1, 9))
    )
    assert planner.hopeless(1.0, 1, 1.0, busy=False)  # late already
    assert planner.hopeless(1.005, 1, 1.0, busy=True)  # 10 ms of work, 5 ms left
    assert not planner.hopeless(1.005, 1, 1.0, busy=False)  # idle: run it anyway
    assert not planner.hopeless(1.02, 1, 1.0, busy=True)


def test_static_drops_only_what_timed_out() -> None:
    planner = StaticPlanner(
        BatchingOptions(policy="static", max_batch_size=8),
        affine_latency(0.010, 0.0, range(1, 9)),
    )
    assert planner.hopeless(1.0, 1, 1.0, busy=True)
    assert not planner.hopeless(1.005, 1, 1.0, busy=True)


def test_batch_size_pads_to_an_engine_size_only_when_batching() -> None:
    latency = LatencyModel()
    padded = AdaptivePlanner(BatchingOptions(max_batch_size=16, engine_sizes=(1, 4, 16)), latency)
    assert [padded.batch_size(r) for r in (1, 3, 4, 5, 16)] == [1, 4, 4, 16, 16]
    assert padded.fit(5) == 4 and padded.fit(0) == 1
    alone = AdaptivePlanner(
        BatchingOptions(policy="none", max_batch_size=16, engine_sizes=(1, 4, 16)), latency
    )
    assert alone.batch_size(3) == 3


def test_adaptive_plan_waits_no_longer_than_tritons_queue_delay() -> None:
    # 2,000 rows/s would have it wait for a fuller batch up to 2.5 ms (a tenth
    # of the budget); a 1 ms max_queue_delay bounds that wait.
    latency = affine_latency(0.002, 0.0001, range(1, 33))
    own = AdaptivePlanner(BatchingOptions(max_batch_size=32), latency)
    bounded = AdaptivePlanner(BatchingOptions(max_batch_size=32, max_queue_delay_s=0.001), latency)
    state = QueueState(rows=1, head_deadline=0.025, head_arrival=0.0, arrival_rate=2000)
    unbounded_wait = own.plan(0.0, state)
    assert unbounded_wait.take == 0 and unbounded_wait.wake_at is not None
    assert unbounded_wait.wake_at > 0.001
    wait = bounded.plan(0.0, state)
    assert wait.take == 0 and wait.wake_at is not None and wait.wake_at <= 0.001
    due = bounded.plan(0.001, state)
    assert due.take == 1 and due.reason == "waited"
    assert own.plan(0.001, state).take == 0  # its own rule would still wait


def test_adaptive_reserve_follows_the_measured_time_outside_the_engine() -> None:
    from inferd.server.scheduler.planners import MIN_RESERVE_S, RESERVE_FLOOR_S

    latency = affine_latency(0.002, 0.0001, range(1, 9))
    planner = AdaptivePlanner(BatchingOptions(max_batch_size=8), latency)
    assert planner.reserve == MIN_RESERVE_S  # nothing measured yet: the most
    for _ in range(16):
        latency.observe_outside(0.0004)
    assert planner.reserve == pytest.approx(0.0004 + RESERVE_FLOOR_S)
    for _ in range(64):
        latency.observe_outside(0.02)  # a host far busier: capped
    assert planner.reserve == MIN_RESERVE_S
    planner.reserve = 0.0  # set: a fixed figure
    assert planner.reserve == 0.0


async def test_batches_report_their_time_outside_the_engine() -> None:
    import asyncio
    import time

    from scheduler_doubles import GatedEngine, request, scheduler

    sched = scheduler(GatedEngine(), affine_latency(0.001, 0.0, range(1, 9)))
    assert sched.latency.outside() is None
    for i in range(16):
        await sched.submit(request(float(i), deadline=time.monotonic() + 5))
    outside = sched.latency.outside()
    assert outside is not None and 0 <= outside < 5
    await asyncio.sleep(0)
    await sched.close()


def test_adaptive_plan_never_waits_until_now() -> None:
    # Slack left below the clock's resolution: now + slack == now. Waiting
    # "until now" re-planned at once, forever on a simulated clock and in a
    # busy loop on a real one.
    now, rate = 1000.0, 4000.0  # rows/s: a bigger batch is worth waiting for
    for j in range(64):  # engine times that fall between the clock's representable times
        latency = affine_latency(0.002 + j * 1.3e-7, 0.0005, range(1, 17))
        planner = AdaptivePlanner(BatchingOptions(max_batch_size=16), latency)
        planner.reserve = 0.0
        target = planner.keep_up_size(rate)
        assert target > 1
        deadline = math.nextafter(now + latency.high(planner.cover(target)), -math.inf)
        for _ in range(3):
            state = QueueState(rows=1, head_deadline=deadline, head_arrival=now - 0.0005,
                               arrival_rate=rate)  # fmt: skip
            plan = planner.plan(now, state)
            assert plan.take > 0 or (plan.wake_at is not None and plan.wake_at > now), plan
            deadline = math.nextafter(deadline, math.inf)


def _loop_bound_plan(busy: float, now: float = 0.0, **options: float) -> Plan:
    # 50 us + 1 us/row: one row keeps up with 2,000 rows/s many times over.
    latency = affine_latency(0.00005, 0.000001, range(1, 33))
    planner = AdaptivePlanner(BatchingOptions(max_batch_size=32, **options), latency)
    planner.reserve = 0.001
    state = QueueState(
        rows=3, head_deadline=0.050, head_arrival=0.0, arrival_rate=2000, loop_busy=busy
    )
    return planner.plan(now, state)


def test_adaptive_plan_waits_for_fuller_batches_only_while_the_event_loop_is_busy() -> None:
    # The engine keeps up with one-row batches: with the loop idle or half busy
    # the batch goes now, as before.
    for busy in (0.0, LOOP_BUSY_FROM):
        plan = _loop_bound_plan(busy)
        assert (plan.take, plan.reason) == (3, "ready")
    # At LOOP_BUSY_FULL and above it waits up to LOOP_BOUND_WAIT_S from the
    # head's arrival; halfway, half of that.
    for busy, wait in ((LOOP_BUSY_FULL, LOOP_BOUND_WAIT_S), (1.0, LOOP_BOUND_WAIT_S)):
        plan = _loop_bound_plan(busy)
        assert plan.take == 0 and plan.wake_at == pytest.approx(wait)
    halfway = (LOOP_BUSY_FROM + LOOP_BUSY_FULL) / 2
    assert _loop_bound_plan(halfway).wake_at == pytest.approx(LOOP_BOUND_WAIT_S / 2)
    # Once the wait is over it dispatches what it has.
    plan = _loop_bound_plan(1.0, now=LOOP_BOUND_WAIT_S)
    assert (plan.take, plan.reason) == (3, "ready")


def test_a_loop_bound_wait_keeps_the_configs_window_and_the_heads_deadline() -> None:
    # Triton's max_queue_delay is the longest any request waits.
    plan = _loop_bound_plan(1.0, max_queue_delay_s=0.0005)
    assert plan.take == 0 and plan.wake_at == pytest.approx(0.0005)
    # A full batch must still finish, reserve kept, before the head's deadline:
    # 1.5 ms a row, a head due at 50 ms (1 ms reserve) waits 0.95 ms, not 2 ms.
    latency = affine_latency(0.00005, 0.0015, range(1, 33))
    planner = AdaptivePlanner(BatchingOptions(max_batch_size=32), latency)
    planner.reserve = 0.001
    state = QueueState(
        rows=3, head_deadline=0.050, head_arrival=0.0, arrival_rate=10, loop_busy=1.0
    )
    wake = planner.plan(0.0, state).wake_at
    assert wake is not None and wake == pytest.approx(0.050 - 0.001 - latency.high(32))
    assert wake < LOOP_BOUND_WAIT_S
    # A full batch goes at once, busy loop or not.
    full = planner.plan(0.0, dataclasses.replace(state, rows=32, head_deadline=math.inf))
    assert (full.take, full.reason) == (32, "full")
    # A tenth of the head's budget bounds it too: due at 5 ms, it waits 0.4 ms.
    short = _loop_bound_plan(1.0)
    assert short.wake_at == pytest.approx(LOOP_BOUND_WAIT_S)  # 50 ms: the 2 ms bind
    fast = AdaptivePlanner(
        BatchingOptions(max_batch_size=32), affine_latency(0.00005, 0.000001, range(1, 33))
    )
    fast.reserve = 0.001
    tight = fast.plan(0.0, dataclasses.replace(state, head_deadline=0.005))
    assert tight.wake_at == pytest.approx(0.1 * (0.005 - 0.001))


def test_holds_for_fuller_batches_go_on_while_they_gather_rows() -> None:
    holds = FullerHolds()
    assert holds.worth(0.0)  # untried
    for _ in range(2):
        holds.gathered(0)
    assert holds.gain < FULLER_MIN_GAIN
    assert holds.worth(10.0)  # a probe...
    assert not holds.worth(10.0 + FULLER_PROBE_S / 2)  # ...then none until the next is due
    assert holds.worth(10.0 + FULLER_PROBE_S)
    holds.gathered(3)  # a probe that gathered rows: holding pays again
    assert holds.gain >= FULLER_MIN_GAIN and holds.worth(10.1 + FULLER_PROBE_S)
    holds.gathered(-2)  # rows withdrawn meanwhile count as none gathered
    assert holds.gain >= 0


def test_the_planner_holds_only_while_holding_pays() -> None:
    latency = affine_latency(0.00005, 0.000001, range(1, 33))
    planner = AdaptivePlanner(BatchingOptions(max_batch_size=32), latency)
    planner.reserve = 0.001
    state = QueueState(
        rows=3, head_deadline=0.050, head_arrival=0.0, arrival_rate=2000, loop_busy=1.0
    )
    assert planner.plan(0.0, state).reason == "fuller"
    for _ in range(3):
        planner.held_for_fuller(0)
    probe = planner.plan(0.0, state)
    assert (probe.take, probe.reason) == (0, "fuller")
    assert planner.plan(0.001, state).reason == "ready"  # no hold until the next probe


def test_a_batch_capped_short_is_not_held_for_rows_it_would_not_take() -> None:
    # Twenty loose rows queued; batches capped at 7 rows for a caller due in
    # 10 ms who may come (1 ms + 1 ms a row): waiting cannot grow this batch.
    planner = AdaptivePlanner(
        BatchingOptions(max_batch_size=32), affine_latency(0.001, 0.001, range(1, 33))
    )
    planner.reserve = 0.0
    queue = [(1, 0.100)] * 20
    state = QueueState(
        20, 0.100, 0.0, 0.0, queue=lambda: queue, tight_s=0.010, tight_rows=1, loop_busy=1.0
    )
    plan = planner.plan(0.0, state)
    assert (plan.take, plan.reason) == (7, "ready")
    # Uncapped, the same queue is held for more rows.
    uncapped = dataclasses.replace(state, tight_s=math.inf)
    assert planner.plan(0.0, uncapped).reason == "fuller"
