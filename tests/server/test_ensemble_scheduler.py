"""The ensemble scheduler without a server: which steps overlap, what each
step is given, and how a failure ends the request (a recording step runner
stands in for the data plane)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from google.protobuf import text_format

from inferd.protos import model_config_pb2
from inferd.server.ensemble.link import StepAnswer, StepCall, StepLink
from inferd.server.ensemble.plan import build_plan
from inferd.server.ensemble.scheduler import EnsembleScheduler
from inferd.server.errors import InvalidArgument, Unavailable
from inferd.server.model_io import ModelIO, TensorInfo
from inferd.server.request import InferRequest
from inferd.server.stats import ModelStats
from tests.ensemble_models import step

IO = ModelIO({"x": TensorInfo("x", "FP32", (-1, 4))}, {"y": TensorInfo("y", "FP32", (-1, 4))}, 8)


def _scheduler(*steps: str, limit: int = 0) -> tuple[EnsembleScheduler, StepLink]:
    text = (
        'name: "e" platform: "ensemble" max_batch_size: 8 '
        'input { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } '
        'output { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } '
        f"ensemble_scheduling {{ max_inflight_requests: {limit} {' '.join(steps)} }}"
    )
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    link = StepLink()
    return EnsembleScheduler(build_plan(config), link, ModelStats()), link


class Runner:
    """Answers every step with x + 1 once released; records the calls and
    how many ran at once."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[StepCall] = []
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        self.fail = fail

    async def __call__(self, call: StepCall) -> StepAnswer:
        self.calls.append(call)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        if call.model == self.fail:
            raise Unavailable(f"model '{call.model}' is not ready")
        total = sum(call.inputs.values())
        request = InferRequest(dict(call.inputs), call.outputs, 2, queue_ns=5, compute_infer_ns=7)
        return StepAnswer({"y": total + 1}, IO, request)


def _request(**parameters: object) -> InferRequest:
    return InferRequest(
        {"x": np.zeros((2, 4), np.float32)}, (), 2, parameters=parameters, deadline=123.0
    )


DIAMOND = (
    step("add2", {"a": "s", "b": "t"}, {"y": "y"}),
    step("scale", {"x": "x"}, {"y": "s"}),
    step("shift", {"x": "x"}, {"y": "t"}),
)


async def test_independent_steps_overlap_and_the_join_waits_for_both() -> None:
    scheduler, link = _scheduler(*DIAMOND)
    runner = Runner()
    link.bind(runner)
    assert not scheduler.chain
    task = asyncio.create_task(scheduler.submit(_request(timeout=5, mode="fast")))
    for _ in range(5):
        await asyncio.sleep(0)
    assert sorted(c.model for c in runner.calls) == ["scale", "shift"]  # add2 not yet
    runner.release.set()
    outputs = await task
    assert runner.most == 2
    assert [c.model for c in runner.calls][-1] == "add2"
    np.testing.assert_array_equal(outputs["y"], np.full((2, 4), 3, np.float32))
    for call in runner.calls:
        assert call.deadline == 123.0  # the request's deadline: its remaining budget
        assert call.parameters == {"mode": "fast"}  # Triton's timeout is the deadline now
        assert call.outputs == ("y",)
    # The ensemble's queue and compute are its steps' summed, one count per request.
    assert scheduler.stats.queue.count == 1 and scheduler.stats.queue.ns == 15
    assert scheduler.stats.compute_infer.ns == 21


async def test_a_chain_runs_its_steps_in_turn() -> None:
    scheduler, link = _scheduler(
        step("scale", {"x": "x"}, {"y": "s"}), step("shift", {"x": "s"}, {"y": "y"})
    )
    runner = Runner()
    runner.release.set()
    link.bind(runner)
    assert scheduler.chain
    outputs = await scheduler.submit(_request())
    np.testing.assert_array_equal(outputs["y"], np.full((2, 4), 2, np.float32))
    assert runner.most == 1
    # Two steps that both read only the ensemble's input may overlap: not a chain.
    fan_out, _ = _scheduler(
        step("scale", {"x": "x"}, {"y": "s"}), step("shift", {"x": "x"}, {"y": "y"})
    )
    assert not fan_out.chain


async def test_a_failing_step_cancels_the_others_and_names_itself() -> None:
    scheduler, link = _scheduler(*DIAMOND)
    runner = Runner(fail="scale")
    link.bind(runner)
    task = asyncio.create_task(scheduler.submit(_request()))
    await asyncio.sleep(0)
    runner.release.set()
    with pytest.raises(Unavailable, match=r"ensemble 'e' step 2 \(model 'scale'\): model"):
        await task
    assert "add2" not in [c.model for c in runner.calls]
    assert scheduler.pending == 0


async def test_max_inflight_requests_bounds_each_step_over_all_requests() -> None:
    scheduler, link = _scheduler(step("scale", {"x": "x"}, {"y": "y"}), limit=2)
    runner = Runner()
    link.bind(runner)
    tasks = [asyncio.create_task(scheduler.submit(_request())) for _ in range(5)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert runner.running == 2  # the other three wait at the step's gate
    runner.release.set()
    await asyncio.gather(*tasks)
    assert runner.most == 2 and len(runner.calls) == 5


async def test_an_unbound_link_is_unavailable() -> None:
    scheduler, _ = _scheduler(step("scale", {"x": "x"}, {"y": "y"}))
    with pytest.raises(Unavailable, match="no data plane"):
        await scheduler.submit(_request())


async def test_closing_refuses_new_requests() -> None:
    scheduler, link = _scheduler(step("scale", {"x": "x"}, {"y": "y"}))
    link.bind(Runner())
    await scheduler.close()
    with pytest.raises(Unavailable, match="unloading"):
        await scheduler.submit(_request())


def test_a_step_request_is_checked_against_the_version_that_runs_it() -> None:
    from inferd.server.ensemble.tensors import step_request

    call = StepCall("e", 1, "m", "", {"x": np.zeros((2, 3), np.float32)}, ("y",), {}, None, 0, None)
    with pytest.raises(InvalidArgument, match=r"input 'x' has shape \[2, 3\], the model takes"):
        step_request(call, IO)
    wrong = StepCall("e", 1, "m", "", {"x": np.zeros((2, 4), np.int32)}, ("y",), {}, None, 0, None)
    with pytest.raises(InvalidArgument, match="input 'x' is int32, the model takes FP32"):
        step_request(wrong, IO)
    good = StepCall("e", 1, "m", "", {"x": np.zeros((2, 4), np.float32)}, ("y",), {}, 9.0, 0, None)
    request = step_request(good, IO)
    assert request.rows == 2 and request.deadline == 9.0
