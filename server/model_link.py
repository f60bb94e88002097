"""How models reach other models of this server: one late-bound link to the
data plane, for ensemble steps and for Python models' BLS calls.

Both must go through the data plane (routing, the callee's scheduler and
batching, statistics), but the data plane sits above the schedulers and is
built after the model manager that loads the models calling it. So the
manager owns a ``ModelLink``; ensembles and Python models hold it from load
time, and the data plane binds its two entries into it when it is built
(``DataPlane.__init__``). Each path keeps its own entry because their
semantics differ: a step is part of its ensemble request's admission and gets
a trace span of its own; a BLS call made while a batch runs is part of that
batch's admission too, but acts for its caller (whose roles the callee
checks), and one made outside a batch is admitted as a request of its own.
Imports stay one-directional: nothing below the data plane imports it. Until
the link is bound (a manager without a data plane), a call answers UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferd.server.ensemble.link import StepAnswer, StepCall
from inferd.server.errors import Unavailable
from inferd.server.identity import Principal

StepRunner = Callable[[StepCall], Awaitable[StepAnswer]]


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One BLS request from a Python model, as the data plane runs it."""

    model: str
    #: "" lets the model's version policy and routes choose.
    version: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    #: ``time.monotonic()`` time, or None.
    deadline: float | None
    #: Who the calling batch runs for; None: a call made outside a batch.
    acting_for: Principal | None = None


#: Runs a BLS request on a model of this server; outputs in the config's shape.
ModelCaller = Callable[[ModelCall], Coroutine[Any, Any, dict[str, np.ndarray]]]


class ModelLink:
    """The data plane's entries, bound after the models that use them are built."""

    __slots__ = ("_call_model", "_run_step")

    def __init__(self) -> None:
        self._run_step: StepRunner | None = None
        self._call_model: ModelCaller | None = None

    def bind(self, run_step: StepRunner, call_model: ModelCaller) -> None:
        self._run_step = run_step
        self._call_model = call_model

    @property
    def bound(self) -> bool:
        return self._run_step is not None

    async def run_step(self, call: StepCall) -> StepAnswer:
        """One step of an ensemble request."""
        run_step = self._run_step
        if run_step is None:
            raise Unavailable(f"ensemble '{call.ensemble}' cannot run: no data plane is serving")
        return await run_step(call)

    async def call_model(self, call: ModelCall) -> dict[str, np.ndarray]:
        """One BLS request (a ``ModelCaller``)."""
        call_model = self._call_model
        if call_model is None:
            raise Unavailable("BLS calls are not available: no data plane is serving")
        return await call_model(call)
