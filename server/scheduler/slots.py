"""The engine's threads and execution slots, and the calls handed to them ahead.

A call handed ahead (``Slots.start(..., ahead=True)``) is given to the engine
threads while every slot is busy: the thread that finishes first takes it
without waiting for the event loop to hear of the end and plan again, so a
saturated engine does not idle between batches while the loop is busy
(docs/experiments/dispatch-ahead.md). It holds no slot until then; when the
call before it ends, the slot passes to it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import queue
import threading
import time
from collections.abc import Callable
from typing import Any


class EngineThreads:
    """A fixed set of daemon threads that run engine calls, in the order posted.

    Unlike ``ThreadPoolExecutor`` workers (joined at interpreter exit), daemon
    threads let the process exit while an engine call hangs. Threads start on
    the first job."""

    def __init__(self, count: int, name: str) -> None:
        self._count = count
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def post(
        self,
        loop: asyncio.AbstractEventLoop,
        done: Callable[[Any, BaseException | None], None],
        fn: Callable[..., Any],
        *args: Any,
    ) -> None:
        """Run ``fn(*args)`` on a thread, then ``done(result, error)`` on
        ``loop``: one wake-up of the loop per call, no futures
        (docs/experiments/engine-call-handoff.md)."""
        if self._closed:
            raise RuntimeError("engine threads are shut down")
        if not self._threads:
            for i in range(self._count):
                thread = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
                thread.start()
                self._threads.append(thread)
        self._jobs.put(functools.partial(_then_call, loop, done, fn, args))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()
            del job

    def shutdown(self, *, wait: bool) -> None:
        """Stop taking work; ``wait``: join the threads (only when none hangs)."""
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


def _then_call(
    loop: asyncio.AbstractEventLoop,
    done: Callable[[Any, BaseException | None], None],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    result: Any = None
    error: BaseException | None = None
    try:
        result = fn(*args)
    except BaseException as exc:
        error = exc
    with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
        loop.call_soon_threadsafe(done, result, error)


class Slots:
    """The engine's execution slots (``engine.max_concurrency``), the calls
    that hold them and the calls handed ahead. ``on_free`` runs on the event
    loop each time a slot frees."""

    def __init__(self, total: int, name: str, on_free: Callable[[], None]) -> None:
        self.total = total
        self.free = total
        #: Running and waiting calls: call id -> predicted end (monotonic s).
        self.running: dict[int, float] = {}
        #: Ids of engine calls past their timeout that have not returned yet.
        self.hung: set[int] = set()
        self.threads = EngineThreads(total, f"engine-{name}")
        #: Calls handed ahead, in the order a thread takes them: (id, predicted
        #: seconds, called once it holds a slot, requests it answers).
        self._waiting: collections.deque[tuple[int, float, Callable[[], None], int]] = (
            collections.deque()
        )
        #: Requests in the calls handed ahead.
        self.waiting_requests = 0
        self._ids = itertools.count()
        self._on_free = on_free

    def next_id(self) -> int:
        return next(self._ids)

    @property
    def idle(self) -> bool:
        return self.free == self.total

    @property
    def waiting(self) -> int:
        """Calls handed ahead that no slot has taken yet."""
        return len(self._waiting)

    def next_free_at(self, now: float) -> float:
        """When the queue's next batch could start: now while a slot is free,
        else the predicted end of the call that frees a slot no call handed
        ahead takes (those take the first ones)."""
        if self.free > 0 or not self.running:
            return now
        ends = sorted(self.running.values())
        return max(now, ends[min(len(self._waiting), len(ends) - 1)])

    def run(
        self, call_id: int, fn: Callable[..., Any], *args: Any, ends_at: float | None = None
    ) -> asyncio.Future[Any]:
        """``start`` with a future for the call's outcome, resolved once its
        slot is given back."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if not future.cancelled():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

        self.start(call_id, fn, *args, ends_at=ends_at, on_done=settle)
        return future

    def start(
        self,
        call_id: int,
        fn: Callable[..., Any],
        *args: Any,
        ends_at: float | None = None,
        on_done: Callable[[Any, BaseException | None], None],
        ahead: tuple[float, Callable[[], None], int] | None = None,
    ) -> None:
        """Take a slot and run ``fn(*args)`` on an engine thread (``ends_at``:
        record it as a running batch). When the call really ends (even after a
        timeout gave up on it) the slot is given back (``on_free``), then
        ``on_done(result, error)`` runs, on the event loop. ``ahead`` =
        (predicted seconds, on_start): hand the call over while no slot is
        free; ``on_start`` runs (on the loop) once a slot passes to it;
        ``requests``: how many it answers (``waiting_requests``). Raises
        RuntimeError, with the slot given back, once shut down."""
        if ends_at is not None:
            self.running[call_id] = ends_at
        if ahead is None:
            self.free -= 1
        else:
            self._waiting.append((call_id, *ahead))
            self.waiting_requests += ahead[2]

        def finish(result: Any, error: BaseException | None) -> None:
            self.running.pop(call_id, None)
            try:
                if self._waiting:
                    # The thread this call held has taken the call handed ahead.
                    next_id, seconds, on_start, requests = self._waiting.popleft()
                    self.waiting_requests -= requests
                    if next_id in self.running:
                        self.running[next_id] = time.monotonic() + seconds
                    on_start()
                else:
                    self.free += 1
                self._on_free()
            finally:
                on_done(result, error)

        try:
            self.threads.post(asyncio.get_running_loop(), finish, fn, *args)
        except RuntimeError:
            self.running.pop(call_id, None)
            if ahead is None:
                self.free += 1
            else:
                self._waiting.pop()
                self.waiting_requests -= ahead[2]
            raise

    def shutdown(self) -> None:
        # Idle threads exit at once; a hung one would block forever.
        self.threads.shutdown(wait=not self.hung)
