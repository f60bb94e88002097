"""The latency model's pessimistic estimate and its resistance to host stalls."""

from __future__ import annotations

import math
import random

import pytest

from inferd.server.scheduler.latency import STALL_CLIP, STRICT_STALL_CLIP, LatencyModel
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.planners import new_latency_model


def seeded(sizes: range, base: float = 0.006, per_row: float = 0.0005) -> LatencyModel:
    model = LatencyModel()
    for s in sizes:
        model.seed(s, [base + per_row * s] * 5)
    return model


def test_one_stall_of_a_rare_size_does_not_make_that_size_look_slow() -> None:
    # A 6-row batch caught in a 70 ms host stall. A per-size p95 over that
    # size's few samples was the stall itself, and stayed so for as long as
    # size 6 kept running rarely; pooled over every size's batches it is one
    # sample in many, and a mean moves by at most the clip.
    model = seeded(range(1, 17))
    typical = model.mean(6)
    model.observe(6, 0.070)
    for _ in range(20):
        model.observe(2, model.mean(2))
    assert model.high(6) < 1.2 * typical


def test_a_stall_moves_a_mean_by_at_most_the_clip() -> None:
    model = seeded(range(4, 5))
    before = model.mean(4)
    model.observe(4, 100 * before)
    assert model.mean(4) == pytest.approx(before + model.alpha * (STALL_CLIP - 1) * before)


@pytest.mark.parametrize(("admission", "at_most"), [("balanced", 1.02), ("strict", 1.06)])
def test_frequent_stalls_barely_lift_a_mean_above_the_typical_batch(
    admission: str, at_most: float
) -> None:
    # On a shared host one batch in twenty runs 3x long. The mean plans the
    # typical batch (the admission margin learns the rest from the errors):
    # clipped at 2x the mean it read 5% high, which refused callers that would
    # have been on time; clipped at 1.25x it reads about 1% high. Strict
    # admission keeps the 2x clip, with which its p99 margin measured better.
    model = new_latency_model(BatchingOptions(admission=admission))
    assert model.stall_clip == (STRICT_STALL_CLIP if admission == "strict" else STALL_CLIP)
    model.seed(4, [0.010] * 5)
    means = []
    for i in range(2000):
        model.observe(4, 0.030 if i % 20 == 0 else 0.010)
        means.append(model.mean(4))
    planned = sum(means[1000:]) / 1000  # what batches were planned with, on average
    assert 0.010 < planned < at_most * 0.010
    if admission == "strict":
        assert planned > 1.03 * 0.010


def test_real_drift_is_still_followed() -> None:
    model = seeded(range(4, 5))
    for _ in range(60):
        model.observe(4, 0.024)  # the host became 3x slower and stayed so
    assert model.mean(4) == pytest.approx(0.024, rel=0.05)


def test_high_is_the_quantile_of_recent_overruns_of_every_size() -> None:
    model = LatencyModel(quantile=0.9)
    model.observe(2, 0.010)
    model.observe(8, 0.020)
    for i in range(100):
        # 10 % of batches of either size run 50 % over their mean.
        model.observe(2 if i % 2 else 8, (0.010 if i % 2 else 0.020) * (1.5 if i % 10 == 0 else 1))
    assert model.spread == pytest.approx(0.0, abs=0.06)
    model.quantile = 0.95
    model.observe(2, 0.010)  # any new sample re-reads the quantile
    assert model.spread > 0.3
    assert model.high(5) == pytest.approx(model.mean(5) * (1 + model.spread))


def test_sizes_that_do_not_run_follow_the_drift_of_those_that_do() -> None:
    # 2-row requests run even sizes only; the host slows every size by 30 %.
    # The odd sizes' warmup figures alone would then read faster than their
    # neighbours, and the table would stop rising with the size.
    model = seeded(range(1, 9))
    seed3 = model.mean(3)
    for _ in range(100):
        for size in (2, 4, 6, 8):
            model.observe(size, 1.3 * (0.006 + 0.0005 * size))
    table = [model.mean(size) for size in range(1, 9)]
    assert table == sorted(table)
    assert model.mean(3) == pytest.approx(1.3 * seed3, rel=0.03)
    # A size that runs keeps its own figure.
    assert model.mean(4) == pytest.approx(1.3 * 0.008, rel=0.01)
    # Once the host is back to its warmup speed, so are the sizes that sat out.
    for _ in range(100):
        for size in (2, 4, 6, 8):
            model.observe(size, 0.006 + 0.0005 * size)
    assert model.mean(3) == pytest.approx(seed3, rel=0.03)


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


def test_warmup_seed_takes_the_median_not_the_first_sample() -> None:
    model = LatencyModel()
    model.seed(4, [0.030, 0.001, 0.001, 0.002, 0.001])
    assert model.mean(4) == pytest.approx(0.001)
    assert model.high(4) >= model.mean(4)


def test_spread_is_the_quantile_of_the_window_as_batches_come_and_go() -> None:
    # The sorted copy of the window must follow the window exactly as old
    # overruns leave it (seeded ones included), or ``high`` drifts.
    rng = random.Random(7)
    model = LatencyModel(quantile=0.9, window=16)
    model.seed(1, [0.001 * rng.uniform(0.8, 1.5) for _ in range(10)])
    model.seed(4, [0.002 * rng.uniform(0.8, 1.5) for _ in range(10)])
    for _ in range(200):
        size = rng.choice([1, 4])
        before = model.mean(size)
        seconds = before * rng.choice([0.5, 1.0, 1.0, 1.2, 3.0])
        model.observe(size, seconds)
        window = sorted(model._over)
        index = min(len(window) - 1, math.ceil(0.9 * len(window)) - 1)
        assert model.spread == max(0.0, window[index])
