"""How an ensemble reaches its composing models: a late-bound link to the
data plane.

An ensemble's steps must go through the data plane (routing, the composing
model's scheduler and batching, statistics, a trace span per step), but the
data plane sits above the schedulers and is built after the model manager
that loads ensembles. So the manager owns a ``StepLink``, ensembles hold it
from load time, and the data plane binds its step runner into it when it is
built (``DataPlane.__init__``). Imports stay one-directional: this package
never imports the data plane; the data plane fills in the link's callable.
Until the link is bound (a manager without a data plane), a step answers
UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from inferd.server.errors import Unavailable
from inferd.server.model_io import ModelIO
from inferd.server.request import InferRequest, ParamValue


@dataclass(frozen=True, slots=True)
class StepCall:
    """One step of one ensemble request, as the data plane runs it."""

    ensemble: str
    step: int
    model: str
    #: "" lets the model's version policy and routes choose.
    version: str
    #: Ensemble tensors in the config's shape, by the composing model's input names.
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    parameters: dict[str, ParamValue]
    #: The ensemble request's deadline (``time.monotonic()``): what is left
    #: of it is the step's budget.
    deadline: float | None
    priority: int
    #: The ensemble request's trace span (None: not traced).
    parent: object | None


@dataclass(frozen=True, slots=True)
class StepAnswer:
    """What the data plane answers a step with."""

    #: As the composing model returned them (its model shape).
    outputs: dict[str, np.ndarray]
    #: The IO of the version that answered.
    io: ModelIO
    #: The step's request as the data plane decoded it (its timings filled in).
    request: InferRequest


StepRunner = Callable[[StepCall], Awaitable[StepAnswer]]


class StepLink:
    """The data plane's step runner, bound after the ensembles that use it are built."""

    __slots__ = ("_runner",)

    def __init__(self) -> None:
        self._runner: StepRunner | None = None

    def bind(self, runner: StepRunner) -> None:
        self._runner = runner

    @property
    def bound(self) -> bool:
        return self._runner is not None

    async def run(self, call: StepCall) -> StepAnswer:
        runner = self._runner
        if runner is None:
            raise Unavailable(f"ensemble '{call.ensemble}' cannot run: no data plane is serving")
        return await runner(call)
