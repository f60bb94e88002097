"""Per-batch-size engine latency: what the scheduler plans with.

Warmup seeds it by running the engine at every batch size the scheduler may
pick; every real batch then updates it, so the model follows drift (thermal,
noisy neighbours). For each size it keeps a mean (EWMA); sizes never
measured are interpolated linearly between measured neighbours (engine time
is close to affine in the batch size), and extrapolated from the two largest.

The pessimistic estimate (``high``) is the mean scaled by a high quantile of
how far recent batches of *every* size ran over their size's mean, not a
quantile per size: a per-size window keeps one host stall in the quantile of
a size that runs rarely for as long as that size keeps running rarely, while
a pooled window fills in a second or two under load and a stall leaves it as
fast (docs/experiments/latency-pooled-overrun.md). For the same reason a
sample moves a mean by at most ``STALL_CLIP`` times that mean, so frequent
short stalls do not keep the mean above the typical batch.

A size's mean moves only while that size runs, but the host's speed moves
every size together, so sizes that never ran would keep their idle figures
(docs/experiments/latency-drift.md). The model therefore also keeps a pooled
drift (every batch's time over its size's first figure, as an EWMA) and
carries each size's mean forward by how far that drift moved since the size
last ran: sizes that run keep their own mean, the others follow the host.
"""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Iterator

#: A sample counts at most this many times the size's current mean. Real
#: drift is still followed (each batch moves the mean by ``alpha`` of the
#: clipped gap: a host 3x slower is tracked within ~45 batches); a stall is
#: not taken for drift, so the mean stays at the typical batch
#: (docs/experiments/stall-clip.md).
STALL_CLIP = 1.25
#: The clip for ``admission: strict``: its p99-plus-reserve margin was tuned
#: against the stall-inclusive mean, and does better with it.
STRICT_STALL_CLIP = 2.0
#: Batches ``outside`` needs before it reports.
MIN_OUTSIDE_SAMPLES = 16


class SortedWindow:
    """The last ``size`` values, also kept sorted so a quantile costs an index,
    not a sort, per read."""

    __slots__ = ("_order", "_sorted")

    def __init__(self, size: int) -> None:
        self._order: collections.deque[float] = collections.deque(maxlen=size)
        self._sorted: list[float] = []

    def add(self, value: float) -> None:
        order, ordered = self._order, self._sorted
        if len(order) == order.maxlen:
            del ordered[bisect.bisect_left(ordered, order[0])]
        order.append(value)
        bisect.insort(ordered, value)

    def __len__(self) -> int:
        return len(self._sorted)

    def __iter__(self) -> Iterator[float]:
        return iter(self._order)

    def at(self, index: int) -> float:
        """The ``index``-th smallest value (clamped to the window)."""
        ordered = self._sorted
        return ordered[max(0, min(len(ordered) - 1, index))]


class LatencyModel:
    """Seconds per batch, by batch size (rows)."""

    def __init__(
        self,
        *,
        quantile: float = 0.95,
        alpha: float = 0.1,
        window: int = 256,
        stall_clip: float = STALL_CLIP,
    ) -> None:
        #: Which quantile ``high`` reports; 0.95 keeps a margin without chasing outliers.
        self.quantile = quantile
        #: EWMA weight of a new sample; 0.1 follows drift within ~20 batches.
        self.alpha = alpha
        #: A sample counts at most this many times its size's mean.
        self.stall_clip = stall_clip
        self._means: dict[int, float] = {}
        #: Each size's first figure (warmup's median, else its first batch).
        self._firsts: dict[int, float] = {}
        #: Pooled drift: recent batches' time over their size's first figure.
        self._drift = 1.0
        #: The pooled drift when each size's mean last moved.
        self._drift_at: dict[int, float] = {}
        self._known: list[int] = []  # sorted measured sizes
        #: Recent batches' time over their size's mean, as a fraction of it (all sizes).
        self._over = SortedWindow(window)
        self._spread = 0.0
        self._dirty = False
        #: Recent batches' time outside the engine (dispatch to completion on
        #: the event loop, less engine time): thread hops, merge, loop lag.
        self._outside = SortedWindow(window)

    def observe(self, size: int, seconds: float) -> None:
        mean = self._means.get(size)
        if mean is None:
            self._start(size, seconds)
            return
        if mean > 0:
            self._add_over(seconds / mean - 1.0)
        clipped = min(seconds, self.stall_clip * mean)
        first = self._firsts[size]
        if first > 0:
            self._drift += self.alpha * (clipped / first - self._drift)
        self._means[size] = mean + self.alpha * (clipped - mean)
        self._drift_at[size] = self._drift

    def _start(self, size: int, seconds: float) -> None:
        if size not in self._means:
            bisect.insort(self._known, size)
            self._firsts[size] = seconds
        self._means[size] = seconds
        self._drift_at[size] = self._drift

    def _add_over(self, value: float) -> None:
        self._over.add(value)
        self._dirty = True

    def observe_outside(self, seconds: float) -> None:
        """One batch's time between dispatch and completion outside the engine."""
        self._outside.add(max(0.0, seconds))

    def outside(self, quantile: float = 0.95) -> float | None:
        """The ``quantile`` of recent batches' time outside the engine; None
        until ``MIN_OUTSIDE_SAMPLES`` batches ran."""
        outside = self._outside
        if len(outside) < MIN_OUTSIDE_SAMPLES:
            return None
        return outside.at(int(quantile * len(outside)))

    def seed(self, size: int, samples: list[float]) -> None:
        """Start ``size`` from warmup samples: the median, not the first one,
        so one slow warmup run (a busy host) does not skew the start; every
        sample's distance from it seeds the spread."""
        ordered = sorted(samples)
        median = ordered[len(ordered) // 2]
        self._start(size, median)
        if median > 0:
            for value in ordered:
                self._add_over(value / median - 1.0)

    @property
    def sizes(self) -> list[int]:
        return list(self._known)

    def mean(self, size: int) -> float:
        known = self._known
        if not known:
            return 0.0
        mean_of = self._now
        if size in self._means:
            return mean_of(size)
        i = bisect.bisect_left(known, size)
        if i == 0:
            return mean_of(known[0])  # smaller than anything seen: no cheaper
        if i == len(known):
            if len(known) == 1:
                return mean_of(known[0]) * size / known[0]
            a, b = known[-2], known[-1]
        else:
            a, b = known[i - 1], known[i]
        va, vb = mean_of(a), mean_of(b)
        return max(0.0, va + (vb - va) * (size - a) / (b - a))

    def _now(self, size: int) -> float:
        """A measured size's mean, carried forward by the pooled drift since it last ran."""
        at = self._drift_at[size]
        mean = self._means[size]
        return mean * self._drift / at if at > 0 else mean

    def high(self, size: int) -> float:
        """A pessimistic estimate for ``size``: its mean, scaled by the
        configured quantile of recent batches' overrun (never below the mean)."""
        return self.mean(size) * (1.0 + self.spread)

    @property
    def spread(self) -> float:
        """The ``quantile`` of recent batches' overrun of their size's mean (>= 0)."""
        if self._dirty:
            over = self._over
            self._spread = max(0.0, over.at(math.ceil(self.quantile * len(over)) - 1))
            self._dirty = False
        return self._spread
