"""Batches on the engine through the scheduler: merge and split, padding,
failures confined to their batch, inline runs."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from scheduler_doubles import GatedEngine, hold_first_batch, request, scheduler

from inferd.server.errors import EngineFailure
from inferd.server.scheduler.latency import LatencyModel


async def test_requests_queued_behind_a_batch_merge_and_split_back() -> None:
    engine = GatedEngine()
    sched = scheduler(engine)
    first = await hold_first_batch(sched, engine)
    tasks = [
        asyncio.create_task(sched.submit(request(float(v), rows=r)))
        for v, r in ((1, 1), (2, 3), (3, 2))
    ]
    await asyncio.sleep(0.01)
    engine.gate.set()
    results = await asyncio.gather(*tasks)
    await first
    assert engine.batches[1] == [1.0, 2.0, 2.0, 2.0, 3.0, 3.0]  # one batch of 6 rows
    for (value, rows), out in zip(((1, 1), (2, 3), (3, 2)), results, strict=True):
        expected = np.full((rows, 2), value * 2, dtype=np.float32)
        expected[:, 1] = np.arange(rows) * 2
        np.testing.assert_array_equal(out["y"], expected)
    assert sched.stats.execution_count == 2
    assert sched.batches[-1].rows == 6 and sched.batches[-1].requests == 3
    await sched.close()


async def test_engine_failure_fails_only_its_own_batch() -> None:
    engine = GatedEngine()
    sched = scheduler(engine)
    engine.fail_next = True
    with pytest.raises(EngineFailure, match="boom"):
        await sched.submit(request(1.0))
    out = await sched.submit(request(2.0))
    assert out["y"][0, 0] == 4.0
    await sched.close()


async def test_padding_to_an_engine_size_returns_only_real_rows() -> None:
    engine = GatedEngine()
    sched = scheduler(engine, engine_sizes=(1, 4, 8))
    first = await hold_first_batch(sched, engine)
    tasks = [asyncio.create_task(sched.submit(request(float(v)))) for v in (1, 2, 3)]
    await asyncio.sleep(0.01)
    engine.gate.set()
    results = await asyncio.gather(*tasks)
    await first
    assert len(engine.batches[1]) == 4  # 3 rows padded to the engine's size 4
    assert [r["y"].shape for r in results] == [(1, 2)] * 3
    assert sched.batches[-1].size == 4 and sched.batches[-1].rows == 3
    await sched.close()


async def test_fast_batches_can_run_inline_on_the_event_loop_thread() -> None:
    threads: list[str] = []

    class Recording(GatedEngine):
        def infer(self, inputs, outputs=None):  # type: ignore[no-untyped-def]
            threads.append(threading.current_thread().name)
            return super().infer(inputs, outputs)

    latency = LatencyModel()
    for s in range(1, 9):
        latency.observe(s, 0.0001)
    inline = scheduler(Recording(), latency, inline_max_s=0.001)
    out = await inline.submit(request(3.0, rows=2))
    threaded = scheduler(Recording(), latency)
    await threaded.submit(request(3.0))
    assert out["y"][0, 0] == 6.0 and inline.stats.execution_count == 1
    assert threads[0] == threading.current_thread().name  # the loop's own thread
    assert threads[1] != threading.current_thread().name
    await inline.close()
    await threaded.close()
