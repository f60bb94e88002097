"""Admission through the scheduler: refusals at arrival, padding, the
batch-deadline rule, the load signal and the offered rate."""

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

from inferd.server.errors import DeadlineExceeded, Unavailable
from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.rates import BurstRate


def under_load(sched: BatchingScheduler, load: float = 0.95) -> None:
    """Pin the offered load at ``load`` of the budget capacity: above the
    margin's ramp start, where admission pads its predictions."""
    sched.admission.offered_load = lambda now, seconds_left=math.inf: load  # type: ignore[method-assign]


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
    latency = affine_latency(0.1, 0.1, range(1, 9))  # 100 ms + 100 ms per row
    sched = scheduler(engine, latency)
    expect_no_more_arrivals(sched)
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    # Alone behind the running batch: <= 200 + 200 ms + reserve, within 450 ms.
    tight = asyncio.create_task(sched.submit(request(1.0, deadline=now + 0.45)))
    await asyncio.sleep(0)
    assert sched.queued == 1
    # In tight's batch it would end ~500 ms in (its own 550 ms allow it, tight's
    # 450 do not), and in a batch of its own after tight's at ~600 ms, too late.
    with pytest.raises(DeadlineExceeded, match="batch it would join must finish within"):
        await sched.submit(request(2.0, deadline=now + 0.55))
    # Due in 10 s, it can run in the batch after tight's: the planner cuts
    # tight's batch short rather than make it late, so nobody needs refusing.
    patient = asyncio.create_task(sched.submit(request(5.0, deadline=now + 10)))
    # Eight rows cannot share tight's batch, so they do not threaten it.
    own_batch = asyncio.create_task(sched.submit(request(3.0, rows=8, deadline=now + 10)))
    await asyncio.sleep(0)
    assert sched.queued == 3
    engine.gate.set()
    await asyncio.gather(first, tight, patient, own_batch)
    assert engine.batches[1][0] == 1.0 and engine.batches[-1] == [3.0] * 8
    # Counted apart from refusals for the request's own deadline: operators
    # see which rule refuses.
    assert sched.counters.refused == {"batch_deadline": 1}
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
    expect_no_more_arrivals(sched)
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
    under_load(sched)
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
    expect_no_more_arrivals(sched)
    margin = sched.admission.margin_for(0.14)  # these requests' deadline class
    margin.b = 0.2  # 20 % of a ~100 ms prediction: 20 ms
    first = await hold_first_batch(sched, engine)
    under_load(sched)
    # Nothing ahead: <= 100 ms predicted + the 20 ms margin fits 130 ms.
    head = asyncio.create_task(sched.submit(request(0.5, deadline=time.monotonic() + 0.13)))
    await asyncio.sleep(0)
    # Behind it: <= 100 ms + 30 ms (the larger) fits 140 ms; + 50 ms (both) would not.
    admitted = asyncio.create_task(sched.submit(request(1.0, deadline=time.monotonic() + 0.14)))
    await asyncio.sleep(0)
    assert sched.queued == 2 and not admitted.done()
    margin.b = 0.5  # 50 ms: now the margin is the larger, and too large
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
    now = time.monotonic()
    budgeted.admission.offered.add(500, now)
    load = budgeted.admission.offered_load(now)
    offered = budgeted.admission.offered.slow.rate(now)  # sustained, not the burst
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


async def test_a_loose_requests_margin_does_not_pad_a_tight_request() -> None:
    # Loose requests wait behind tight ones that overtake them (EDF): their
    # errors are large and say nothing of a tight request's prediction.
    engine = GatedEngine()
    sched = scheduler(engine, affine_latency(0.01, 0.0, range(1, 9)))
    expect_no_more_arrivals(sched)
    loose = sched.admission.margin_for(0.1)
    for i in range(64):
        loose.add(0.2, now=time.monotonic(), predicted=0.01 + i * 1e-4)
    assert loose.seconds(0.02) >= 0.1
    assert sched.admission.margin_for(0.03).seconds(0.02) == 0.0
    first = await hold_first_batch(sched, engine)
    under_load(sched)
    # ~20 ms predicted behind the running batch: fits 30 ms unless padded 100 ms.
    tight = asyncio.create_task(sched.submit(request(1.0, deadline=time.monotonic() + 0.03)))
    await asyncio.sleep(0)
    assert sched.queued == 1 and not sched.counters.refused
    with pytest.raises(DeadlineExceeded, match="cannot finish"):
        await sched.submit(request(2.0, deadline=time.monotonic() + 0.1))
    engine.gate.set()
    await asyncio.gather(first, tight)
    await sched.close()


