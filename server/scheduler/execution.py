"""Running batches on the engine: threads, slots, timeouts, merge and split.

Batches run in this scheduler's own daemon threads (``EngineThreads``), one
per execution slot (``Slots``). Requests are merged along the batch
dimension and their outputs handed back as views of the batch's outputs (no
copy).

Faults stay with their batch: an engine call that raises fails only the
requests in it (INTERNAL; MemoryError: RESOURCE_EXHAUSTED) and is counted
towards the health probe (``health``). An engine call that runs past
``options.engine_timeout_s`` is a hang: its requests are answered
UNAVAILABLE at the timeout and the version is marked unhealthy. Python
cannot kill a thread, so the call keeps its thread and its slot until it
returns; the slot is counted as busy all along (nothing is scheduled onto
it) and freed only when the call really ends. Engine threads are daemon
threads, so a call that never returns cannot keep a draining server from
exiting, and ``close`` does not wait for it (nor is that engine's memory
freed: freeing it under a running call could crash). Batches run inline
(``inline_max_s``) are not covered by the timeout.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from inferd.engines import Engine, EngineError
from inferd.server.errors import EngineFailure, InferdError, ResourceExhausted, Unavailable
from inferd.server.observer import VersionObserver
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.planners import Plan
from inferd.server.scheduler.queue import Entry
from inferd.server.scheduler.records import BatchRecord, Counters
from inferd.server.stats import ModelStats

if TYPE_CHECKING:
    from inferd.server.scheduler.health import Health

log = logging.getLogger("inferd.batcher")

#: What one engine call returns: each request's outputs, and the nanoseconds
#: spent merging, in the engine and splitting.
Result = tuple[list[dict[str, np.ndarray]], int, int, int]


class EngineThreads:
    """A fixed set of daemon threads that run engine calls.

    Unlike ``ThreadPoolExecutor`` workers (joined at interpreter exit), daemon
    threads let the process exit while an engine call hangs. Threads start on
    the first ``submit``."""

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._jobs: queue.SimpleQueue[
            tuple[concurrent.futures.Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        if self._closed:
            raise RuntimeError("engine threads are shut down")
        if not self._threads:
            for i in range(self._count):
                thread = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
            del job, future, fn, args

    def shutdown(self, *, wait: bool) -> None:
        """Stop taking work; ``wait``: join the threads (only when none hangs)."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


