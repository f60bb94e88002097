"""Offered load as rates (``scheduler.rates``)."""

from __future__ import annotations

import time

import pytest

from inferd.server.scheduler.rates import Rate, WarmRate


def test_a_warm_rate_reads_the_rate_seen_during_its_first_tau() -> None:
    # 1,000 rows/s for 0.1 s: an average over 1 s counted from zero reads
    # about a tenth of that, which the tight cap took for a light load.
    warm, plain = WarmRate(1.0), Rate(1.0)
    t = time.monotonic()
    for _ in range(100):
        t += 0.001
        warm.add(1, t)
        plain.add(1, t)
    assert plain.rate(t) < 150
    assert warm.rate(t) == pytest.approx(1000, rel=0.1)
    # Later it is the plain average: the correction fades within a few tau.
    for _ in range(5000):
        t += 0.001
        warm.add(1, t)
        plain.add(1, t)
    assert warm.rate(t) == pytest.approx(plain.rate(t), rel=0.01)


def test_a_warm_rate_with_nothing_seen_reads_zero() -> None:
    assert WarmRate(1.0).rate(time.monotonic()) == 0.0
