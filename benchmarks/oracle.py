"""The most requests any batching policy could answer on time: an offline
optimum that knows every arrival in advance, against which the online
policies (adaptive, static) are judged.

The setting is the batcher benchmarks': one execution slot, requests of
equal size, every request due a fixed ``deadline_s`` after it arrives, a
batch of ``m`` requests taking ``batch_s[m]`` seconds and holding at most
``len(batch_s) - 1`` requests, a batch starting no earlier than its last
member's arrival and no request split across batches. Two facts make the
optimum exact and cheap to compute:

- Served requests can be taken in arrival order. With equal relative
  deadlines arrival order is deadline order, so swapping a later-served
  earlier arrival into the earlier batch keeps both on time.
- Each batch can be a run of consecutive arrivals. A batch whose members
  skip over an arrival is no better than the batch of the same size made of
  the first member and its successors: that batch can start no later, ends
  no later, and leaves the skipped arrivals free for later batches.

So ``earliest[k]``, the earliest time the slot can be free having answered
``k`` of the first ``i`` arrivals, is all a dynamic program over ``i`` needs
to carry: arrival ``i`` is either never answered, or the first of a batch
of the next ``m`` arrivals that starts when both the slot is free and its
last member has arrived. Nothing about the host is in it (no stalls, no
event-loop delay), so no online policy can beat it on the same arrivals.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def batch_seconds(fixed_s: float, row_s: float, rows: int, max_rows: int) -> list[float]:
    """``batch_s`` for an engine whose batch of ``b`` rows takes ``fixed + b x
    row`` seconds, for requests of ``rows`` rows each (index = requests)."""
    if rows < 1 or max_rows < rows:
        raise ValueError("need 1 <= rows <= max_rows")
    return [0.0] + [fixed_s + m * rows * row_s for m in range(1, max_rows // rows + 1)]


def most_on_time(
    arrivals: Sequence[float] | np.ndarray, deadline_s: float, batch_s: Sequence[float]
) -> int:
    """How many of ``arrivals`` (seconds, any order) an offline policy can
    answer within ``deadline_s`` of arriving, ``batch_s[m]`` being the time
    of a batch of ``m`` requests (``batch_s[0]`` unused)."""
    a = np.sort(np.asarray(arrivals, dtype=np.float64))
    n, most = len(a), len(batch_s) - 1
    if most < 1 or any(t <= 0 for t in batch_s[1:]):
        raise ValueError("need batch times > 0 for at least one batch size")
    if n == 0:
        return 0
    inf = np.inf
    # earliest[i][k] for the arrivals still ahead of the one being decided.
    ahead: dict[int, np.ndarray] = {0: np.full(n + 1, inf)}
    ahead[0][0] = -inf  # the slot is free before the first arrival
    for i in range(n):
        free = ahead.pop(i)
        nxt = ahead.setdefault(i + 1, np.full(n + 1, inf))
        np.minimum(nxt, free, out=nxt)  # arrival i is never answered
        due = a[i] + deadline_s
        for m in range(1, min(most, n - i) + 1):
            last = a[i + m - 1]
            if last + batch_s[m] > due:
                continue  # cannot end in time even on a free slot
            end = np.maximum(free, last) + batch_s[m]
            end[end > due] = inf
            target = ahead.setdefault(i + m, np.full(n + 1, inf))
            np.minimum(target[m:], end[:-m], out=target[m:])
    final = ahead[n]
    return int(np.flatnonzero(final < inf).max())
