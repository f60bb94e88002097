"""``EnsembleScheduler``: an ensemble's requests, run step by step through
the data plane (``StepLink``), so each step is queued and batched by its own
model's scheduler together with that model's other traffic.

A step starts as soon as the steps it reads from have answered; independent
steps run at once (at most ``max_inflight_requests`` per step over all
requests, when set). Every step gets what is left of the request's deadline,
its priority and parameters (less Triton's ``timeout``, which the deadline
already holds). The first failing step fails the request (with the step's
status, its message naming the step) and cancels the steps still running.

Statistics, as Triton keeps them for an ensemble: the data plane records
success, failure and rows for the ensemble itself; here the queue and
compute durations of its steps are summed into the ensemble's (one count per
ensemble request), while each composing model keeps its own statistics.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from inferd.server.ensemble.link import StepCall, StepLink
from inferd.server.ensemble.plan import EnsemblePlan, Step
from inferd.server.ensemble.tensors import config_outputs
from inferd.server.errors import InferdError, Unavailable
from inferd.server.request import InferRequest, ParamValue
from inferd.server.scheduler.base import Scheduler
from inferd.server.stats import ModelStats

#: Request parameters not passed on to steps.
_NOT_PASSED = frozenset({"timeout"})


class EnsembleScheduler(Scheduler):
    def __init__(self, plan: EnsemblePlan, link: StepLink, stats: ModelStats) -> None:
        self.plan = plan
        self.link = link
        self.stats = stats
        #: Each step waits for the one before it: no two can overlap, so they
        #: run in turn without tasks.
        self.chain = all(i - 1 in step.after for i, step in enumerate(plan.steps) if i)
        #: ``max_inflight_requests``: one gate per step, when set.
        self._gates = (
            {step.index: asyncio.Semaphore(plan.max_inflight) for step in plan.steps}
            if plan.max_inflight
            else {}
        )
        self._pending = 0
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        return self._pending

    async def close(self) -> None:
        self._closing = True
        await self._idle.wait()

    async def submit(self, request: InferRequest) -> dict[str, np.ndarray]:
        if self._closing:
            raise Unavailable(f"ensemble '{self.plan.name}' is unloading; retry")
        self._pending += 1
        self._idle.clear()
        try:
            return await self._run(request)
        finally:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()

    async def _run(self, request: InferRequest) -> dict[str, np.ndarray]:
        tensors: dict[str, np.ndarray] = dict(request.inputs)
        parameters = {k: v for k, v in request.parameters.items() if k not in _NOT_PASSED}
        timings: list[InferRequest] = []
        if self.chain:
            for step in self.plan.steps:
                await self._step(step, request, parameters, tensors, timings)
        else:
            await self._graph(request, parameters, tensors, timings)
        self._record(timings)
        wanted = request.outputs or self.plan.outputs
        return {name: tensors[name] for name in wanted}

    async def _graph(
        self,
        request: InferRequest,
        parameters: dict[str, ParamValue],
        tensors: dict[str, np.ndarray],
        timings: list[InferRequest],
    ) -> None:
        tasks: list[asyncio.Task[None]] = []

        async def after(step: Step) -> None:
            for index in step.after:
                await tasks[index]  # re-raises a failed producer's error
            await self._step(step, request, parameters, tensors, timings)

        for step in self.plan.steps:  # producers first: ``after`` indexes earlier tasks
            tasks.append(asyncio.create_task(after(step)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _step(
        self,
        step: Step,
        request: InferRequest,
        parameters: dict[str, ParamValue],
        tensors: dict[str, np.ndarray],
        timings: list[InferRequest],
    ) -> None:
        # An ensemble input the caller left out (an optional one) is left out here too.
        inputs = {key: tensors[name] for key, name in step.inputs if name in tensors}
        call = StepCall(
            ensemble=self.plan.name,
            step=step.index,
            model=step.model,
            version=step.version,
            inputs=inputs,
            outputs=step.output_names,
            parameters=parameters,
            deadline=request.deadline,
            priority=request.priority,
            parent=request.trace,
        )
        gate = self._gates.get(step.index)
        try:
            if gate is None:
                answer = await self.link.run(call)
            else:
                async with gate:
                    answer = await self.link.run(call)
        except InferdError as exc:
            if exc.message.startswith(f"ensemble '{self.plan.name}'"):
                raise
            raise type(exc)(f"ensemble '{self.plan.name}' {step.where}: {exc.message}") from None
        outputs = config_outputs(answer.outputs, answer.io)
        for key, name in step.outputs:
            tensors[name] = outputs[key]
        timings.append(answer.request)

    def _record(self, steps: list[InferRequest]) -> None:
        stats = self.stats
        stats.queue.add(sum(r.queue_ns for r in steps))
        stats.compute_input.add(sum(r.compute_input_ns for r in steps))
        stats.compute_infer.add(sum(r.compute_infer_ns for r in steps))
        stats.compute_output.add(sum(r.compute_output_ns for r in steps))
