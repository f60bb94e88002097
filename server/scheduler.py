"""The scheduler seam: the only way a request reaches an engine.

A scheduler admits requests for one model version, decides when and with
whom each runs, and runs the engine in its own executor threads so the event
loop never blocks. ``DirectScheduler`` runs each request on its own (no
batching); the adaptive batcher implements the same interface.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import time

import numpy as np

from engines import Engine, EngineError
from server.errors import DeadlineExceeded, EngineFailure, Unavailable
from server.request import InferRequest
from server.stats import ModelStats


class Scheduler(abc.ABC):
    """Admits requests for one model version and returns their outputs."""

    @abc.abstractmethod
    async def submit(self, request: InferRequest) -> dict[str, np.ndarray]:
        """Outputs for ``request`` (only those it asked for, all if none).

        Raises a ``server.errors`` error when the request is refused, expires
        or its execution fails. Cancelling the awaiting task withdraws a
        request that has not started; one already running finishes and its
        result is dropped."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Refuse new requests, let admitted ones finish, release threads."""

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """Requests admitted and not yet answered."""


class DirectScheduler(Scheduler):
    """One engine call per request, at most ``engine.max_concurrency`` at once."""

    def __init__(self, engine: Engine, stats: ModelStats, name: str = "model") -> None:
        self._engine = engine
        self._stats = stats
        self._slots = asyncio.Semaphore(max(1, engine.max_concurrency))
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, engine.max_concurrency), thread_name_prefix=f"engine-{name}"
        )
        self._pending = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        return self._pending

    async def submit(self, request: InferRequest) -> dict[str, np.ndarray]:
        if self._closing:
            raise Unavailable("model is unloading; retry on another version or replica")
        self._pending += 1
        self._idle.clear()
        try:
            return await self._run(request)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    async def _run(self, request: InferRequest) -> dict[str, np.ndarray]:
        queued = time.monotonic_ns()
        await self._slots.acquire()
        try:
            now = time.monotonic_ns()
            if request.deadline is not None and now / 1e9 >= request.deadline:
                # Late work is never run.
                raise DeadlineExceeded("deadline expired while the request was queued")
            self._stats.record_queue(now - queued)
            loop = asyncio.get_running_loop()
            future = self._executor.submit(self._execute, request)
        except BaseException:
            self._slots.release()
            raise
        # The slot frees when the engine call really ends, even if the caller
        # goes away meanwhile, so concurrency never exceeds the engine's.
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._slots.release))
        outputs, infer_ns = await asyncio.wrap_future(future)
        self._stats.record_execution(request.rows, 1, 0, infer_ns, 0)
        return outputs

    def _execute(self, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        start = time.perf_counter_ns()
        try:
            outputs = self._engine.infer(request.inputs, request.outputs or None)
        except EngineError as exc:
            raise EngineFailure(f"model execution failed: {exc}") from None
        except MemoryError:
            raise EngineFailure("model execution ran out of memory") from None
        return outputs, time.perf_counter_ns() - start

    async def close(self) -> None:
        self._closing = True
        await self._idle.wait()
        self._executor.shutdown(wait=True)
