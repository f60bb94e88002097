"""The scheduler's telemetry hooks, with a controllable engine (the only way
to hold a batch mid-execution and to expire a queued request on purpose)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from opentelemetry.trace import StatusCode
from telemetry_helpers import MakeTracing

from inferd.engines import Engine, EngineError, Signature, TensorSpec
from inferd.server.errors import DeadlineExceeded, EngineFailure, Unavailable
from inferd.server.observer import Queued, VersionObserver
from inferd.server.request import InferRequest
from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.records import BatchRecord
from inferd.server.stats import ModelStats
from inferd.server.telemetry import VersionTelemetry


class Gated(Engine):
    """y = x, held while ``gate`` is clear."""

    max_concurrency = 1

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail_next = False

    @property
    def signature(self) -> Signature:
        spec = TensorSpec("x", np.dtype(np.float32), (-1, 2))
        return Signature(inputs=(spec,), outputs=(TensorSpec("y", spec.dtype, spec.shape),))

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        self.started.set()
        self.gate.wait(10)
        if self.fail_next:
            self.fail_next = False
            raise EngineError("boom")
        return {"y": inputs["x"]}

    def close(self) -> None:
        pass


class Recorder(VersionObserver):
    __slots__ = ("events", "peak", "pending", "raise_in")

    def __init__(self, raise_in: str = "") -> None:
        self.events: list[tuple[Any, ...]] = []
        self.pending = 0
        self.peak = 0
        self.raise_in = raise_in

    def _maybe_raise(self, hook: str) -> None:
        if hook == self.raise_in:
            raise RuntimeError(f"{hook} broke")

    def on_pending(self, delta: int) -> None:
        self.pending += delta
        self.peak = max(self.peak, self.pending)

    def on_refused(self, reason: str) -> None:
        self.events.append(("refused", reason))

    def on_expired(self, entry: Queued, reason: str, now: float) -> None:
        self.events.append(("expired", reason, entry.request.id))

    def on_cancelled(self, entry: Queued, now: float) -> None:
        self.events.append(("cancelled", entry.request.id))

    def on_dispatch(
        self, entries: Sequence[Queued], reason: str, slack: float, now: float
    ) -> object:
        token = object()
        self.events.append(("dispatch", [e.request.id for e in entries], token))
        self._maybe_raise("on_dispatch")
        return token

    def on_executed(self, token: object, entries: Sequence[Queued], record: BatchRecord) -> None:
        self.events.append(("executed", [e.request.id for e in entries], token, record))
        self._maybe_raise("on_executed")

    def on_failed(
        self, token: object, entries: Sequence[Queued], error: BaseException, now: float
    ) -> None:
        self.events.append(("failed", [e.request.id for e in entries], token, error))
        self._maybe_raise("on_failed")


def _request(name: str, deadline: float | None = None, trace: object = None) -> InferRequest:
    x = np.zeros((1, 2), np.float32)
    return InferRequest(
        inputs={"x": x}, outputs=(), rows=1, id=name, deadline=deadline, trace=trace
    )


def _scheduler(
    engine: Gated, observer: VersionObserver, latency: LatencyModel | None = None, **options: Any
) -> BatchingScheduler:
    options.setdefault("max_batch_size", 8)
    return BatchingScheduler(
        engine, ModelStats(), BatchingOptions(**options), latency, observer=observer
    )


async def _hold(sched: BatchingScheduler, engine: Gated) -> asyncio.Task[Any]:
    engine.gate.clear()
    first = asyncio.create_task(sched.submit(_request("first")))
    while not engine.started.is_set():
        await asyncio.sleep(0.001)
    return first


async def test_dispatch_token_comes_back_with_the_outcome() -> None:
    engine, rec = Gated(), Recorder()
    sched = _scheduler(engine, rec)
    first = await _hold(sched, engine)
    rest = [asyncio.create_task(sched.submit(_request(f"r{i}"))) for i in range(3)]
    await asyncio.sleep(0.01)
    assert rec.pending == 4
    engine.gate.set()
    await asyncio.gather(first, *rest)
    dispatches = [e for e in rec.events if e[0] == "dispatch"]
    executed = [e for e in rec.events if e[0] == "executed"]
    assert [d[1] for d in dispatches] == [["first"], ["r0", "r1", "r2"]]
    assert [(e[1], e[2]) for e in executed] == [(d[1], d[2]) for d in dispatches]
    record = executed[1][3]
    assert record.requests == 3 and record.rows == 3 and record.late == 0
    assert record.dispatched <= record.finished and record.actual_s >= 0
    assert rec.pending == 0 and rec.peak == 4
    await sched.close()


async def test_failed_batch_reports_its_token_and_error() -> None:
    engine, rec = Gated(), Recorder()
    sched = _scheduler(engine, rec)
    engine.fail_next = True
    with pytest.raises(EngineFailure):
        await sched.submit(_request("doomed"))
    (dispatch,) = [e for e in rec.events if e[0] == "dispatch"]
    (failed,) = [e for e in rec.events if e[0] == "failed"]
    assert failed[1] == ["doomed"] and failed[2] is dispatch[2]
    assert isinstance(failed[3], EngineFailure)
    await sched.close()


async def test_refusals_expiry_and_cancellation_are_reported_with_reasons() -> None:
    engine, rec = Gated(), Recorder()
    latency = LatencyModel()
    for size in range(1, 9):
        latency.observe(size, 0.02)
    sched = _scheduler(engine, rec, latency, max_queue=2)
    first = await _hold(sched, engine)
    with pytest.raises(DeadlineExceeded):  # predicted to miss: refused at arrival
        await sched.submit(_request("hopeless", deadline=time.monotonic() + 0.001))
    late = asyncio.create_task(sched.submit(_request("late", deadline=time.monotonic() + 0.06)))
    gone = asyncio.create_task(sched.submit(_request("gone")))
    await asyncio.sleep(0.001)
    with pytest.raises(Unavailable, match="queue is full"):
        await sched.submit(_request("extra"))
    gone.cancel()
    await asyncio.sleep(0.1)  # "late" passes its deadline while "first" runs
    engine.gate.set()
    await first
    with pytest.raises(DeadlineExceeded):
        await late
    with pytest.raises(asyncio.CancelledError):
        await gone
    await sched.close()
    with pytest.raises(Unavailable, match="unloading"):
        await sched.submit(_request("after"))
    kinds = [e[:3] if e[0] != "dispatch" else e[:1] for e in rec.events if e[0] != "executed"]
    assert ("refused", "deadline") in kinds
    assert ("refused", "queue_full") in kinds
    assert ("refused", "unloading") in kinds
    assert ("expired", "deadline_passed", "late") in kinds
    assert ("cancelled", "gone") in kinds
    assert sched.counters.refused == {"deadline": 1, "queue_full": 1, "unloading": 1}
    assert rec.pending == 0


@pytest.mark.parametrize("hook", ["on_dispatch", "on_executed", "on_failed"])
async def test_a_broken_hook_never_breaks_serving(
    hook: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine, rec = Gated(), Recorder(raise_in=hook)
    sched = _scheduler(engine, rec)
    engine.fail_next = hook == "on_failed"
    if hook == "on_failed":
        with pytest.raises(EngineFailure):
            await sched.submit(_request("a"))
    else:
        out = await sched.submit(_request("a"))
        assert out["y"].shape == (1, 2)
    assert (await sched.submit(_request("b")))["y"].shape == (1, 2)  # still serving
    assert f"telemetry hook {hook} failed" in caplog.text
    await sched.close()


async def test_queue_spans_record_expiry_and_cancellation(make_tracing: MakeTracing) -> None:
    tracing, exporter = make_tracing()
    engine = Gated()
    sched = _scheduler(engine, VersionTelemetry(None, tracing.version("m", "1")))
    with tracing.tracer.start_as_current_span("caller"):
        spans = {n: tracing.tracer.start_span(n) for n in ("first", "late", "gone")}
    engine.gate.clear()
    first = asyncio.create_task(sched.submit(_request("first", trace=spans["first"])))
    while not engine.started.is_set():
        await asyncio.sleep(0.001)
    late = asyncio.create_task(
        sched.submit(_request("late", deadline=time.monotonic() + 0.05, trace=spans["late"]))
    )
    gone = asyncio.create_task(sched.submit(_request("gone", trace=spans["gone"])))
    await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.sleep(0.1)
    engine.gate.set()
    await first
    with pytest.raises(DeadlineExceeded):
        await late
    with pytest.raises(asyncio.CancelledError):
        await gone
    await sched.close()
    queues = {
        s.parent.span_id: s
        for s in exporter.get_finished_spans()
        if s.name == "queue" and s.parent is not None
    }
    by_request = {n: queues[sp.get_span_context().span_id] for n, sp in spans.items()}
    assert dict(by_request["first"].attributes or {})["inferd.queue.outcome"] == "dispatched"
    expired = by_request["late"]
    assert dict(expired.attributes or {})["inferd.queue.outcome"] == "expired:deadline_passed"
    assert expired.status.status_code is StatusCode.ERROR
    assert dict(expired.attributes or {})["inferd.deadline.slack_ms"] <= 0
    cancelled = by_request["gone"]
    assert dict(cancelled.attributes or {})["inferd.queue.outcome"] == "cancelled"
    assert cancelled.status.status_code is StatusCode.UNSET
    assert not cancelled.links and not expired.links  # they rode in no batch
