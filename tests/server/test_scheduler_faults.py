"""Fault isolation in the batching scheduler, with a controllable engine (a
hang must be held and released on cue): an engine call that raises, hangs or
runs out of memory fails only its own batch; a hang or repeated failures the
probe confirms mark the version unhealthy until a probe passes.

Over gRPC with real engines: test_fault_isolation.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from engine_doubles import DoublingEngine

from inferd.engines import EngineError
from inferd.server.errors import EngineFailure, ResourceExhausted, Unavailable
from inferd.server.request import InferRequest
from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.stats import ModelStats


class FaultyEngine(DoublingEngine):
    """y = 2x; ``mode`` chooses a fault: "hang" (until ``release``), "raise",
    "oom", or "" (healthy)."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = ""
        self.release = threading.Event()
        self.calls = 0

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.mode == "hang":
            self.release.wait(30)
        elif self.mode == "raise":
            raise EngineError("kernel failed")
        elif self.mode == "oom":
            raise MemoryError
        return {"y": inputs["x"] * 2}


def req(value: float = 1.0, deadline: float | None = None) -> InferRequest:
    x = np.full((1, 2), value, np.float32)
    return InferRequest(inputs={"x": x}, outputs=(), rows=1, deadline=deadline)


def make(engine: FaultyEngine, **options: Any) -> tuple[BatchingScheduler, list[bool]]:
    changes: list[bool] = []
    options.setdefault("max_batch_size", 4)
    options.setdefault("engine_timeout_s", 0.2)
    options.setdefault("probe_interval_s", 0.05)
    sched = BatchingScheduler(
        engine,
        ModelStats(),
        BatchingOptions(**options),
        name="faulty",
        probe=lambda: engine.infer({"x": np.zeros((1, 2), np.float32)}),
    )
    sched.on_health_change = lambda: changes.append(sched.healthy)
    return sched, changes


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_hung_engine_call_is_answered_at_the_timeout_and_keeps_its_slot() -> None:
    engine = FaultyEngine()
    sched, changes = make(engine)
    engine.mode = "hang"
    start = time.monotonic()
    hung = asyncio.create_task(sched.submit(req()))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(sched.submit(req(2.0)))  # behind the hung batch
    with pytest.raises(Unavailable, match="engine timeout of 200 ms"):
        await hung
    assert 0.15 < time.monotonic() - start < 1.0
    with pytest.raises(Unavailable, match="unhealthy"):
        await queued  # answered at once, not left waiting behind the hang
    assert not sched.healthy and changes == [False]
    assert sched.hung == 1
    assert sched.slots.free == 0  # the hung call still holds its slot
    with pytest.raises(Unavailable, match=r"unhealthy .*timeout"):
        await sched.submit(req())
    # The call returns; the next probe passes; the model serves again.
    engine.mode = ""
    engine.release.set()
    await wait_for(lambda: sched.healthy)
    assert changes == [False, True] and sched.hung == 0 and sched.slots.free == 1
    assert (await sched.submit(req(3.0)))["y"][0, 0] == 6.0
    await sched.close()


async def test_probe_that_hangs_keeps_the_model_unhealthy() -> None:
    engine = FaultyEngine()
    sched, _ = make(engine)
    engine.mode = "hang"
    with pytest.raises(Unavailable):
        await sched.submit(req())
    engine.release.set()  # the first call returns...
    engine.release = threading.Event()  # ...but every later one hangs again
    await asyncio.sleep(0.6)  # a few probe intervals and probe timeouts
    assert not sched.healthy
    engine.mode = ""
    engine.release.set()
    await wait_for(lambda: sched.healthy)
    await sched.close()


async def test_repeated_failures_with_a_failing_probe_mark_unhealthy() -> None:
    engine = FaultyEngine()
    sched, changes = make(engine, failure_threshold=3)
    engine.mode = "raise"
    for _ in range(3):
        with pytest.raises(EngineFailure, match="kernel failed"):
            await sched.submit(req())
    await wait_for(lambda: not sched.healthy)
    assert "3 failed batches in a row" in sched.unhealthy_reason
    with pytest.raises(Unavailable, match="unhealthy"):
        await sched.submit(req())
    engine.mode = ""
    await wait_for(lambda: sched.healthy)
    assert changes == [False, True]
    await sched.close()


async def test_failures_that_the_probe_does_not_reproduce_stay_healthy() -> None:
    """Input-dependent failures (the probe's synthetic batch runs fine) must
    not let a caller take the model out of service."""
    engine = FaultyEngine()
    sched, changes = make(engine, failure_threshold=2)
    original = engine.infer

    def picky(inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> Any:
        if float(inputs["x"][0, 0]) == 13.0:
            raise EngineError("bad value")
        return original(inputs, outputs)

    engine.infer = picky  # type: ignore[method-assign]
    for _ in range(4):
        with pytest.raises(EngineFailure):
            await sched.submit(req(13.0))
    await asyncio.sleep(0.1)
    assert sched.healthy and changes == []
    assert (await sched.submit(req(1.0)))["y"][0, 0] == 2.0
    await sched.close()


async def test_memory_error_fails_its_batch_with_resource_exhausted() -> None:
    engine = FaultyEngine()
    sched, _ = make(engine)
    engine.mode = "oom"
    with pytest.raises(ResourceExhausted, match="ran out of memory on a batch of 1 rows"):
        await sched.submit(req())
    engine.mode = ""
    assert (await sched.submit(req(2.0)))["y"][0, 0] == 4.0
    await sched.close()


async def test_close_does_not_wait_for_a_hung_call() -> None:
    engine = FaultyEngine()
    sched, _ = make(engine)
    engine.mode = "hang"
    with pytest.raises(Unavailable):
        await sched.submit(req())
    start = time.monotonic()
    await sched.close()
    assert time.monotonic() - start < 1.0
    assert sched.hung == 1
    engine.release.set()
