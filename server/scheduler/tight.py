"""The tightest deadline class among recent arrivals.

A request arriving while a batch runs waits for that batch, then runs in
the next: when some callers' deadlines are shorter than two batch times, a
batch sized for the others makes every such request that lands during it
late, however empty the queue was when the batch left. While the load
within their deadline is light the planner keeps batches short enough for
them (``AdaptivePlanner.tight_cap``); this says how short, from what arrived
lately, and whether such requests are more than a stray few.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Seconds a tight arrival stays in view: a sliding window of one to two of these.
WINDOW_S = 0.5
#: Least share of the offered rows in the tightest class for it to count: a
#: stray caller with a short timeout must not shrink every batch for everyone.
MIN_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class Tightest:
    """The tightest class seen lately: its least seconds to the deadline at
    arrival, the rows of the request that had it, and the class's share of
    the rows offered in the window."""

    seconds: float = math.inf
    rows: int = 0
    share: float = 0.0

    @property
    def counts(self) -> bool:
        return self.share >= MIN_SHARE and not math.isinf(self.seconds)


NONE = Tightest()


def deadline_class(seconds_left: float) -> int:
    """Which octave of milliseconds a request's time to its deadline falls in
    (requests with no deadline share one class)."""
    if math.isinf(seconds_left):
        return -1000
    return math.floor(math.log2(max(seconds_left, 1e-4) * 1e3))


class _Bucket:
    __slots__ = ("bottom", "klass", "klass_rows", "rows", "seconds", "seconds_rows", "top")

    def __init__(self) -> None:
        self.seconds, self.seconds_rows = math.inf, 0
        self.klass, self.klass_rows = 1000, 0
        #: Seconds where ``klass`` starts and where the class above it starts:
        #: no logarithm per request for the common case of one class.
        self.bottom = self.top = math.inf
        self.rows = 0

    def add(self, seconds_left: float, rows: int) -> None:
        self.rows += rows
        if seconds_left < self.seconds:
            self.seconds, self.seconds_rows = seconds_left, rows
        if seconds_left >= self.top:
            return  # a looser class than the tightest
        if seconds_left >= self.bottom:
            self.klass_rows += rows
            return
        klass = deadline_class(seconds_left)
        if klass == self.klass:  # below the class's floor only by the clamp
            self.klass_rows += rows
            return
        self.klass, self.klass_rows = klass, rows
        self.bottom, self.top = 2.0**klass / 1e3, 2.0 ** (klass + 1) / 1e3


class TightArrivals:
    """Sliding minimum of arrivals' seconds to their deadline, with the share
    of rows in its octave class, over the last one to two ``window_s``."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._index = -1
        self._current = _Bucket()
        self._previous = _Bucket()

    def add(self, seconds_left: float, rows: int, now: float) -> None:
        self._roll(now)
        self._current.add(seconds_left, rows)

    def tightest(self, now: float) -> Tightest:
        self._roll(now)
        a, b = self._current, self._previous
        total = a.rows + b.rows
        if total == 0:
            return NONE
        klass = min(a.klass, b.klass)
        in_class = sum(x.klass_rows for x in (a, b) if x.klass == klass)
        low = a if a.seconds <= b.seconds else b
        return Tightest(low.seconds, low.seconds_rows, in_class / total)

    def _roll(self, now: float) -> None:
        index = math.floor(now / self.window_s)
        if index == self._index:
            return
        self._previous = self._current if index == self._index + 1 else _Bucket()
        self._current = _Bucket()
        self._index = index