async def test_the_prediction_counts_rows_arriving_before_the_last_batch_starts() -> None:
    # Behind a running batch, the batch a newcomer starts takes in what
    # arrives until it starts: at 2,000 rows/s and ~100 ms to wait, it is full.
    engine = GatedEngine()
    sched = scheduler(engine, affine_latency(0.1, 0.01, range(1, 9)))
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    sched.admission.offered.rate = lambda _: 2000.0  # type: ignore[method-assign]
    busy = sched.admission.backlog_seconds(now, 1)
    sched.admission.offered.rate = lambda _: 0.0  # type: ignore[method-assign]
    quiet = sched.admission.backlog_seconds(now, 1)
    assert busy - quiet == pytest.approx(0.07, abs=0.002)  # 8 rows, not 1: 7 x 10 ms
    engine.gate.set()
    await first
    await sched.close()


def ten_ms_engine(margin_tail: float) -> tuple[GatedEngine, BatchingScheduler]:
    """A 10 ms-per-batch engine (any size, up to 16 rows, 100 ms budget) whose
    60 ms-class margin learnt errors of 1 ms with a tail of ``margin_tail`` s
    in one of eight requests."""
    engine = GatedEngine()
    latency = affine_latency(0.01, 0.0, range(1, 17))
    sched = scheduler(engine, latency, max_batch_size=16, budget_s=0.1)
    margin = sched.admission.margin_for(0.06)  # the class of 60 ms requests
    start = time.monotonic()
    for i in range(64):
        margin.add(margin_tail if i % 8 == 0 else 0.001, start, 0.02)
    return engine, sched


async def test_a_starved_engine_admits_on_the_error_bias_not_its_tail() -> None:
    # A host whose engine times swing by multiples: the overload margin (the
    # p99 of the errors) is longer than the budget. Refusing on it left the
    # engine running one request per batch at a tenth of its capacity.
    engine, sched = ten_ms_engine(margin_tail=0.06)
    admission = sched.admission
    first = await hold_first_batch(sched, engine)
    for starving in (False, True):
        now = time.monotonic()
        admission.offered.add(2000, now)  # ~8,000 rows/s offered: overload
        admission.admitted_rows = BurstRate().slow
        admission.admitted_rows.add(0 if starving else 800, now)
        admission._capacity_at = -math.inf  # re-read the load at the next arrival
        # <= 10 ms for the running batch + 10 ms: fits 60 ms, unless padded by 60.
        task = asyncio.create_task(sched.submit(request(1.0, deadline=now + 0.06)))
        await asyncio.sleep(0)
        if starving:
            assert admission.starving(time.monotonic())
            assert not task.done() and sched.queued == 1
        else:
            assert not admission.starving(time.monotonic())
            with pytest.raises(DeadlineExceeded, match="cannot finish within the deadline"):
                await task
    engine.gate.set()
    await asyncio.gather(first, task)
    await sched.close()


async def test_below_the_ramp_admission_refuses_only_what_typical_times_make_late() -> None:
    # At light load a refusal is a certain miss and admitting costs nobody
    # else engine time: the margin and the reserve pad nothing there.
    engine = GatedEngine()
    latency = affine_latency(0.01, 0.0, range(1, 17))  # 10 ms per batch, any size
    sched = scheduler(engine, latency, max_batch_size=16, budget_s=0.1)
    admission = sched.admission
    margin = admission.margin_for(0.025)  # the class of the requests below
    start = time.monotonic()
    for _ in range(64):  # every prediction 20 ms short: a 20 ms margin at any quantile
        margin.add(0.02, start, 0.02)
    first = await hold_first_batch(sched, engine)
    tasks = []
    for load, admitted in ((0.2, True), (1.0, False)):
        now = time.monotonic()
        admission.offered = BurstRate()
        admission.admitted_rows = BurstRate().slow
        capacity = admission.budget_capacity()
        admission.offered.slow.add(round(load * capacity * BurstRate.SLOW_TAU), now)
        admission.admitted_rows.add(round(load * capacity * BurstRate.SLOW_TAU), now)
        admission._capacity_at = -math.inf  # re-read the load at the next arrival
        # <= 10 ms for the running batch + 10 ms: fits 25 ms, not with 20 ms more.
        task = asyncio.create_task(sched.submit(request(1.0, deadline=now + 0.025)))
        await asyncio.sleep(0)
        if admitted:
            assert not task.done() and sched.queued == 1
            tasks.append(task)
        else:
            with pytest.raises(DeadlineExceeded, match="cannot finish within the deadline"):
                await task
    engine.gate.set()
    await asyncio.gather(first, *tasks)
    await sched.close()


