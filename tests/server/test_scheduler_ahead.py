"""Batches handed ahead: with every slot busy and a full batch queued, the
scheduler gives that batch to the engine threads shortly before the slot
frees, so the engine starts it without waiting for the event loop
(``scheduler.slots``, ``BatchingScheduler._dispatch_ahead``).

The engine is the gated test double of scheduler_doubles.py: these tests hold
a batch mid-call and need to know which rows ran in which call and when.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from scheduler_doubles import (
    GatedEngine,
    affine_latency,
    expect_no_more_arrivals,
    hold_first_batch,
    request,
    scheduler,
)

from inferd.server.errors import DeadlineExceeded, Unavailable
from inferd.server.observer import Queued, VersionObserver
from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.execution import Batch, Result
from inferd.server.scheduler.slots import Slots


class TimedGatedEngine(GatedEngine):
    """GatedEngine that also records when each call began (monotonic s)."""

    def __init__(self) -> None:
        super().__init__()
        self.began: list[float] = []

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        self.began.append(time.monotonic())
        return super().infer(inputs, outputs)


def fast_scheduler(engine: GatedEngine, **options: object) -> BatchingScheduler:
    """Batches of up to 4 rows predicted at 1 ms: a held call is soon past its
    predicted end, when a full batch may be handed ahead of it."""
    options.setdefault("max_batch_size", 4)
    sched = scheduler(engine, affine_latency(0.001, 0.0, range(1, 5)), **options)
    expect_no_more_arrivals(sched)
    return sched


async def until(condition: object, timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.001)


async def test_a_full_batch_is_handed_ahead_while_the_engine_is_busy() -> None:
    engine = GatedEngine()
    sched = fast_scheduler(engine)
    first = await hold_first_batch(sched, engine)
    tasks = [asyncio.create_task(sched.submit(request(float(i)))) for i in range(5)]
    await until(lambda: sched.slots.waiting == 1)
    # Four rows left the queue for the engine; the fifth waits for a slot.
    assert sched.queued == 1 and sched.slots.waiting_requests == 4
    engine.gate.set()
    results = await asyncio.gather(first, *tasks)
    assert [float(r["y"][0, 0]) for r in results[1:]] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert engine.batches[1:] == [[0.0, 1.0, 2.0, 3.0], [4.0]]
    assert sched.slots.free == 1 and sched.slots.waiting == 0
    await sched.close()


async def test_the_engine_starts_a_batch_handed_ahead_while_the_event_loop_is_busy() -> None:
    engine = TimedGatedEngine()
    sched = fast_scheduler(engine)
    first = await hold_first_batch(sched, engine)
    tasks = [asyncio.create_task(sched.submit(request(float(i)))) for i in range(4)]
    await until(lambda: sched.slots.waiting == 1)
    engine.gate.set()
    time.sleep(0.2)  # the event loop is busy elsewhere
    busy_until = time.monotonic()
    await asyncio.gather(first, *tasks)
    assert len(engine.began) == 2 and engine.began[1] < busy_until - 0.1
    await sched.close()


async def test_a_part_of_a_batch_waits_for_a_free_slot() -> None:
    engine = GatedEngine()
    sched = fast_scheduler(engine)
    first = await hold_first_batch(sched, engine)
    tasks = [asyncio.create_task(sched.submit(request(float(i)))) for i in range(3)]
    await asyncio.sleep(0.05)
    assert sched.slots.waiting == 0 and sched.queued == 3
    engine.gate.set()
    await asyncio.gather(first, *tasks)
    assert engine.batches[1:] == [[0.0, 1.0, 2.0]]
    await sched.close()


async def test_a_batch_is_handed_ahead_only_near_the_end_of_the_call_before_it() -> None:
    # A tight request arriving well before the running call ends still goes
    # ahead of the loose batch queued before it (earliest deadline first).
    engine = GatedEngine()
    sched = scheduler(engine, affine_latency(0.3, 0.0, range(1, 5)), max_batch_size=4)
    expect_no_more_arrivals(sched)
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    loose = [
        asyncio.create_task(sched.submit(request(float(i), deadline=now + 5.0))) for i in range(4)
    ]
    await asyncio.sleep(0.02)
    assert sched.slots.waiting == 0
    tight = asyncio.create_task(sched.submit(request(9.0, deadline=now + 2.0)))
    await until(lambda: sched.queued == 5)
    engine.gate.set()
    await asyncio.gather(first, tight, *loose)
    assert engine.batches[1][0] == 9.0
    await sched.close()


async def test_requests_hopeless_behind_the_running_call_are_not_handed_ahead() -> None:
    engine = GatedEngine()
    sched = scheduler(engine, affine_latency(0.05, 0.0, range(1, 5)), max_batch_size=4)
    expect_no_more_arrivals(sched)
    sched.admission.planner.reserve = 0.0
    first = await hold_first_batch(sched, engine)
    # Admitted while the held call is predicted to end soon; then the call runs
    # long, and behind it (50 ms more) the batch would end past its deadline.
    deadline = time.monotonic() + 0.09
    tasks = [
        asyncio.create_task(sched.submit(request(float(i), deadline=deadline))) for i in range(4)
    ]
    await asyncio.sleep(0.06)
    assert sched.slots.waiting == 0
    engine.gate.set()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert all(isinstance(r, DeadlineExceeded) for r in results[1:])
    assert len(engine.batches) == 1  # expired in the queue, never run
    await sched.close()


async def test_requests_already_late_when_their_batch_starts_are_expired_unrun() -> None:
    engine = GatedEngine()
    sched = fast_scheduler(engine)
    first = await hold_first_batch(sched, engine)
    deadline = time.monotonic() + 0.1
    late = [
        asyncio.create_task(sched.submit(request(float(i), deadline=deadline))) for i in range(4)
    ]
    await until(lambda: sched.slots.waiting == 1)
    await asyncio.sleep(0.15)  # the held call runs past their deadline
    engine.gate.set()
    results = await asyncio.gather(first, *late, return_exceptions=True)
    assert all(isinstance(r, DeadlineExceeded) for r in results[1:])
    assert "expired while the request was queued" in str(results[1])
    assert len(engine.batches) == 1 and sched.counters.expired == 4
    assert sched.slots.free == 1
    await sched.close()


async def test_a_hung_call_fails_the_batch_handed_ahead_of_it_which_never_runs() -> None:
    engine = GatedEngine()
    sched = fast_scheduler(engine, engine_timeout_s=0.2, probe_interval_s=60.0)
    first = await hold_first_batch(sched, engine)
    tasks = [asyncio.create_task(sched.submit(request(float(i)))) for i in range(4)]
    await until(lambda: sched.slots.waiting == 1)
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert all(isinstance(r, Unavailable) and "engine timeout" in str(r) for r in results)
    engine.gate.set()  # the hung call returns; its thread skips the abandoned batch
    await until(lambda: sched.hung == 0)
    assert len(engine.batches) == 1 and sched.slots.free == 1
    await sched.close()


async def test_requests_handed_ahead_count_towards_the_queue_limit() -> None:
    engine = GatedEngine()
    sched = fast_scheduler(engine, max_batch_size=2, max_queue=4)
    first = await hold_first_batch(sched, engine)
    tasks = [asyncio.create_task(sched.submit(request(float(i)))) for i in range(4)]
    await until(lambda: sched.slots.waiting == 1)
    assert sched.queued == 2
    with pytest.raises(Unavailable, match="queue is full"):
        await sched.submit(request(9.0))
    engine.gate.set()
    await asyncio.gather(first, *tasks)
    await sched.close()


async def test_slots_predict_the_queue_waits_for_the_calls_handed_ahead() -> None:
    slots = Slots(1, "m", lambda: None)
    assert slots.next_free_at(5.0) == 5.0
    release = threading.Event()
    done: list[object] = []
    slots.start(1, release.wait, ends_at=10.0, on_done=lambda r, e: done.append(r))
    slots.start(2, lambda: "b", ends_at=12.0, on_done=lambda r, e: done.append(r),
                ahead=(2.0, lambda: done.append("started"), 3))  # fmt: skip
    assert slots.free == 0 and slots.waiting == 1 and slots.waiting_requests == 3
    # Behind the running call and the call handed ahead of the queue.
    assert slots.next_free_at(5.0) == 12.0
    release.set()
    await until(lambda: len(done) == 3)
    # The slot passes to the call handed ahead before the first call is answered.
    assert done == ["started", True, "b"] and slots.free == 1 and slots.waiting_requests == 0
    slots.shutdown()


async def test_late_requests_are_answered_when_their_batch_starts_and_the_rest_run() -> None:
    engine = GatedEngine()
    sched = fast_scheduler(engine)
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    late = [
        asyncio.create_task(sched.submit(request(float(i), deadline=now + 0.1))) for i in range(2)
    ]
    live = [
        asyncio.create_task(sched.submit(request(float(i), deadline=now + 30.0))) for i in (2, 3)
    ]
    await until(lambda: sched.slots.waiting == 1)
    await asyncio.sleep(0.15)  # the held call runs past two of their deadlines
    engine.started.clear()
    engine.gate.set()  # the first call returns...
    engine.gate.clear()  # ...and the batch handed ahead is held in its turn
    await until(engine.started.is_set)
    # Answered as soon as the batch started, not after the rest of it ran.
    done, _ = await asyncio.wait(late, timeout=2.0)
    assert len(done) == 2 and all(isinstance(t.exception(), DeadlineExceeded) for t in late)
    assert not any(t.done() for t in live)
    engine.gate.set()
    await asyncio.gather(first, *live)
    assert engine.batches[1] == [2.0, 3.0] and sched.counters.expired == 2
    await sched.close()


class QueueSpans(VersionObserver):
    """The requests each queue-leaving hook saw, by id."""

    __slots__ = ("dispatched", "expired")

    def __init__(self) -> None:
        self.dispatched: list[str] = []
        self.expired: list[str] = []

    def on_expired(self, entry: Queued, reason: str, now: float) -> None:
        self.expired.append(entry.request.id)

    def on_dispatch(
        self, entries: Sequence[Queued], reason: str, slack: float, now: float
    ) -> object:
        self.dispatched.extend(e.request.id for e in entries)
        return None


async def test_a_request_late_when_its_batch_handed_ahead_starts_leaves_the_queue_once() -> None:
    # The slot's hand-over runs on the loop while the engine thread decides
    # which requests are late; held here until the hand-over has run, as the
    # race allows. They must leave the queue expired, not dispatched too.
    engine = GatedEngine()
    sched = fast_scheduler(engine)
    spans = sched.observer = sched.execution.observer = QueueSpans()
    executor = sched.execution
    handed_over = threading.Event()
    started, execute = executor.started, executor.execute

    def started_then_tell(batch: Batch) -> None:
        started(batch)
        handed_over.set()

    def execute_after_hand_over(batch: Batch) -> Result:
        if batch.ahead:
            handed_over.wait(2.0)
        return execute(batch)

    executor.started = started_then_tell  # type: ignore[method-assign]
    executor.execute = execute_after_hand_over  # type: ignore[method-assign]
    first = await hold_first_batch(sched, engine)
    now = time.monotonic()
    late = [
        asyncio.create_task(sched.submit(request(0.0, deadline=now + 0.1, id=f"late{i}")))
        for i in range(2)
    ]
    live = [
        asyncio.create_task(sched.submit(request(1.0, deadline=now + 30.0, id=f"live{i}")))
        for i in range(2)
    ]
    await until(lambda: sched.slots.waiting == 1)
    await asyncio.sleep(0.15)  # the held call runs past two of their deadlines
    engine.gate.set()
    await asyncio.gather(first, *live)
    await asyncio.gather(*late, return_exceptions=True)
    assert handed_over.is_set()
    assert sorted(spans.expired) == ["late0", "late1"]
    assert sorted(i for i in spans.dispatched if i) == ["live0", "live1"]
    await sched.close()


async def test_the_engine_timeout_of_a_batch_handed_ahead_counts_from_its_start() -> None:
    # The call before it runs ~150 ms against its 1 ms prediction; the batch
    # handed ahead then runs 100 ms, ending ~250 ms after it was handed over:
    # within its 200 ms timeout only if counted from its start.
    engine = GatedEngine()
    sched = fast_scheduler(engine, engine_timeout_s=0.2, probe_interval_s=60.0)
    first = await hold_first_batch(sched, engine)
    tasks = [asyncio.create_task(sched.submit(request(float(i)))) for i in range(4)]
    await until(lambda: sched.slots.waiting == 1)
    await asyncio.sleep(0.05)
    engine.seconds = 0.1  # the held call sleeps it too once released
    engine.gate.set()
    results = await asyncio.gather(first, *tasks)
    assert len(results) == 5 and sched.healthy
    await sched.close()


async def test_a_hung_call_fails_the_batches_handed_ahead_at_its_own_timeout() -> None:
    engine = GatedEngine()
    sched = fast_scheduler(engine, engine_timeout_s=0.3, probe_interval_s=60.0)
    first = await hold_first_batch(sched, engine)
    began = time.monotonic()
    await asyncio.sleep(0.15)  # handed ahead halfway through the hung call's timeout
    tasks = [asyncio.create_task(sched.submit(request(float(i)))) for i in range(4)]
    await until(lambda: sched.slots.waiting == 1)
    with pytest.raises(Unavailable):
        await first
    failed_at = time.monotonic()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    # With the hung call, not at their own timeout 150 ms later.
    assert time.monotonic() - failed_at < 0.1 and failed_at - began < 0.4
    engine.gate.set()
    await until(lambda: sched.hung == 0)
    await sched.close()


async def test_a_merge_that_fails_on_the_loop_is_left_to_the_engine_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inferd.server.scheduler import execution

    merge = execution.merge_inputs
    loop_thread = threading.get_ident()

    def failing_on_the_loop(inputs: list[dict[str, np.ndarray]], pad: int) -> object:
        if threading.get_ident() == loop_thread:
            raise MemoryError
        return merge(inputs, pad)

    monkeypatch.setattr(execution, "merge_inputs", failing_on_the_loop)
    engine = GatedEngine()
    sched = fast_scheduler(engine)
    first = await hold_first_batch(sched, engine)
    tasks = [asyncio.create_task(sched.submit(request(float(i)))) for i in range(4)]
    await until(lambda: sched.slots.waiting == 1)
    engine.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *tasks), 5.0)
    assert [float(r["y"][0, 0]) for r in results[1:]] == [0.0, 2.0, 4.0, 6.0]
    await sched.close()


async def test_each_busy_slot_gets_a_batch_handed_ahead() -> None:
    engine = GatedEngine(concurrency=2)
    sched = fast_scheduler(engine)
    engine.gate.clear()
    running = [asyncio.create_task(sched.submit(request(-1.0, rows=4))) for _ in range(2)]
    await until(lambda: sched.slots.free == 0 and len(engine.batches) == 2)
    tasks = [asyncio.create_task(sched.submit(request(float(i)))) for i in range(8)]
    await until(lambda: sched.slots.waiting == 2)
    assert sched.queued == 0
    engine.gate.set()
    await asyncio.gather(*running, *tasks)
    assert sorted(map(sorted, engine.batches[2:])) == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]
    assert sched.slots.free == 2 and sched.slots.waiting == 0
    await sched.close()
