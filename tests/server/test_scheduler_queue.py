"""The request queue on its own: dispatch order, withdrawal, expiry, the
views admission and dispatch take of it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import numpy as np
import pytest

from inferd.server.request import InferRequest
from inferd.server.scheduler.queue import Entry, RequestQueue


def entry(
    loop: asyncio.AbstractEventLoop,
    deadline: float = math.inf,
    rows: int = 1,
    arrival: float = 0.0,
    width: int = 2,
) -> Entry:
    request = InferRequest({"x": np.zeros((rows, width), np.float32)}, (), rows)
    return Entry(request, deadline, arrival, loop.create_future())


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def never(_: Entry, __: float) -> bool:
    return False


def no_expiry(e: Entry, reason: str, now: float) -> None:
    raise AssertionError(f"unexpected expiry ({reason})")


def drain_order(queue: RequestQueue, now: float = 0.0) -> list[Entry]:
    order = []
    while (head := queue.head(now, never, no_expiry)) is not None:
        queue.take(head.rows, head, now, no_expiry)
        order.append(head)
    return order


def test_edf_queue_serves_priority_then_earliest_deadline(
    loop: asyncio.AbstractEventLoop,
) -> None:
    queue = RequestQueue(by_deadline=True)
    late, soon, urgent_low = entry(loop, 0.9), entry(loop, 0.1), entry(loop, 0.05)
    high = entry(loop, 5.0)
    queue.push(late, 2)
    queue.push(soon, 2)
    queue.push(urgent_low, 3)
    queue.push(high, 1)
    assert drain_order(queue) == [high, soon, late, urgent_low]
    assert queue.count == 0 and queue.rows == 0


def test_fifo_queue_serves_priority_then_arrival(loop: asyncio.AbstractEventLoop) -> None:
    queue = RequestQueue(by_deadline=False)
    first, second, high = entry(loop, 0.9), entry(loop, 0.1), entry(loop, 5.0)
    queue.push(first, 2)
    queue.push(second, 2)
    queue.push(high, 1)
    assert drain_order(queue) == [high, first, second]


def test_a_withdrawn_entry_leaves_counts_at_once_and_is_never_taken(
    loop: asyncio.AbstractEventLoop,
) -> None:
    queue = RequestQueue()
    a, b = entry(loop, 0.1, rows=3), entry(loop, 0.2, rows=2)
    queue.push(a, 0)
    queue.push(b, 0)
    queue.remove(a)
    assert (queue.count, queue.rows) == (1, 2) and a.done
    assert queue.head(0.0, never, no_expiry) is b
    assert queue.take(8, b, 0.0, no_expiry) == [b]
    assert queue.head(0.0, never, no_expiry) is None


def test_head_expires_hopeless_entries_with_their_reason(
    loop: asyncio.AbstractEventLoop,
) -> None:
    queue = RequestQueue()
    past, doomed, fine = entry(loop, 1.0), entry(loop, 2.0), entry(loop, 9.0)
    for e in (past, doomed, fine):
        queue.push(e, 0)
    expired: list[tuple[Entry, str]] = []

    def expire(e: Entry, reason: str, now: float) -> None:
        queue.remove(e)
        expired.append((e, reason))

    def hopeless(e: Entry, now: float) -> bool:
        return e.deadline < 5.0

    assert queue.head(1.5, hopeless, expire) is fine
    assert expired == [(past, "deadline_passed"), (doomed, "cannot_finish")]
    assert queue.count == 1


def test_take_keeps_queue_order_shapes_and_expires_the_late(
    loop: asyncio.AbstractEventLoop,
) -> None:
    queue = RequestQueue()
    head = entry(loop, 1.0, rows=2)
    other_shape = entry(loop, 1.1, width=3)
    late = entry(loop, 0.5)
    second = entry(loop, 1.2, rows=3)
    third = entry(loop, 1.3, rows=2)
    for e in (head, other_shape, second, third):
        queue.push(e, 0)
    queue.push(late, 1)  # behind by priority, already late when reached
    expired: list[Entry] = []

    def expire(e: Entry, reason: str, now: float) -> None:
        queue.remove(e)
        expired.append(e)

    # 6 rows wanted: head (2) + second (3) = 5; third (2) would overflow.
    assert queue.take(6, head, 0.8, expire) == [head, second]
    assert not expired
    # The differently shaped entry stays queued, in its place.
    assert queue.head(0.8, never, no_expiry) is other_shape
    assert queue.take(8, third, 0.8, expire) == [third]
    assert expired == [late]
    assert (queue.count, queue.rows) == (1, 1)


def test_rows_ahead_counts_only_what_dispatch_takes_first(
    loop: asyncio.AbstractEventLoop,
) -> None:
    queue = RequestQueue()
    assert queue.rows_ahead(0, 1.0) == 0
    queue.push(entry(loop, 0.5, rows=2), 0)
    queue.push(entry(loop, 2.0, rows=4), 0)
    assert queue.rows_ahead(0, 3.0) == 6  # due last: everything queued
    assert queue.rows_ahead(0, 1.0) == 2  # goes ahead of the looser one
    assert queue.rows_ahead(1, 0.1) == 6  # a lower priority waits for all


def test_view_lists_the_heads_shape_in_order_up_to_a_limit(
    loop: asyncio.AbstractEventLoop,
) -> None:
    queue = RequestQueue()
    head = entry(loop, 1.0, rows=2)
    queue.push(head, 0)
    queue.push(entry(loop, 1.1, width=3), 0)
    queue.push(entry(loop, 1.2, rows=3), 0)
    queue.push(entry(loop, 1.3, rows=4), 0)
    assert queue.view(head, 4) == [(2, 1.0), (3, 1.2)]


def test_drain_and_hold(loop: asyncio.AbstractEventLoop) -> None:
    queue = RequestQueue()
    early, later = entry(loop, 9.0, arrival=1.0), entry(loop, 9.0, arrival=3.0)
    queue.push(early, 0)
    queue.push(later, 0)
    queue.add_hold(2.0, 5.0)
    assert (early.held, later.held) == (3.0, 2.0)
    assert set(queue.drain()) == {early, later}
    assert (queue.count, queue.rows) == (0, 0) and early.done and later.done
    assert queue.head(0.0, never, no_expiry) is None