def test_a_requests_load_is_read_within_its_own_time() -> None:
    # Under a 100 ms budget a 21 ms batch of 16 rows fits twice; a request
    # due in 20 ms leaves room for 3-row batches only, so the same rows are
    # a heavier load for it.
    latency = affine_latency(0.005, 0.001, range(1, 17))  # 5 ms + 1 ms per row
    sched = scheduler(GatedEngine(), latency, max_batch_size=16, budget_s=0.1)
    admission = sched.admission
    admission.planner.reserve = 0.003
    assert admission.budget_capacity() == pytest.approx(16 / 0.021)
    now = time.monotonic()
    admission.offered.slow.add(round(0.1 * 16 / 0.021 * BurstRate.SLOW_TAU), now)
    loose = admission.offered_load(now)
    assert loose == pytest.approx(0.1, rel=0.05)
    # (20 ms - 3 ms reserve) / 2 = 8.5 ms: 3 rows in 8 ms.
    tight = admission.offered_load(now, 0.02 - admission.options.reply_allowance_s)
    assert tight == pytest.approx(loose * (16 / 0.021) / (3 / 0.008))
    assert admission.offered_load(now, 0.05) == loose  # time for two full batches


async def test_light_load_still_pads_a_request_that_cannot_wait_out_a_batch() -> None:
    # Light for requests that can wait out a full batch, not for one due in
    # 18 ms: within its time only one 10 ms batch fits, and the planner cuts
    # the queue's batches short for it.
    engine = GatedEngine()
    latency = affine_latency(0.01, 0.0, range(1, 17))  # 10 ms per batch, any size
    sched = scheduler(engine, latency, max_batch_size=16, budget_s=0.1)
    admission = sched.admission
    margin = admission.margin_for(0.018)
    start = time.monotonic()
    for _ in range(64):  # a 20 ms margin at any quantile
        margin.add(0.02, start, 0.02)
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    rows = round(0.1 * admission.budget_capacity() * BurstRate.SLOW_TAU)  # 0.1x
    admission.offered.slow.add(rows, now)
    admission.admitted_rows.add(rows, now)  # not starving
    admission._capacity_at = -math.inf
    assert admission.is_light(admission.offered_load(now))
    assert not admission.is_light(admission.offered_load(now, 0.018))
    await asyncio.sleep(0.006)  # the running batch has <= 4 ms left
    # Typical: <= 4 + 10 ms, fits 18 ms; padded by 20 ms it does not.
    with pytest.raises(DeadlineExceeded, match="cannot finish within the deadline"):
        await sched.submit(request(1.0, deadline=time.monotonic() + 0.018))
    engine.gate.set()
    await first
    await sched.close()


async def test_a_tight_request_that_would_make_queued_ones_late_is_refused() -> None:
    # Earliest deadline first lets a tight request go ahead of a loose one;
    # where the loose one has no slack to give, that trades one on-time
    # answer for another.
    engine = GatedEngine()
    latency = affine_latency(0.1, 0.0, range(1, 9))  # 100 ms per batch, any size
    sched = scheduler(engine, latency)
    expect_no_more_arrivals(sched)
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    # Eight rows fill a batch: behind the running one it ends ~200 ms in.
    loose = asyncio.create_task(sched.submit(request(1.0, rows=8, deadline=now + 0.26)))
    roomy = asyncio.create_task(sched.submit(request(2.0, rows=8, deadline=now + 0.6)))
    await asyncio.sleep(0)
    assert sched.queued == 2
    # Due in 240 ms it would finish ~200 ms in, itself on time, and push the
    # loose batch to ~300 ms, past its 260.
    with pytest.raises(DeadlineExceeded, match="would make one of them late"):
        await sched.submit(request(3.0, deadline=now + 0.24))
    assert sched.counters.refused == {"overtakes": 1}
    # Due in 500 ms it goes ahead of the roomy batch only (ends ~400 ms
    # instead of ~300, within 600): admitted, and run before it.
    tight = asyncio.create_task(sched.submit(request(4.0, deadline=now + 0.5)))
    await asyncio.sleep(0)
    assert sched.queued == 3 and sched.counters.refused == {"overtakes": 1}
    engine.gate.set()
    await asyncio.gather(first, loose, tight, roomy)
    assert [b[0] for b in engine.batches[1:]] == [1.0, 4.0, 2.0]
    await sched.close()


async def test_a_burst_the_queue_absorbs_does_not_raise_the_margin() -> None:
    # The margin follows the sustained load: a burst's fast rate is what the
    # planner sizes batches for, not an overload to refuse for.
    engine, sched = ten_ms_engine(margin_tail=0.06)
    admission = sched.admission
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    capacity = admission.budget_capacity()
    admission.offered.slow.add(0.6 * capacity * admission.offered.SLOW_TAU, now)
    admission.offered.fast.add(5 * capacity * admission.offered.FAST_TAU, now)  # a burst
    admission.admitted_rows.add(capacity, now)  # not starving
    admission._capacity_at = -math.inf
    # <= 10 ms for the running batch + 10 ms + the median 1 ms: fits 60 ms;
    # with the p99 (60 ms) it would not.
    task = asyncio.create_task(sched.submit(request(1.0, deadline=now + 0.06)))
    await asyncio.sleep(0)
    assert not task.done() and sched.queued == 1
    engine.gate.set()
    await asyncio.gather(first, task)
    await sched.close()
