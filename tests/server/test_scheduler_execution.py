"""Batches on the engine through the scheduler: merge and split, padding,
failures confined to their batch, inline runs."""

from __future__ import annotations

import asyncio
import math
import threading

import numpy as np
import pytest
from scheduler_doubles import GatedEngine, hold_first_batch, request, scheduler

from inferd.server.errors import EngineFailure, Unavailable
from inferd.server.observer import NULL_VERSION_OBSERVER
from inferd.server.request import InferRequest
from inferd.server.scheduler.execution import (
    Executor,
    merge_inputs,
    split_outputs,
    union_outputs,
)
from inferd.server.scheduler.health import Health
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.planners import Plan
from inferd.server.scheduler.queue import Entry
from inferd.server.scheduler.records import Counters
from inferd.server.scheduler.slots import Slots
from inferd.server.stats import ModelStats


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


# -- the parts on their own ------------------------------------------------------------------


def test_merge_pads_with_the_last_row_and_leaves_a_lone_request_uncopied() -> None:
    a = {"x": np.array([[1.0], [2.0]])}
    b = {"x": np.array([[3.0]])}
    assert merge_inputs([a], 0) is a
    merged = merge_inputs([a, b], 2)
    assert merged["x"][:, 0].tolist() == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_union_of_requested_outputs_is_none_when_anyone_wants_all() -> None:
    assert union_outputs([("b", "a"), ("a", "c")]) == ["b", "a", "c"]
    assert union_outputs([("a",), ()]) is None


def test_split_hands_each_request_a_view_of_its_rows_and_names() -> None:
    loop = asyncio.new_event_loop()
    try:
        wants_y = InferRequest({"x": np.zeros((1, 2))}, ("y",), 1)
        one = Entry(wants_y, 1.0, 0.0, loop.create_future())
        two = Entry(InferRequest({"x": np.zeros((2, 2))}, (), 2), 1.0, 0.0, loop.create_future())
    finally:
        loop.close()
    outputs = {"y": np.arange(4.0), "z": np.arange(4.0) * 10}
    first, second = split_outputs(outputs, [one, two])
    assert list(first) == ["y"] and first["y"].tolist() == [0.0]
    assert second["y"].tolist() == [1.0, 2.0] and second["z"].tolist() == [10.0, 20.0]
    assert np.shares_memory(second["y"], outputs["y"])


async def test_a_slot_is_held_until_the_call_really_ends() -> None:
    freed: list[int] = []
    slots = Slots(2, "t", lambda: freed.append(slots.free))
    gate = threading.Event()
    future = slots.run(slots.next_id(), gate.wait, 5, ends_at=123.0)
    assert slots.free == 1 and list(slots.running.values()) == [123.0] and not slots.idle
    gate.set()
    await asyncio.wrap_future(future)
    for _ in range(100):
        if freed:
            break
        await asyncio.sleep(0.001)
    assert freed == [2] and slots.idle and not slots.running
    slots.shutdown()
    with pytest.raises(RuntimeError):
        slots.run(slots.next_id(), gate.wait, 5, ends_at=1.0)
    assert slots.free == 2 and not slots.running  # given back on failure


async def test_an_engine_call_past_its_timeout_is_answered_and_marks_the_version_unhealthy() -> (
    None
):
    engine = GatedEngine()
    engine.gate.clear()
    options = BatchingOptions(max_batch_size=4, engine_timeout_s=0.05)
    slots = Slots(1, "t", lambda: None)
    unhealthy: list[str] = []
    health = Health(
        "t",
        options,
        slots,
        None,
        on_change=lambda: unhealthy.append(health.reason),
        on_unhealthy=lambda error: None,
        on_recovered=lambda: None,
        closing=lambda: True,  # no recovery loop in this test
    )
    latency = LatencyModel()
    executor = Executor(
        engine,
        options,
        slots,
        latency,
        ModelStats(),
        Counters(),
        NULL_VERSION_OBSERVER,
        health,
        name="t",
        history=8,
    )
    req = request(1.0)
    entry = Entry(req, math.inf, 0.0, asyncio.get_running_loop().create_future())
    executor.launch([entry], Plan(1, 1, "test"), 1, 0.0)
    with pytest.raises(Unavailable, match="engine timeout of 50 ms"):
        await asyncio.wait_for(entry.future, 5)
    assert len(slots.hung) == 1 and slots.free == 0  # the hung call keeps its slot
    assert not health.healthy and unhealthy == [health.reason] and "50 ms" in health.reason
    engine.gate.set()
    for _ in range(500):
        if slots.free == 1 and not slots.hung:
            break
        await asyncio.sleep(0.01)
    assert slots.free == 1 and not slots.hung and not executor.batches  # late result dropped
    slots.shutdown()
