"""Offered load as rates: exponentially decaying counts of rows per second.

Admission reads the load a planner sizes batches for (``BurstRate``), the
sustained load its margins and the tight cap follow, and the rows it admits.
"""

from __future__ import annotations

import math
import time


class Rate:
    """Arrival rate in rows/s: an exponentially decaying count (time constant tau)."""

    def __init__(self, tau: float = 0.25) -> None:
        self.tau = tau
        self._value = 0.0
        self._last = time.monotonic()

    def add(self, rows: int, now: float) -> None:
        self._value = self._value * math.exp(-(now - self._last) / self.tau) + rows
        self._last = now

    def rate(self, now: float) -> float:
        return self._value * math.exp(-(now - self._last) / self.tau) / self.tau


class WarmRate(Rate):
    """A ``Rate`` that reads the rate seen so far during its first ``tau``
    seconds: counting from zero, a long average reads a light load for its
    first seconds whatever the load."""

    def __init__(self, tau: float) -> None:
        super().__init__(tau)
        self._first: float | None = None

    def add(self, rows: int, now: float) -> None:
        if self._first is None:
            self._first = now
        super().add(rows, now)

    def rate(self, now: float) -> float:
        if self._first is None:
            return 0.0
        seen = 1.0 - math.exp(-(now - self._first) / self.tau)
        return super().rate(now) / max(seen, 1e-3)


class BurstRate:
    """Offered rows/s as the larger of a slow and a fast average.

    The slow one alone lags short bursts, so the planner would size batches
    for the lull while the burst queues behind one small batch after
    another; the fast one follows a burst within it. Being the larger of the
    two, the rate rises at once and falls back as the burst ends
    (docs/experiments/burst-rate.md)."""

    SLOW_TAU = 0.25
    FAST_TAU = 0.05

    def __init__(self) -> None:
        self.slow = Rate(self.SLOW_TAU)
        self.fast = Rate(self.FAST_TAU)

    def add(self, rows: int, now: float) -> None:
        self.slow.add(rows, now)
        self.fast.add(rows, now)

    def rate(self, now: float) -> float:
        return max(self.slow.rate(now), self.fast.rate(now))
