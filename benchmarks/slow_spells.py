"""A slow host drawn by time, so that every policy meets the same slow spells.

Stalls drawn per engine call (``TimedEngine``'s ``stall_rate``) unpair a
comparison: two policies that make different calls meet different stalls, and
at light load the difference between them is mostly that draw
(docs/experiments/batching-grid.md). Here the host alternates between normal
and slow spells whose lengths are exponential and drawn from a seed on the
run's own clock; a call runs ``factor`` times slower for the part of it that
falls inside a spell, whichever policy made it.
"""

from __future__ import annotations

import bisect
import random


class SlowSpells:
    """Spells of a slow host on a time line starting at 0: ``share`` of the
    time slowed by ``factor``, spells ``mean_s`` long on average."""

    def __init__(self, share: float, factor: float, mean_s: float, seed: int = 0) -> None:
        if not 0 < share < 1 or factor < 1 or mean_s <= 0:
            raise ValueError("need 0 < share < 1, factor >= 1 and mean_s > 0")
        self.share, self.factor, self.mean_s = share, factor, mean_s
        self._mean_gap = mean_s * (1 - share) / share
        self._rng = random.Random(seed)
        self.starts: list[float] = []
        self.ends: list[float] = []

    def _draw_until(self, t: float) -> None:
        last = self.ends[-1] if self.ends else 0.0
        while last <= t:
            start = last + self._rng.expovariate(1 / self._mean_gap)
            last = start + self._rng.expovariate(1 / self.mean_s)
            self.starts.append(start)
            self.ends.append(last)

    def duration(self, start: float, work: float) -> float:
        """Seconds a call needing ``work`` seconds at full speed takes when it
        starts at ``start`` (seconds on the spells' time line)."""
        t, left = start, work
        self._draw_until(t + work * self.factor)
        i = bisect.bisect_right(self.ends, t)  # the first spell not over by t
        while left > 0:
            s, e = self.starts[i], self.ends[i]
            if t < s:  # full speed until the spell starts
                if t + left <= s:
                    return t + left - start
                left -= s - t
                t = s
            if t + left * self.factor <= e:
                return t + left * self.factor - start
            left -= (e - t) / self.factor
            t = e
            i += 1
            self._draw_until(t + left * self.factor)
        return t - start
