"""Overload, short version of ``python -m benchmarks.overload`` (5 s instead of
30 s): twice the measured capacity against a 25 ms latency budget. The server
must shed what it cannot serve in time at arrival (refused fast, nothing else
failing) and keep its memory bounded. The test shares a small machine with
whatever else runs, so it bounds what the server decides; how late admitted
requests run on a host whose CPU is taken by others is the benchmark's
verdict."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine_doubles import DoublingEngine

from benchmarks import overload
from inferd.server.errors import DeadlineExceeded
from inferd.server.request import InferRequest
from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.margin import Margin
from inferd.server.scheduler.options import ADMISSION_MODES, BatchingOptions
from inferd.server.stats import ModelStats

#: Where balanced admission's margin reaches the median and starts to ramp.
RAMP_START = ADMISSION_MODES["balanced"].ramp[0]

#: Most of the admitted requests a run may answer late or expire: a server that
#: admits everything at twice capacity answers most of them late.
LATE_BOUND = 0.4


def _late_share(report: overload.Report) -> float:
    admitted = report.server.answered + report.server.expired
    return (report.server.late + report.server.expired) / max(1, admitted)


@pytest.mark.slow
def test_twice_capacity_is_shed_fast_with_flat_memory(demo_repository: Path) -> None:
    report = overload.run(seconds=5, capacity_seconds=3, source=demo_repository, log=False)
    if _late_share(report) > LATE_BOUND:
        # Once more: on a slow 2-core host a stall of the whole server (the
        # client and the engine thread taking both cores) decided a third of
        # a 5 s run at times (answers' p99 160 ms); a server that admits
        # everything is late in both runs.
        report = overload.run(seconds=5, capacity_seconds=3, source=demo_repository, log=False)
    info = json.dumps(asdict(report))
    assert report.verdict["overloaded"], info  # the load really was too much
    assert report.verdict["no_other_errors"], info
    # Memory bounded: calls that gRPC queues while the host stalls add some;
    # the benchmark's verdict holds it to 16 MiB on a quiet machine.
    assert report.rss_growth_mib < 64, info
    # Shedding is the server's decision at arrival: at twice capacity a good
    # part of the offered load is refused there, before it queues. Requests
    # that expire in the queue instead do not count: that is what broken
    # shedding looks like. A busy host only makes the server refuse more.
    at_arrival = sum(
        n for kind, n in report.refused.items() if kind.endswith((":predicted-late", ":queue-full"))
    )
    offered = report.ok + sum(report.refused.values())
    assert at_arrival >= 0.2 * offered, info
    # Admitted requests are answered, most within the budget by the server's
    # clock. How many run late depends on the host as well (CPU taken by
    # others stalls work the server admitted in good faith), so the tight
    # figure (at most 1 %) is the benchmark's verdict (python -m
    # benchmarks.overload); here only a bound that a server admitting
    # everything (most answers late or expired) cannot meet.
    assert report.server.answered > 0, info
    assert _late_share(report) <= LATE_BOUND, info
    # How fast the client hears back is measured by a client sharing the
    # machine: the benchmark's verdict (refusals_fast), not this test's.


def test_margin_is_a_low_quantile_below_capacity_and_never_negative() -> None:
    margin = Margin(window=100, every=10, horizon_s=2.0)
    for i in range(100):
        margin.add(i / 1000, now=10.0, predicted=0.010)  # 0..99 ms late on 10 ms
    margin.set_load(RAMP_START)
    assert margin.seconds(0.010) == pytest.approx(0.050)  # bias: the median
    # Further below the ramp a refusal saves nobody engine time: from the p25
    # on an idle engine, rising with the load.
    margin.set_load(0.0)
    assert margin.seconds(0.010) == pytest.approx(0.025)
    margin.set_load(RAMP_START / 2)
    assert margin.seconds(0.010) == pytest.approx(0.037)
    for _ in range(100):
        # finishing early never makes the margin negative
        margin.add(-0.005, now=10.0, predicted=0.010)
    assert margin.seconds(0.010) == 0.0


def test_margin_is_a_line_over_the_prediction_that_keeps_its_fixed_part() -> None:
    # Every request is 2 ms late plus 20 % of its prediction: time outside the
    # engine, and a CPU that stretches the work ahead. A ratio of the
    # prediction would scale the 2 ms with it; one number of seconds would not
    # grow with the work.
    margin = Margin(window=100, every=10, horizon_s=2.0)
    for i in range(100):
        predicted = 0.005 + i * 0.0002  # 5..25 ms
        margin.add(0.002 + 0.2 * predicted, now=10.0, predicted=predicted)
    margin.set_load(RAMP_START)
    assert margin.b == pytest.approx(0.2)
    # The line goes through each half's median error.
    assert margin.seconds(0.0) == pytest.approx(0.002, abs=5e-5)
    assert margin.seconds(0.020) - margin.seconds(0.010) == pytest.approx(0.002)


def test_margin_slope_under_overload_is_not_set_by_a_few_outliers() -> None:
    # The same 2 ms + 20 %, and 3 long predictions 10 ms later still (a
    # stall). Between the halves' p99s the slope would be ~0.9: a request
    # predicted at twice the longest seen would get a 40 ms margin. The slope
    # comes from the bulk; the p99 sets the level.
    margin = Margin(window=100, every=10, horizon_s=2.0)
    for i in range(100):
        predicted = 0.005 + i * 0.0002
        stall = 0.010 if i in (90, 94, 98) else 0.0
        margin.add(0.002 + 0.2 * predicted + stall, now=10.0, predicted=predicted)
    margin.set_load(2.0)
    assert margin.b == pytest.approx(0.2)
    reserve = Margin.OVERLOAD_RESERVE
    assert margin.seconds(0.050) == pytest.approx(0.012 + 0.2 * 0.050 + reserve)


def test_margin_line_rises_gently_past_the_predictions_it_was_fitted_on() -> None:
    # Bursty load: predictions 8 ms and 10 ms, errors 1 and 4 ms. The line
    # through both halves rises 1.5 ms per ms; followed further, it gave an
    # arrival predicted 16 ms (an empty queue behind one batch) a 13 ms
    # margin: refused with 24 ms left. Past the longer half it rises at most
    # MAX_SLOPE under load, and not at all below the ramp, where admitting a
    # request that may be late costs nobody else engine time.
    margin = Margin(window=100, every=10, horizon_s=2.0)
    for i in range(100):
        long = i % 2 == 1
        margin.add(0.004 if long else 0.001, now=10.0, predicted=0.010 if long else 0.008)
    margin.set_load(0.3)
    assert margin.b == pytest.approx(1.5)
    assert margin.seconds(0.008) == pytest.approx(0.001)
    assert margin.seconds(0.010) == pytest.approx(0.004)  # within the data: the line
    assert margin.seconds(0.016) == pytest.approx(0.004)  # no longer data: level
    margin.set_load(1.0)  # on the ramp: the p50-p99 of each half is 1 and 4 ms too
    assert Margin.MAX_SLOPE == 0.5
    share = (1.0 - RAMP_START) / (1.2 - RAMP_START)
    assert margin.seconds(0.016) == pytest.approx(
        0.004 + 0.5 * 0.006 + share * Margin.OVERLOAD_RESERVE
    )


@pytest.mark.parametrize("levels_off", [False, True])
def test_below_the_ramp_the_line_goes_on_as_the_longest_predictions_show(
    levels_off: bool,
) -> None:
    # 2 ms plus 20% of predictions of 5..25 ms; with ``levels_off`` the error
    # stops growing at 15 ms, as on a real server whose longest predictions
    # (behind a running batch) erred no more than the rest: a line that rose
    # on past the data refused requests static batching answered in time.
    margin = Margin(window=100, every=10, horizon_s=2.0)
    for i in range(100):
        predicted = 0.005 + i * 0.0002
        grows = min(predicted, 0.015) if levels_off else predicted
        margin.add(0.002 + 0.2 * grows, now=10.0, predicted=predicted)
    margin.set_load(RAMP_START)
    at_reach = margin.seconds(0.025)
    past = margin.seconds(0.040) - at_reach
    if levels_off:
        assert past == pytest.approx(0.0)
        assert at_reach == pytest.approx(0.005)
    else:
        assert past == pytest.approx(0.2 * 0.015, rel=0.05)
    margin.set_load(1.0)  # on the ramp the line rises past the data as within it
    assert margin.seconds(0.040) - margin.seconds(0.025) == pytest.approx(
        min(margin.b, Margin.MAX_SLOPE) * 0.015
    )


def test_margin_slope_is_never_negative() -> None:
    margin = Margin(window=100, every=10, horizon_s=2.0)
    for i in range(100):
        predicted = 0.005 + i * 0.0002
        margin.add(0.010 - predicted / 4, now=10.0, predicted=predicted)  # shrinking error
    margin.set_load(0.5)
    assert margin.b == 0.0
    assert margin.seconds(0.050) == margin.seconds(0.005) > 0


def test_margin_covers_the_error_tail_as_the_offered_load_reaches_capacity() -> None:
    margin = Margin(window=100, every=10, horizon_s=2.0)
    for i in range(100):
        margin.add(i / 1000, now=10.0, predicted=0.010)
    values = []
    for load in (0.0, 0.9, 1.05, 1.2, 2.0):
        margin.set_load(load)
        values.append(margin.seconds(0.010))
    reserve = Margin.OVERLOAD_RESERVE
    assert values == sorted(values)
    assert values[0] == pytest.approx(0.025) and values[1] == pytest.approx(0.050)
    assert 0.050 < values[2] < 0.099 + reserve / 2
    # Overloaded: the p99, plus a fixed reserve for the error's drift.
    assert values[3] == pytest.approx(0.099 + reserve)
    assert values[4] == pytest.approx(0.099 + reserve)
    margin.set_load(RAMP_START)  # the load passed: back to the bias
    assert margin.seconds(0.010) == pytest.approx(0.050)


def test_strict_admission_covers_the_error_tail_from_a_lower_load() -> None:
    # Callers who would rather be refused than answered late: the median
    # however light the load, the p99 and the reserve already at 0.8 of the
    # budget capacity, where balanced admission is still below the median.
    reserve = Margin.OVERLOAD_RESERVE
    values = {}
    for strict in (False, True):
        mode = ADMISSION_MODES["strict" if strict else "balanced"]
        margin = Margin(
            window=100, every=10, horizon_s=2.0, ramp=mode.ramp, idle_quantile=mode.idle_quantile
        )
        for i in range(100):
            margin.add(i / 1000, now=10.0, predicted=0.010)
        values[strict] = []
        for load in (0.4, 0.65, 0.8):
            margin.set_load(load)
            values[strict].append(margin.seconds(0.010))
    # Balanced: from the p25 idle to the median at 0.9, i.e. p36, p43, p47.
    assert values[False] == pytest.approx([0.036, 0.043, 0.047])
    assert values[True][0] == pytest.approx(0.050)
    assert 0.050 < values[True][1] < 0.099 + reserve / 2
    assert values[True][2] == pytest.approx(0.099 + reserve)


async def test_admission_option_is_read_from_config_and_reaches_the_margin() -> None:
    from inferd.protos import model_config_pb2
    from inferd.server.scheduler.options import options_from_config

    config = model_config_pb2.ModelConfig(max_batch_size=8)
    config.dynamic_batching.SetInParent()
    assert options_from_config(config).admission == "balanced"
    config.parameters["admission"].string_value = "strict"
    options = options_from_config(config)
    assert options.admission == "strict"
    config.parameters["admission"].string_value = "lenient"
    with pytest.raises(Exception, match=r"'admission' must be one of \['balanced', 'strict'\]"):
        options_from_config(config)
    # The scheduler's margin follows the option: same errors, same load.
    margins = []
    for admission in ("balanced", "strict"):
        sched = BatchingScheduler(
            _SlowEngine(), ModelStats(), BatchingOptions(max_batch_size=8, admission=admission)
        )
        for i in range(160):  # a multiple of the margin's refresh interval
            sched.admission.margin.add((i % 80) / 1000, now=10.0, predicted=0.010)
        sched.admission.margin.set_load(0.8)
        margins.append(sched.admission.margin.seconds(0.010))
        await sched.close()
    # 160 errors, each of 0..79 ms twice: balanced's p47 below its ramp, strict's p99.
    assert margins == pytest.approx([0.037, 0.079 + Margin.OVERLOAD_RESERVE])


def test_margin_forgets_a_stall() -> None:
    margin = Margin(window=256, every=4, horizon_s=2.0)
    for _ in range(64):
        margin.add(2.0, now=10.0, predicted=0.010)  # a two-second stall
    assert margin.seconds(0.010) == pytest.approx(2.0)
    # A few requests after the stall, once its errors are past the horizon.
    for _ in range(4):
        margin.add(0.001, now=12.5, predicted=0.010)
    assert margin.seconds(0.010) == pytest.approx(0.001)


class _SlowEngine(DoublingEngine):
    """15 ms per call, whatever the latency model believes."""

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        time.sleep(0.015)
        return {"y": inputs["x"] * 2}


class _Optimist(LatencyModel):
    """A latency model stuck at 1 ms: the situation on a host whose CPU is
    taken by others, where requests wait on more than the engine."""

    def observe(self, size: int, seconds: float) -> None:
        pass

    def mean(self, size: int) -> float:
        return 0.001

    def high(self, size: int) -> float:
        return 0.001


async def test_admission_learns_a_margin_instead_of_answering_late() -> None:
    sched = BatchingScheduler(
        _SlowEngine(), ModelStats(), BatchingOptions(max_batch_size=1), _Optimist()
    )

    def request() -> InferRequest:
        x = np.ones((1, 2), np.float32)
        return InferRequest({"x": x}, (), 1, deadline=time.monotonic() + 0.04)

    late_by_wave: list[int] = []
    refused = 0
    for _ in range(30):  # waves of 4 at once; only 2 can finish within 40 ms
        before = sched.counters.late
        results = await asyncio.gather(
            *(sched.submit(request()) for _ in range(4)), return_exceptions=True
        )
        refused += sum(isinstance(r, DeadlineExceeded) for r in results)
        late_by_wave.append(sched.counters.late - before)
    await sched.close()
    # At first the 1 ms estimate admits all four and two answer late; once the
    # margin has learnt the real error, the excess is refused instead: below
    # capacity by its own reckoning, balanced admission refuses only what the
    # median error says is more likely late than not (the fourth), so at most
    # one a wave still answers late.
    assert sum(late_by_wave[:3]) >= 3
    assert max(late_by_wave[-10:]) <= 1, late_by_wave
    assert refused >= 20


async def test_deliberate_holds_are_not_learnt_as_prediction_error() -> None:
    """The planner's own waiting for a fuller batch is bounded by the
    requests' slack; counting it as error would inflate the admission margin
    and refuse requests at light load."""
    from inferd.server.scheduler.planners import AdaptivePlanner, Plan, QueueState

    hold_s = 0.03

    class HoldingPlanner(AdaptivePlanner):
        """Holds every head for ``hold_s``, then dispatches what is queued."""

        def plan(self, now: float, state: QueueState) -> Plan:
            if now < state.head_arrival + hold_s:
                return Plan(wake_at=state.head_arrival + hold_s)
            take = min(state.rows, self.options.largest)
            return Plan(self.cover(take), take, "waited", state.head_deadline - now)

    engine = _SlowEngine()
    engine_latency = LatencyModel()
    for size in range(1, 5):
        engine_latency.observe(size, 0.015)
    options = BatchingOptions(max_batch_size=4, budget_s=1.0)
    sched = BatchingScheduler(
        engine,
        ModelStats(),
        options,
        engine_latency,
        planner=HoldingPlanner(options, engine_latency),
    )

    def request() -> InferRequest:
        return InferRequest({"x": np.ones((1, 2), np.float32)}, (), 1)

    for _ in range(12):  # waves of 4: each waits 30 ms by choice, then runs 15 ms
        await asyncio.gather(*(sched.submit(request()) for _ in range(4)))
    await sched.close()
    assert sched.counters.answered == 48
    margin = sched.admission.margin.seconds(0.015)  # what it adds to one engine call
    assert margin < hold_s / 2, margin


async def test_margin_learns_the_wait_until_the_caller_resumes() -> None:
    """The caller gets its answer only when its coroutine resumes, after
    whatever else the event loop has to do once the batch completes: that
    wait is part of the prediction error the margin learns."""
    engine = _SlowEngine()  # 15 ms
    latency = LatencyModel()
    latency.observe(1, 0.010)  # 10 ms predicted
    sched = BatchingScheduler(
        engine, ModelStats(), BatchingOptions(max_batch_size=1, budget_s=1.0), latency
    )
    complete = sched.execution.complete

    def complete_then_busy(batch: Any, result: Any) -> None:
        complete(batch, result)
        time.sleep(0.05)  # the loop runs other work before the caller resumes

    sched.execution.complete = complete_then_busy  # type: ignore[method-assign]
    await sched.submit(InferRequest({"x": np.ones((1, 2), np.float32)}, (), 1))
    await sched.close()
    (_, _, error), *_ = sched.admission.margin.errors
    assert error > 0.04, error  # ~55 ms late on a 10 ms prediction (5 ms without the wait)
