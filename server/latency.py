"""Per-batch-size engine latency: what the batcher plans with.

Warmup seeds it by running the engine at every batch size the scheduler may
pick; every real batch then updates it, so the model follows drift (thermal,
noisy neighbours). For each size it keeps a mean (EWMA) and a high quantile
over a window of recent samples. Sizes never measured are interpolated
linearly between measured neighbours (engine time is close to affine in the
batch size), and extrapolated from the two largest.
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass, field


@dataclass(slots=True)
class _SizeStats:
    mean: float = 0.0
    samples: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=64))
    quantile: float = 0.0
    _dirty: bool = False


class LatencyModel:
    """Seconds per batch, by batch size (rows)."""

    def __init__(self, *, quantile: float = 0.95, alpha: float = 0.1) -> None:
        #: Which quantile ``high`` reports; 0.95 keeps a margin without chasing outliers.
        self.quantile = quantile
        #: EWMA weight of a new sample; 0.1 follows drift within ~20 batches.
        self.alpha = alpha
        self._sizes: dict[int, _SizeStats] = {}
        self._known: list[int] = []  # sorted measured sizes

    def observe(self, size: int, seconds: float) -> None:
        stats = self._sizes.get(size)
        if stats is None:
            stats = self._sizes[size] = _SizeStats(mean=seconds)
            bisect.insort(self._known, size)
        else:
            stats.mean += self.alpha * (seconds - stats.mean)
        stats.samples.append(seconds)
        stats._dirty = True

    def seed(self, size: int, samples: list[float]) -> None:
        """Start ``size`` from warmup samples: the median, not the first one,
        so one slow warmup run (a busy host) does not skew the start."""
        ordered = sorted(samples)
        self.observe(size, ordered[len(ordered) // 2])
        stats = self._sizes[size]
        for value in ordered:
            stats.samples.append(value)
        stats._dirty = True

    @property
    def sizes(self) -> list[int]:
        return list(self._known)

    def mean(self, size: int) -> float:
        return self._estimate(size, high=False)

    def high(self, size: int) -> float:
        """A pessimistic estimate (the configured quantile) for ``size``."""
        return self._estimate(size, high=True)

    def _value(self, size: int, high: bool) -> float:
        stats = self._sizes[size]
        if not high:
            return stats.mean
        if stats._dirty:
            ordered = sorted(stats.samples)
            index = min(len(ordered) - 1, math.ceil(self.quantile * len(ordered)) - 1)
            stats.quantile = max(ordered[max(0, index)], stats.mean)
            stats._dirty = False
        return stats.quantile

    def _estimate(self, size: int, high: bool) -> float:
        known = self._known
        if not known:
            return 0.0
        if size in self._sizes:
            return self._value(size, high)
        i = bisect.bisect_left(known, size)
        if i == 0:
            return self._value(known[0], high)  # smaller than anything seen: no cheaper
        if i == len(known):
            if len(known) == 1:
                return self._value(known[0], high) * size / known[0]
            a, b = known[-2], known[-1]
        else:
            a, b = known[i - 1], known[i]
        va, vb = self._value(a, high), self._value(b, high)
        return max(0.0, va + (vb - va) * (size - a) / (b - a))
