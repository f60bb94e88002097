"""Test doubles and helpers for the scheduler tests: a gated engine, requests,
schedulers, and latency models of known shape.

The engine here is a test double on purpose: these tests need to hold a batch
mid-execution and to know exactly which rows ran in which batch, which a real
onnxruntime session cannot show. The real engine is covered end to end in the
server and client tests.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence

import numpy as np
from engine_doubles import DoublingEngine

from inferd.engines import EngineError
from inferd.server.request import InferRequest
from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.planners import AdaptivePlanner, Plan, QueueState
from inferd.server.stats import ModelStats


class GatedEngine(DoublingEngine):
    """y = 2x. Each call records the first column of its batch, waits on
    ``gate`` while it is closed, then sleeps ``seconds``."""

    def __init__(self, *, concurrency: int = 1, seconds: float = 0.0, width: int = 2) -> None:
        super().__init__(width)
        self.max_concurrency = concurrency
        self.seconds = seconds
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.batches: list[list[float]] = []
        self.fail_next = False

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append([float(v) for v in x[:, 0]])
        self.started.set()
        self.gate.wait(10)
        if self.seconds:
            time.sleep(self.seconds)
        if self.fail_next:
            self.fail_next = False
            raise EngineError("boom")
        return {"y": x * 2}


def request(
    value: float, rows: int = 1, deadline: float | None = None, **kw: object
) -> InferRequest:
    x = np.full((rows, 2), value, dtype=np.float32)
    x[:, 1] = np.arange(rows)
    return InferRequest(inputs={"x": x}, outputs=(), rows=rows, deadline=deadline, **kw)  # type: ignore[arg-type]


def scheduler(
    engine: GatedEngine, latency: LatencyModel | None = None, **options: object
) -> BatchingScheduler:
    options.setdefault("max_batch_size", 8)
    return BatchingScheduler(engine, ModelStats(), BatchingOptions(**options), latency)  # type: ignore[arg-type]


async def hold_first_batch(
    sched: BatchingScheduler, engine: GatedEngine
) -> asyncio.Task[dict[str, np.ndarray]]:
    """Start a batch and keep it running until ``engine.gate`` is set."""
    engine.gate.clear()
    first = asyncio.create_task(sched.submit(request(-1.0)))
    while not engine.started.is_set():
        await asyncio.sleep(0.001)
    return first


async def queue_behind_first_batch(
    sched: BatchingScheduler, engine: GatedEngine, value: float
) -> tuple[asyncio.Task[dict[str, np.ndarray]], asyncio.Task[dict[str, np.ndarray]]]:
    """Hold a first batch running, then queue one request of ``value`` behind it."""
    first = await hold_first_batch(sched, engine)
    queued = asyncio.create_task(sched.submit(request(value)))
    while sched.queued == 0:
        await asyncio.sleep(0)
    return first, queued


def affine_latency(base: float, per_row: float, sizes: range) -> LatencyModel:
    model = LatencyModel()
    for s in sizes:
        model.observe(s, base + per_row * s)
    return model


def plan_queue(queue: list[tuple[int, float]], arrival_rate: float = 0) -> Plan:
    """Plan, at t=0 with no reserve, over ``queue`` (rows, deadline) on an
    engine taking 1 ms + 1 ms per row, up to 32 rows."""
    planner = AdaptivePlanner(
        BatchingOptions(max_batch_size=32), affine_latency(0.001, 0.001, range(1, 33))
    )
    planner.reserve = 0.0
    rows = sum(r for r, _ in queue)
    state = QueueState(rows, queue[0][1], 0.0, arrival_rate, queue=lambda: queue)
    return planner.plan(0.0, state)


def expect_no_more_arrivals(sched: BatchingScheduler) -> None:
    """Pin the offered rate at 0 rows/s: admission then counts no later
    arrivals into the last batch's size (``Admission.backlog_seconds``), so a
    test's predictions are the plain sums it states."""
    sched.admission.offered.rate = lambda now: 0.0  # type: ignore[method-assign]
