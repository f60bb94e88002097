"""The queued requests of one model version: a heap by priority, then
deadline (EDF) or arrival (FIFO, the static policy), with withdrawal
(cancel), expiry and the views dispatch and admission need.

Entries leave lazily: a withdrawn or taken entry is marked ``done`` and
dropped when it reaches the top of the heap, so cancelling is O(1).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable

import numpy as np

from inferd.server.request import InferRequest

#: Called for an entry that must leave the queue unrun: (entry, reason, now).
Expire = Callable[["Entry", str, float], None]


class Entry:
    """One admitted request while it waits for (and runs in) a batch."""

    __slots__ = (
        "arrival",
        "deadline",
        "done",
        "future",
        "held",
        "key",
        "predicted",
        "request",
        "rows",
    )

    def __init__(
        self,
        request: InferRequest,
        deadline: float,
        arrival: float,
        future: asyncio.Future[dict[str, np.ndarray]],
    ) -> None:
        self.request = request
        self.rows = request.rows
        self.deadline = deadline
        self.arrival = arrival
        self.future = future
        #: Taken into a batch or withdrawn: no longer queued.
        self.done = False
        #: Seconds to finish predicted at admission; NaN when none was made.
        self.predicted = math.nan
        #: Seconds the planner deliberately held this request while a slot was
        #: free (waiting for a fuller batch): a choice, not a prediction error.
        self.held = 0.0
        # Requests merge only when their non-batch dimensions agree.
        self.key = tuple((n, a.shape[1:], a.dtype) for n, a in request.inputs.items())


class RequestQueue:
    """Queued entries in dispatch order, with their row and request counts."""

    def __init__(self, *, by_deadline: bool = True) -> None:
        #: True: priority, then deadline (EDF); False: priority, then arrival.
        self.by_deadline = by_deadline
        self._heap: list[tuple[int, float, int, Entry]] = []
        self._seq = itertools.count()
        #: Rows and requests queued (live entries only).
        self.rows = 0
        self.count = 0
        #: The latest (priority, deadline) queued since the queue was last
        #: empty: a request at or past it is behind every queued row.
        self._last_key: tuple[int, float] = (0, -math.inf)

    def push(self, entry: Entry, priority: int) -> None:
        if self.by_deadline:
            key = (priority, entry.deadline, next(self._seq), entry)
            self._last_key = max(self._last_key, (priority, entry.deadline))
        else:
            key = (priority, 0.0, next(self._seq), entry)
        heapq.heappush(self._heap, key)
        self.rows += entry.rows
        self.count += 1

    def remove(self, entry: Entry) -> None:
        """Mark a queued entry taken or withdrawn (it leaves the heap lazily)."""
        entry.done = True
        self.rows -= entry.rows
        self.count -= 1

    def live(self) -> list[Entry]:
        """Queued entries, in heap (not dispatch) order."""
        return [entry for *_, entry in self._heap if not entry.done]

    def drain(self) -> list[Entry]:
        """Remove every queued entry; returns them."""
        entries = self.live()
        for entry in entries:
            self.remove(entry)
        self._heap.clear()
        return entries

    def head(
        self, now: float, hopeless: Callable[[Entry, float], bool], expire: Expire
    ) -> Entry | None:
        """Earliest live entry; drops withdrawn ones and expires hopeless ones
        (``deadline_passed`` when already late, else ``cannot_finish``)."""
        heap = self._heap
        while heap:
            entry = heap[0][3]
            if entry.done:
                heapq.heappop(heap)
                continue
            if hopeless(entry, now):
                heapq.heappop(heap)
                late = entry.deadline <= now
                expire(entry, "deadline_passed" if late else "cannot_finish", now)
                continue
            return entry
        return None

    def rows_ahead(self, priority: int, deadline: float) -> int:
        """Queued rows that dispatch takes before a request of ``priority``
        due at ``deadline``: the EDF queue is ordered by priority, then
        deadline, so a request with a tight deadline goes ahead of looser
        ones queued before it (counting every queued row refused such
        requests for work they would never wait for; see
        docs/experiments/admission-rows-ahead.md). Under one latency budget
        every newcomer is due last, and the count is the queue's rows, no
        scan."""
        if self.count == 0:
            self._last_key = (0, -math.inf)
            return 0
        if (priority, deadline) >= self._last_key:
            return self.rows
        return sum(
            e.rows for p, d, _, e in self._heap if not e.done and (p, d) <= (priority, deadline)
        )

    def behind(self, priority: int, deadline: float) -> list[tuple[float, int]]:
        """(deadline, rows) of the queued entries a request of ``priority``
        due at ``deadline`` goes ahead of, in dispatch order."""
        key = (priority, deadline)
        later = sorted((p, d, e.rows) for p, d, _, e in self._heap if not e.done and (p, d) > key)
        return [(d, rows) for _, d, rows in later]

    def view(self, head: Entry, limit: int) -> list[tuple[int, float]]:
        """(rows, deadline) of the first queued entries shaped like ``head``,
        in dispatch order, until ``limit`` rows."""
        view: list[tuple[int, float]] = []
        rows = 0
        for *_, entry in heapq.nsmallest(limit, self._heap):
            if entry.done or entry.key != head.key:
                continue
            view.append((entry.rows, entry.deadline))
            rows += entry.rows
            if rows >= limit:
                break
        return view

    def take(self, rows_wanted: int, head: Entry, now: float, expire: Expire) -> list[Entry]:
        """Pop up to ``rows_wanted`` rows in queue order, all shaped like
        ``head``; an entry already late is expired instead. Stops before an
        entry that would overflow the batch, so queue order is kept."""
        taken: list[Entry] = []
        skipped: list[tuple[int, float, int, Entry]] = []
        rows = 0
        heap = self._heap
        while heap and rows < rows_wanted:
            item = heap[0]
            entry = item[3]
            if entry.done:
                heapq.heappop(heap)
                continue
            if entry.key != head.key:
                skipped.append(heapq.heappop(heap))
                continue
            if taken and rows + entry.rows > rows_wanted:
                break  # keep queue order: the next batch starts with it
            heapq.heappop(heap)
            if entry.deadline <= now:
                expire(entry, "deadline_passed", now)
                continue
            self.remove(entry)
            rows += entry.rows
            taken.append(entry)
        for item in skipped:
            heapq.heappush(heap, item)
        return taken

    def add_hold(self, since: float, now: float) -> None:
        """Every queued entry was held from ``since`` (or its arrival) to ``now``."""
        for *_, entry in self._heap:
            if not entry.done:
                entry.held += now - max(since, entry.arrival)
