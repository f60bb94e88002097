"""``BatchingScheduler``: one model version's queue, admission, dispatch
and execution, wired together.

One dispatcher task per model version plans batches with a ``Planner``
(adaptive or Triton-static) whenever a request arrives, an execution slot
frees, or a planned wake-up comes due; a freed slot is refilled at once from
the callback that frees it, and a planned batch is handed to its engine
thread without waiting for another turn of the event loop.

Guarantees (the parts say how):
- A request that cannot finish in time is refused at arrival
  (``admission``).
- Cancelled requests leave the queue before any compute; a request already
  late (or that the planner calls hopeless) is answered DEADLINE_EXCEEDED
  and never run (``queue``, ``Planner.hopeless``).
- Admitted work is never dropped on close: ``close`` refuses new requests
  and waits for the queue to drain.
- One engine's faults stay with that model version (``execution``,
  ``health``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable

import numpy as np

from inferd.engines import Engine, EngineInputError
from inferd.server.errors import DeadlineExceeded, InvalidArgument, Unavailable
from inferd.server.observer import NULL_VERSION_OBSERVER, VersionObserver
from inferd.server.request import InferRequest
from inferd.server.scheduler.admission import Admission
from inferd.server.scheduler.base import Scheduler
from inferd.server.scheduler.execution import Executor
from inferd.server.scheduler.health import Health
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.loop_load import LoopLoad
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.planners import (
    Plan,
    Planner,
    QueueState,
    make_planner,
    new_latency_model,
)
from inferd.server.scheduler.queue import Entry, RequestQueue
from inferd.server.scheduler.records import Counters
from inferd.server.scheduler.slots import Slots
from inferd.server.stats import ModelStats

log = logging.getLogger("inferd.batcher")

#: How early a wake-up to hand a batch ahead may fire and still count as on time.
AHEAD_TOLERANCE_S = 1e-6


class BatchingScheduler(Scheduler):
    """The scheduler of one model version: admits, queues, batches and runs
    its requests; ``planner``, ``queue``, ``admission``, ``execution`` and
    ``health`` are its parts."""

    def __init__(
        self,
        engine: Engine,
        stats: ModelStats,
        options: BatchingOptions,
        latency: LatencyModel | None = None,
        *,
        name: str = "model",
        history: int = 256,
        observer: VersionObserver | None = None,
        probe: Callable[[], object] | None = None,
        on_health_change: Callable[[], None] | None = None,
        planner: Planner | None = None,
        loop_load: LoopLoad | None = None,
    ) -> None:
        self.engine = engine
        #: How busy the event loop thread is (None: not measured, never busy).
        self.loop_load = loop_load
        #: Telemetry hooks (``server.observer``); the default does nothing.
        self.observer = observer or NULL_VERSION_OBSERVER
        self.stats = stats
        self.options = options
        self.latency = latency or new_latency_model(options)
        self.counters = Counters()
        self.name = name
        self._closing = False
        #: Every policy decision (``planner`` overrides ``options.policy``'s).
        self.planner = planner or make_planner(options, self.latency)
        self.queue = RequestQueue(by_deadline=self.planner.by_deadline)
        self.slots = Slots(max(1, engine.max_concurrency), name, self._slot_freed)
        #: Called (on the event loop) whenever ``healthy`` changes.
        self.on_health_change = on_health_change
        self.health = Health(
            name,
            options,
            self.slots,
            probe,
            on_change=self._health_changed,
            on_unhealthy=self._fail_queued,
            on_recovered=self._wake_dispatcher,
            closing=lambda: self._closing,
        )
        self.execution = Executor(
            engine,
            options,
            self.slots,
            self.latency,
            stats,
            self.counters,
            self.observer,
            self.health,
            name=name,
            history=history,
        )
        self.admission = Admission(
            options,
            self.latency,
            self.planner,
            self.queue,
            self.slots,
            self.counters,
            self.observer,
        )
        self.execution.on_expired = self._expired
        #: The most recent batches (size, reason, slack, predicted vs actual).
        self.batches = self.execution.batches
        self._pending = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._timer: asyncio.TimerHandle | None = None
        #: Wakes the dispatcher when a batch may be handed ahead (``_dispatch_ahead``).
        self._ahead_timer: asyncio.TimerHandle | None = None
        #: When the planner started holding the queue with a slot free; None: not holding.
        self._hold_since: float | None = None
        #: Rows queued when the planner began holding for a fuller batch (None: not).
        self._fuller_rows: int | None = None
        #: The dispatcher task, started by the first request.
        self.dispatcher: asyncio.Task[None] | None = None

    # -- public ----------------------------------------------------------------------------

    def run_on_loop(self) -> bool:
        """Run every batch of a single-slot engine on the event loop thread
        (``inline_max_us`` without a bound), saving two thread hops per batch:
        for a process that has nothing else to answer, such as batch mode.
        False (nothing changed) when the engine has several slots."""
        if self.slots.total != 1:
            return False
        self.execution.options = dataclasses.replace(self.execution.options, inline_max_s=math.inf)
        return True

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def queued(self) -> int:
        return self.queue.count

    @property
    def hung(self) -> int:
        """Engine calls past their timeout that have not returned yet."""
        return len(self.slots.hung)

    @property
    def healthy(self) -> bool:
        return self.health.healthy

    @property
    def unhealthy_reason(self) -> str:
        return self.health.reason

    def unhealthy_error(self) -> Unavailable:
        return self.health.error()

    async def submit(self, request: InferRequest) -> dict[str, np.ndarray]:
        if self._closing:
            self.counters.refused["unloading"] += 1
            self.observer.on_refused("unloading")
            raise Unavailable("model is unloading; retry on another version or replica")
        if not self.health.healthy:
            raise self.health.error()
        if self.dispatcher is None:
            self.dispatcher = asyncio.create_task(self._dispatch_loop())
        try:
            self.engine.check_request(request.inputs)
        except EngineInputError as exc:
            raise InvalidArgument(str(exc)) from None
        now = time.monotonic()
        deadline = self.planner.deadline(request.deadline, now)
        priority = request.priority or self.options.default_priority
        predicted = self.admission.admit(request, priority, deadline, now)
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        entry = Entry(request, deadline, now, future)
        entry.predicted = predicted
        self.admission.admitted(entry)
        self.queue.push(entry, priority)
        self._pending += 1
        self.observer.on_pending(1)
        self._idle.clear()
        self._wake.set()
        try:
            outputs = await future
        except asyncio.CancelledError:
            if not entry.done:  # still queued: withdraw it before any compute
                self._withdraw(entry)
                self.counters.cancelled += 1
                self.observer.on_cancelled(entry, time.monotonic())
            raise
        finally:
            self._pending -= 1
            self.observer.on_pending(-1)
            if self._pending == 0:
                self._idle.set()
        # Learnt here, not when the batch completes: the caller waits for
        # this coroutine to resume too, behind everything else the event
        # loop has to do.
        done = time.monotonic()
        self.admission.learn(entry, done, done)
        return outputs

    async def close(self) -> None:
        self._closing = True
        await self._idle.wait()
        for task in (self.dispatcher, self.health.task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.slots.shutdown()
        c = self.counters
        log.info(
            "model '%s' scheduler closed: %d answered (%d after their deadline), refused %s, "
            "%d expired in the queue, %d cancelled",
            self.name,
            c.answered,
            c.late,
            dict(c.refused) or "none",
            c.expired,
            c.cancelled,
        )

    # -- dispatch --------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self.pump()

    def pump(self) -> None:
        """Dispatch on every free slot what the planner says to, or arm a
        wake-up for when it wants to plan again. Runs in the dispatcher task
        and also directly from the callback that frees a slot: through the
        task, a freed slot waits for the task's turn on the event loop behind
        the answers being sent, and the engine idles meanwhile
        (docs/experiments/dispatch-refill.md)."""
        for timer in (self._timer, self._ahead_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._ahead_timer = None
        while self.slots.free > 0 and self.health.healthy:
            now = time.monotonic()
            head = self.queue.head(now, self._hopeless, self._expire)
            if head is None:
                self._hold_since = self._fuller_rows = None  # nothing left to hold
                break
            plan = self.planner.plan(now, self._state(head, now))
            if plan.take == 0:
                if plan.reason == "fuller" and self._fuller_rows is None:
                    self._fuller_rows = self.queue.rows
                if self._hold_since is None:
                    self._hold_since = now
                if plan.wake_at is not None:
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_at(
                        loop.time() + max(0.0, plan.wake_at - now), self._wake.set
                    )
                break
            if self._hold_since is not None:
                self._end_hold(now)
            if self._fuller_rows is not None:
                self.planner.held_for_fuller(self.queue.rows - self._fuller_rows)
                self._fuller_rows = None
            entries = self.queue.take(plan.take, head, time.monotonic(), self._expire)
            if entries:
                rows = sum(e.rows for e in entries)
                # The smallest engine size that holds the rows actually taken
                # (fewer than planned when some were withdrawn or shaped differently).
                self.execution.launch(entries, plan, self.planner.batch_size(rows), now)
        while self.slots.free == 0 and self.queue.rows >= self.options.largest:
            if not self._dispatch_ahead():
                break

    def _state(self, head: Entry, now: float) -> QueueState:
        """What the planner sees of the queue at ``now``."""
        # Batches kept short for tight callers only at light load: under
        # load the throughput of full batches serves more of them.
        tight = self.admission.tight_at_light_load(now)
        return QueueState(
            self.queue.rows,
            head.deadline,
            head.arrival,
            self.admission.offered.rate(now),
            functools.partial(self.queue.view, head, 2 * self.options.largest),
            tight.seconds,
            tight.rows,
            self.loop_load.share() if self.loop_load is not None else 0.0,
        )

    def _dispatch_ahead(self) -> bool:
        """With every slot busy and a full batch queued, hand that batch to
        the engine threads shortly before a slot frees, so the engine starts
        it the moment a call ends instead of after the event loop has heard
        of the end (``slots``). Only a full batch, whose rows would not
        change by waiting; only one that the planner would dispatch then,
        behind a head that is not hopeless; and only within the time a batch
        spends outside the engine (its p95) of the slot freeing, so that a
        tight request arriving before then still goes ahead of it. Anything
        else is planned when a slot frees."""
        if (
            not self.options.batched
            or self.engine.takes_requests
            or self.slots.waiting >= self.slots.total
            or not self.health.healthy
        ):
            return False
        now = time.monotonic()
        start = self.slots.next_free_at(now)
        early = start - (self.latency.outside() or 0.0) - now
        if early > AHEAD_TOLERANCE_S:
            loop = asyncio.get_running_loop()
            self._ahead_timer = loop.call_at(loop.time() + early, self._wake.set)
            return False
        head = self.queue.head(now, self._hopeless, self._expire)
        if head is None:
            return False
        largest = self.options.largest
        view = self.queue.view(head, largest + 1)
        rows, due, count = 0, math.inf, 0
        for entry_rows, deadline in view:
            if rows + entry_rows > largest:
                break
            rows, due, count = rows + entry_rows, min(due, deadline), count + 1
        if rows < largest and count == len(view):
            return False  # the queue holds no more than a part of a batch of this shape
        # The batch the planner would dispatch when the slot frees, or none.
        # The rates and windows admission keeps are read at now: they only move forward.
        if self.planner.plan(start, self._state(head, now)).take < rows:
            return False
        entries = self.queue.take(rows, head, now, self._expire)
        if entries:
            taken = sum(e.rows for e in entries)
            size = self.planner.batch_size(taken)
            plan = Plan(size, taken, "ahead", due - start)
            self.execution.launch(entries, plan, size, now, ahead=True)
        return bool(entries)

    def _end_hold(self, now: float) -> None:
        """The planner stops holding: every queued request was delayed by the
        hold (or by its part since it arrived). The hold is the planner's
        choice, bounded by each request's slack, not a prediction error, so
        the admission margin does not learn from it."""
        since = self._hold_since
        assert since is not None
        self._hold_since = None
        self.queue.add_hold(since, now)

    def _hopeless(self, entry: Entry, now: float) -> bool:
        return self.planner.hopeless(entry.deadline, entry.rows, now, busy=bool(self.slots.running))

    def _expire(self, entry: Entry, reason: str, now: float) -> None:
        self._withdraw(entry)
        self._expired(entry, reason, now)

    def _expired(self, entry: Entry, reason: str, now: float) -> None:
        # Admitted and then failed its deadline: the least error it had.
        self.admission.learn(entry, max(now, entry.deadline), now)
        self.counters.expired += 1
        self.observer.on_expired(entry, reason, now)
        if not entry.future.done():
            entry.future.set_exception(
                DeadlineExceeded("deadline expired while the request was queued")
            )

    def _withdraw(self, entry: Entry) -> None:
        self.queue.remove(entry)
        self._wake.set()

    def _wake_dispatcher(self) -> None:
        self._wake.set()

    def _slot_freed(self) -> None:
        try:
            self.pump()
        except BaseException:
            self._wake.set()  # the dispatcher task takes over
            raise

    # -- health ----------------------------------------------------------------------------

    def _fail_queued(self, error: Unavailable) -> None:
        entries = self.queue.drain()
        if entries:
            self._wake.set()
        for entry in entries:
            if not entry.future.done():
                entry.future.set_exception(error)

    def _health_changed(self) -> None:
        if self.on_health_change is not None:
            self.on_health_change()