class Slots:
    """The engine's execution slots (``engine.max_concurrency``) and the calls
    that hold them. ``on_free`` runs on the event loop each time a slot frees."""

    def __init__(self, total: int, name: str, on_free: Callable[[], None]) -> None:
        self.total = total
        self.free = total
        #: Running batches: call id -> predicted end (monotonic s).
        self.running: dict[int, float] = {}
        #: Ids of engine calls past their timeout that have not returned yet.
        self.hung: set[int] = set()
        self.threads = EngineThreads(total, f"engine-{name}")
        self._ids = itertools.count()
        self._on_free = on_free

    def next_id(self) -> int:
        return next(self._ids)

    @property
    def idle(self) -> bool:
        return self.free == self.total

    def run(
        self, call_id: int, fn: Callable[..., Any], *args: Any, ends_at: float | None = None
    ) -> concurrent.futures.Future[Any]:
        """Take a slot and run ``fn`` on an engine thread (``ends_at``: record
        the call as a running batch). The slot is given back when the call
        really ends (even after a timeout gave up on it), never earlier.
        Raises RuntimeError, with the slot given back, once shut down."""
        if ends_at is not None:
            self.running[call_id] = ends_at
        self.free -= 1
        try:
            future = self.threads.submit(fn, *args)
        except RuntimeError:
            self.running.pop(call_id, None)
            self.free += 1
            raise
        loop = asyncio.get_running_loop()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.running.pop(call_id, None)
                self.free += 1
                self._on_free()

        def done(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing to free
                loop.call_soon_threadsafe(release)

        future.add_done_callback(done)
        return future

    def shutdown(self) -> None:
        # Idle threads exit at once; a hung one would block forever.
        self.threads.shutdown(wait=not self.hung)


@dataclass(slots=True)
class Batch:
    """A dispatched batch: its requests and what is known of it so far."""

    entries: list[Entry]
    #: Engine batch size (rows plus padding) and real rows.
    size: int
    rows: int
    plan: Plan
    #: Engine seconds predicted at dispatch (the latency model's high estimate).
    predicted: float
    dispatched: float
    #: What the telemetry hook returned at dispatch.
    token: object
    #: When ``execute`` began merging inputs (``time.monotonic()``).
    started: float = 0.0


class Executor:
    """Runs dispatched batches and answers their requests."""

    def __init__(
        self,
        engine: Engine,
        options: BatchingOptions,
        slots: Slots,
        latency: LatencyModel,
        stats: ModelStats,
        counters: Counters,
        observer: VersionObserver,
        health: Health,
        *,
        name: str,
        history: int,
    ) -> None:
        self.engine = engine
        self.options = options
        self.slots = slots
        self.latency = latency
        self.stats = stats
        self.counters = counters
        self.observer = observer
        self.health = health
        self.name = name
        #: The most recent batches (size, reason, slack, predicted vs actual).
        self.batches: collections.deque[BatchRecord] = collections.deque(maxlen=history)
        self._tasks: set[asyncio.Task[None]] = set()

    def launch(self, entries: list[Entry], plan: Plan, size: int, now: float) -> None:
        """Start ``entries`` as one engine batch of ``size`` rows."""
        rows = sum(e.rows for e in entries)
        predicted = self.latency.high(size)
        for entry in entries:
            self.stats.record_queue(int((now - entry.arrival) * 1e9))
        try:
            token = self.observer.on_dispatch(entries, plan.reason, plan.slack, now)
        except Exception:  # telemetry must never stop a batch
            log.exception("telemetry hook on_dispatch failed")
            token = None
        batch = Batch(entries, size, rows, plan, predicted, now, token)
        if 0 < predicted <= self.options.inline_max_s and self.slots.total == 1:
            self.run_inline(batch)
            return
        batch_id = self.slots.next_id()
        # Handed to the engine thread now, not when a task gets its turn.
        try:
            future = self.slots.run(
                batch_id, self.execute, batch, ends_at=now + self.latency.mean(size)
            )
        except RuntimeError:  # engine threads already shut down
            self.fail(batch, Unavailable("model is unloading; retry"))
            return
        task = asyncio.create_task(self.run_batch(batch_id, batch, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run_batch(
        self, batch_id: int, batch: Batch, future: concurrent.futures.Future[Any]
    ) -> None:
        """Await the engine call, within the engine timeout."""
        loop = asyncio.get_running_loop()
        timeout = self.options.engine_timeout_s
        timer = (
            loop.call_later(timeout, self.timed_out, batch_id, batch, timeout)
            if timeout is not None
            else None
        )
        try:
            result = await asyncio.wrap_future(future)
        except Exception as exc:
            result = exc
        if timer is not None:
            timer.cancel()
        if batch_id in self.slots.hung:
            # Answered at the timeout; what the call returned late is dropped.
            self.slots.hung.discard(batch_id)
            return
        if isinstance(result, Exception):
            self.failed(batch, result)
            return
        self.complete(batch, result)

    def run_inline(self, batch: Batch) -> None:
        """Run a batch on the event loop thread: for engines measured faster
        than the two thread hops an executor costs."""
        try:
            result = self.execute(batch)
        except Exception as exc:
            self.failed(batch, exc)
            return
        self.complete(batch, result)

    def timed_out(self, batch_id: int, batch: Batch, timeout: float) -> None:
        """The engine call is past its timeout: answer its requests now."""
        self.slots.hung.add(batch_id)
        self.fail(
            batch,
            Unavailable(
                f"model '{self.name}' did not finish within its engine timeout of "
                f"{timeout * 1e3:.0f} ms; retry later or on another replica"
            ),
        )
        self.health.set_unhealthy(f"an engine call exceeded the {timeout * 1e3:.0f} ms timeout")

    def failed(self, batch: Batch, exc: Exception) -> None:
        if not isinstance(exc, InferdError):
            log.error("batch execution failed: %s", type(exc).__name__)
            exc = EngineFailure("model execution failed")
        self.fail(batch, exc)
        self.health.batch_failed()

    def fail(self, batch: Batch, error: Exception) -> None:
        for entry in batch.entries:
            if not entry.future.done():
                entry.future.set_exception(error)
        try:
            self.observer.on_failed(batch.token, batch.entries, error, time.monotonic())
        except Exception:
            log.exception("telemetry hook on_failed failed")

    def complete(self, batch: Batch, result: Result) -> None:
        entries, size, rows = batch.entries, batch.size, batch.rows
        outputs, input_ns, infer_ns, output_ns = result
        self.health.batch_succeeded()
        finished = time.monotonic()
        actual = infer_ns / 1e9
        self.latency.observe(size, actual)
        self.latency.observe_outside(finished - batch.dispatched - actual)
        self.stats.record_execution(rows, len(entries), input_ns, infer_ns, output_ns)
        late = 0
        for entry, out in zip(entries, outputs, strict=True):
            if finished > entry.deadline:
                late += 1
            self.counters.answered += 1
            if not entry.future.done():
                entry.future.set_result(out)
        self.counters.late += late
        record = BatchRecord(
            size,
            rows,
            len(entries),
            batch.plan.reason,
            batch.plan.slack,
            batch.predicted,
            actual,
            input_s=input_ns / 1e9,
            output_s=output_ns / 1e9,
            dispatched=batch.dispatched,
            started=batch.started,
            finished=finished,
            late=late,
        )
        self.batches.append(record)
        try:
            self.observer.on_executed(batch.token, entries, record)
        except Exception:
            log.exception("telemetry hook on_executed failed")

    def execute(self, batch: Batch) -> Result:
        """Merge, run and split one batch (on an engine thread)."""
        entries, size, rows = batch.entries, batch.size, batch.rows
        batch.started = time.monotonic()
        t0 = time.perf_counter_ns()
        inputs = merge_inputs([e.request.inputs for e in entries], size - rows)
        wanted = union_outputs([e.request.outputs for e in entries])
        t1 = time.perf_counter_ns()
        try:
            outputs = self.engine.infer(inputs, wanted)
        except EngineError as exc:
            raise EngineFailure(f"model execution failed: {exc}") from None
        except MemoryError:
            raise ResourceExhausted(
                f"model '{self.name}' ran out of memory on a batch of {rows} rows; "
                "retry with fewer rows"
            ) from None
        t2 = time.perf_counter_ns()
        results = split_outputs(outputs, entries) if self.options.batched else [outputs]
        t3 = time.perf_counter_ns()
        return results, t1 - t0, t2 - t1, t3 - t2


def merge_inputs(inputs: list[dict[str, np.ndarray]], pad: int) -> dict[str, np.ndarray]:
    """Concatenate requests' inputs along the batch dimension, plus ``pad``
    copies of the last row (padding rows are discarded after the run)."""
    if len(inputs) == 1 and pad == 0:
        return inputs[0]  # a lone request runs on its own arrays: no copy
    merged: dict[str, np.ndarray] = {}
    for name in inputs[0]:
        parts = [i[name] for i in inputs]
        if pad:
            last = parts[-1][-1:]
            parts.append(np.repeat(last, pad, axis=0))
        merged[name] = np.concatenate(parts, axis=0)
    return merged


def union_outputs(requested: list[tuple[str, ...]]) -> list[str] | None:
    """The outputs a batch must compute (None: every output)."""
    if any(not r for r in requested):
        return None  # someone wants every output
    names: dict[str, None] = {}
    for r in requested:
        names.update(dict.fromkeys(r))
    return list(names)


def split_outputs(
    outputs: dict[str, np.ndarray], entries: Sequence[Entry]
) -> list[dict[str, np.ndarray]]:
    """Each entry's rows of the batch's outputs (views), only those it asked for."""
    results: list[dict[str, np.ndarray]] = []
    offset = 0
    for entry in entries:
        end = offset + entry.rows
        names = entry.request.outputs or tuple(outputs)
        results.append({n: outputs[n][offset:end] for n in names})
        offset = end
    return results
