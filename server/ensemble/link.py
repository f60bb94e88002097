"""What an ensemble step hands the data plane and gets back, through the
late-bound ``ModelLink`` (server/model_link.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
