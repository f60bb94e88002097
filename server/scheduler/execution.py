"""Running batches on the engine: timeouts, merge and split.

Batches run in this scheduler's own daemon threads, one per execution slot
(``slots``); a full batch may be handed ahead while every slot is busy
(``Executor.launch(..., ahead=True)``). Requests are merged along the batch
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
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from inferd.engines import Engine, EngineError, EngineRequestError, RequestCall
from inferd.server.errors import (
    DeadlineExceeded,
    EngineFailure,
    InferdError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from inferd.server.observer import VersionObserver
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.planners import Plan
from inferd.server.scheduler.queue import Entry
from inferd.server.scheduler.records import BatchRecord, Counters
from inferd.server.scheduler.slots import Slots
from inferd.server.stats import ModelStats

if TYPE_CHECKING:
    from inferd.server.scheduler.health import Health

log = logging.getLogger("inferd.batcher")

#: What one engine call returns: each request's outputs (or, from engines
#: that answer requests one by one, its error), and the nanoseconds spent
#: merging, in the engine and splitting.
Result = tuple[list[dict[str, np.ndarray] | InferdError], int, int, int]

#: Statuses an engine may give one request (``EngineRequestError.status``).
_REQUEST_ERRORS: dict[str, type[InferdError]] = {
    "INVALID_ARGUMENT": InvalidArgument,
    "NOT_FOUND": NotFound,
    "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded,
    "RESOURCE_EXHAUSTED": ResourceExhausted,
}


def request_error(exc: EngineRequestError) -> InferdError:
    """The caller's error for one request's engine failure (INTERNAL unless
    the engine named another status)."""
    return _REQUEST_ERRORS.get(exc.status, EngineFailure)(str(exc))


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
    #: Handed ahead while every slot was busy (``Slots.start``).
    ahead: bool = False
    #: Given up on before it started (the call ahead of it hung): not run.
    abandoned: bool = False
    #: The engine timeout's timer, while armed.
    timer: asyncio.TimerHandle | None = None
    #: Its engine call's id (``Slots``).
    call_id: int = -1
    #: A batch handed ahead's inputs, merged on the event loop while the call
    #: before it runs: its engine thread would wait for the interpreter lock
    #: to merge them, with the engine idle.
    inputs: dict[str, np.ndarray] | None = None


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
        #: Batches handed ahead that no slot has taken yet.
        self.waiting: list[Batch] = []
        #: Answers a request found late when its batch started (the scheduler
        #: counts it as expired in the queue).
        self.on_expired: Callable[[Entry, str, float], None] = _refuse_late
        #: The event loop batches handed ahead answer on.
        self.loop: asyncio.AbstractEventLoop | None = None

    def launch(
        self, entries: list[Entry], plan: Plan, size: int, now: float, *, ahead: bool = False
    ) -> None:
        """Start ``entries`` as one engine batch of ``size`` rows; ``ahead``:
        hand it to the engine threads while every slot is busy, to start as
        soon as one frees (its queue time is counted until then)."""
        rows = sum(e.rows for e in entries)
        predicted = self.latency.high(size)
        batch = Batch(entries, size, rows, plan, predicted, now, None, ahead=ahead)
        if not ahead:  # a batch handed ahead leaves the queue when it starts
            self.dispatched(batch, now)
        # Never inline an engine that takes requests apart: a Python model's
        # BLS calls need the event loop this would block.
        inline = 0 < predicted <= self.options.inline_max_s and self.slots.total == 1
        if inline and not ahead and not self.engine.takes_requests:
            self.run_inline(batch)
            return
        batch_id = batch.call_id = self.slots.next_id()
        start = self.slots.next_free_at(now) if ahead else now
        # A batch handed ahead is timed from its predicted start, then again
        # from its real one (``started``).
        self.arm_timer(batch, start - now)
        returned = functools.partial(self.returned, batch_id, batch)
        mean = self.latency.mean(size)
        handover = (mean, functools.partial(self.started, batch), len(entries)) if ahead else None
        if ahead:
            self.waiting.append(batch)
            self.loop = asyncio.get_running_loop()
            if not self.engine.takes_requests:
                with contextlib.suppress(Exception):  # else merged, or failed, as any batch
                    batch.inputs = merge_inputs([e.request.inputs for e in entries], size - rows)
        # Handed to the engine thread now, not when a task gets its turn.
        try:
            self.slots.start(
                batch_id, self.execute, batch, ends_at=start + mean, on_done=returned,
                ahead=handover,
            )  # fmt: skip
        except RuntimeError:  # engine threads already shut down
            self.disarm(batch)
            self.fail(batch, Unavailable("model is unloading; retry"))

    def dispatched(self, batch: Batch, now: float) -> None:
        """The batch leaves the queue for the engine: its queue time ends."""
        self.record_queue(batch.entries, now)
        try:
            batch.token = self.observer.on_dispatch(
                batch.entries, batch.plan.reason, batch.plan.slack, now
            )
        except Exception:  # telemetry must never stop a batch
            log.exception("telemetry hook on_dispatch failed")

    def record_queue(self, entries: list[Entry], now: float) -> None:
        for entry in entries:
            queued = entry.request.queue_ns = int((now - entry.arrival) * 1e9)
            self.stats.record_queue(queued)

    def arm_timer(self, batch: Batch, extra: float = 0.0) -> None:
        timeout = self.options.engine_timeout_s
        if timeout is not None:
            batch.timer = asyncio.get_running_loop().call_later(
                timeout + extra, self.timed_out, batch, timeout
            )

    def disarm(self, batch: Batch) -> None:
        if batch.timer is not None:
            batch.timer.cancel()
            batch.timer = None
        if batch.ahead and batch in self.waiting:
            self.waiting.remove(batch)

    def started(self, batch: Batch) -> None:
        """A batch handed ahead took a slot (on the event loop): its engine
        timeout counts from now."""
        if batch.abandoned:
            return
        self.disarm(batch)
        self.arm_timer(batch)

    def began(self, batch: Batch, expired: list[Entry], now: float) -> None:
        """The engine thread began a batch handed ahead at ``now`` (on the
        loop, at once: not after the rest of the batch has run): the requests
        it found late are answered, the rest leave the queue. Told by the
        thread once it has decided which is which: from the slot's hand-over
        the telemetry raced that decision, and a request found late had a
        queue span both dispatched and expired."""
        for entry in expired:
            if not entry.future.done():
                self.on_expired(entry, "deadline_passed", now)
        if batch.entries:
            self.dispatched(batch, now)

    def returned(
        self, batch_id: int, batch: Batch, result: Result | None, error: BaseException | None
    ) -> None:
        """The engine call returned (on the event loop): answer its requests."""
        self.disarm(batch)
        if batch_id in self.slots.hung:
            # Answered at the timeout; what the call returned late is dropped.
            self.slots.hung.discard(batch_id)
            return
        if error is not None:
            self.failed(batch, error if isinstance(error, Exception) else RuntimeError(repr(error)))
            return
        assert result is not None
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

    def timed_out(self, batch: Batch, timeout: float) -> None:
        """The engine call is past its timeout: answer its requests now, and
        those of the batches handed ahead, which would start after it (they
        are not run: ``abandoned``)."""
        error = Unavailable(
            f"model '{self.name}' did not finish within its engine timeout of "
            f"{timeout * 1e3:.0f} ms; retry later or on another replica"
        )
        batch.timer = None
        now = time.monotonic()
        for gone in [batch, *(b for b in self.waiting if b is not batch)]:
            if gone in self.waiting:
                gone.abandoned = True
                self.dispatched(gone, now)
            self.slots.hung.add(gone.call_id)
            self.disarm(gone)
            self.fail(gone, error)
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
        finished = time.monotonic()
        if not entries:  # none ran: end what telemetry opened at dispatch
            try:
                error = DeadlineExceeded("every request expired before the batch started")
                self.observer.on_failed(batch.token, [], error, finished)
            except Exception:
                log.exception("telemetry hook on_failed failed")
            return
        self.health.batch_succeeded()
        actual = infer_ns / 1e9
        self.latency.observe(size, actual)
        # A batch handed ahead waited for a slot, not for the way to the engine.
        since = batch.started if batch.ahead else batch.dispatched
        self.latency.observe_outside(finished - since - actual)
        self.stats.record_execution(rows, len(entries), input_ns, infer_ns, output_ns)
        late = 0
        for entry, out in zip(entries, outputs, strict=True):
            request = entry.request
            request.compute_input_ns = input_ns
            request.compute_infer_ns = infer_ns
            request.compute_output_ns = output_ns
            if finished > entry.deadline:
                late += 1
            self.counters.answered += 1
            if entry.future.done():
                continue
            if isinstance(out, InferdError):
                entry.future.set_exception(out)
            else:
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
        batch_rows = rows
        batch.started = now = time.monotonic()
        if batch.abandoned:
            return [], 0, 0, 0  # answered at the timeout of the call before it
        if batch.ahead:
            # Late by the time a slot took it (the calls before it ran long):
            # not run, as the queue would not have run them.
            expired = [e for e in entries if e.deadline <= now]
            if expired:
                entries = batch.entries = [e for e in entries if e.deadline > now]
                rows = batch.rows = sum(e.rows for e in entries)
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                if self.loop is not None:
                    self.loop.call_soon_threadsafe(self.began, batch, expired, now)
            if not entries:
                return [], 0, 0, 0
            if expired:
                size = batch.size = self.options.cover(rows)
        if self.engine.takes_requests:
            return self.execute_requests(batch)
        t0 = time.perf_counter_ns()
        inputs = batch.inputs if batch.inputs is not None and rows == batch_rows else None
        if inputs is None:
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
        return list(results), t1 - t0, t2 - t1, t3 - t2

    def execute_requests(self, batch: Batch) -> Result:
        """Run one batch as its separate requests, each answered on its own
        (engines with ``takes_requests``: no merge, no padding)."""
        calls = [
            RequestCall(
                e.request.inputs,
                e.request.outputs,
                e.request.deadline,
                e.request.id,
                e.request.parameters,
                e.request.principal,
            )
            for e in batch.entries
        ]
        t0 = time.perf_counter_ns()
        try:
            answers = self.engine.infer_requests(calls)
        except EngineRequestError as exc:
            raise request_error(exc) from None
        except EngineError as exc:
            raise EngineFailure(f"model execution failed: {exc}") from None
        results: list[dict[str, np.ndarray] | InferdError] = [
            request_error(a) if isinstance(a, EngineRequestError) else a for a in answers
        ]
        return results, 0, time.perf_counter_ns() - t0, 0


def _refuse_late(entry: Entry, reason: str, now: float) -> None:
    if not entry.future.done():
        entry.future.set_exception(
            DeadlineExceeded("deadline expired while the request was queued")
        )


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
