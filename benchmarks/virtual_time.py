"""Run the real scheduler on simulated time: an event loop whose clock jumps
to the next timer instead of sleeping, and an engine whose batches take
their time on that clock.

``benchmarks.timed_policies`` runs the scheduler against an engine that
sleeps, so every point costs its length in wall time and a busy host's event
loop lag still leaks into it. Here the same code (``BatchingScheduler``,
admission, planners, queue, warmup) runs on a ``Clock`` that only moves when
the loop has nothing ready: the Python the scheduler runs takes no simulated
time, so a 10 s point runs in well under a second and every run of the same
arrivals gives the same answer. What is left out is exactly the host: event
loop delay, thread hops and stalls (the engine can still stall on purpose).

Only the benchmark process is touched: ``patched`` swaps the ``time`` module
the scheduler modules see for the clock while it is active, and
``VirtualThreads`` stands in for a scheduler's engine threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import selectors
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

#: Modules whose ``time`` is the clock while ``patched`` is active.
PATCHED_MODULES = (
    "inferd.server.scheduler.dispatch",
    "inferd.server.scheduler.rates",
    "inferd.server.scheduler.execution",
    "inferd.server.scheduler.slots",
    "inferd.server.scheduler.warmup",
    "benchmarks.timed_policies",
)


class Clock:
    """Simulated seconds; ``advancing``: engine calls outside the loop
    (warmup) move it by their own time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.advancing = True

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now

    def perf_counter_ns(self) -> int:
        return int(self.now * 1e9)


class _TimeModule(types.SimpleNamespace):
    """What ``time`` reads as in a patched module: the clock for the three
    readings the scheduler takes, the real module for the rest."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(
            monotonic=clock.monotonic,
            perf_counter=clock.perf_counter,
            perf_counter_ns=clock.perf_counter_ns,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def patched(clock: Clock) -> Iterator[None]:
    """Point the scheduler modules' ``time`` at ``clock`` for the block."""
    import importlib

    modules = [importlib.import_module(name) for name in PATCHED_MODULES]
    saved = [m.time for m in modules]  # type: ignore[attr-defined]
    shim = _TimeModule(clock)
    for m in modules:
        m.time = shim  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m, original in zip(modules, saved, strict=True):
            m.time = original  # type: ignore[attr-defined]


class _Selector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Never blocks: with nothing ready it moves the clock by the timeout the
    loop asked for (to its next timer) and reports nothing."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[Any]:
        events: list[Any] = super().select(0)
        if events:
            return events
        if timeout is None:
            raise RuntimeError("simulated time: nothing scheduled and nothing to wait for")
        if timeout > 0:
            self._clock.now += timeout
        return events


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on ``clock``: timers fire in order, none waits."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        super().__init__(_Selector(clock))

    def time(self) -> float:
        return self.clock.now


class VirtualThreads:
    """Stands in for a scheduler's ``EngineThreads``: runs each call on the
    loop thread (the engine does not sleep) when one of ``count`` threads is
    free, in the order posted; the thread is free again once the engine's
    time for the call has passed on the clock, and ``done`` runs after that
    plus ``last_outside``'s time outside the engine (thread hops, a busy
    loop); the result's engine nanoseconds are the engine's time alone."""

    def __init__(
        self,
        last_seconds: Callable[[], float],
        last_outside: Callable[[], float] = lambda: 0.0,
        count: int = 1,
    ) -> None:
        self._last_seconds = last_seconds
        self._last_outside = last_outside
        self._idle = count
        self._jobs: collections.deque[
            tuple[Callable[[Any, BaseException | None], None], Callable[..., Any], tuple[Any, ...]]
        ] = collections.deque()

    def post(
        self,
        loop: asyncio.AbstractEventLoop,
        done: Callable[[Any, BaseException | None], None],
        fn: Callable[..., Any],
        *args: Any,
    ) -> None:
        """``EngineThreads.post``: ``done(result, error)`` once the engine's
        time for the call has passed on the clock."""
        self._jobs.append((done, fn, args))
        if self._idle:
            self._idle -= 1
            self._next(loop)

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        """A thread takes the next job, or goes idle."""
        if not self._jobs:
            self._idle += 1
            return
        done, fn, args = self._jobs.popleft()
        try:
            outputs, _, _, _ = fn(*args)
        except BaseException as exc:
            loop.call_soon(done, None, exc)
            loop.call_soon(self._next, loop)
            return
        # A call that never reached the engine (all its requests late) took no time.
        seconds = self._last_seconds() if outputs else 0.0
        now = loop.time()
        loop.call_at(now + seconds, self._next, loop)
        loop.call_at(
            now + seconds + self._last_outside(), done, (outputs, 0, int(seconds * 1e9), 0), None
        )

    def shutdown(self, *, wait: bool) -> None:
        return None


def run(clock: Clock, coroutine: Any) -> Any:
    """Run ``coroutine`` to completion on ``clock`` (scheduler modules patched)."""
    loop = VirtualLoop(clock)
    try:
        with patched(clock):
            return loop.run_until_complete(coroutine)
    finally:
        loop.close()
