"""Tensors between steps: a step's request built from ensemble tensors and
checked against the composing version that will run it (load-time checks
saw the version then serving; a route may pick another), and a step's
outputs back in their config shape. numpy only, no protocol."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from inferd.protos.datatypes import NUMPY_DTYPES
from inferd.server.ensemble.link import StepCall
from inferd.server.errors import InvalidArgument
from inferd.server.model_io import ModelIO, TensorInfo
from inferd.server.request import InferRequest
from inferd.server.reshape import to_config, to_model


def step_request(call: StepCall, io: ModelIO) -> InferRequest:
    """The composing model's request for ``call``, in its model shape."""
    where = f"ensemble '{call.ensemble}' step {call.step} (model '{call.model}')"
    inputs: dict[str, np.ndarray] = {}
    for name, array in call.inputs.items():
        info = io.inputs.get(name)
        if info is None:
            raise InvalidArgument(f"{where}: the model has no input '{name}'")
        _check(where, f"input '{name}'", array, info)
        inputs[name] = to_model(array, info, io.batched)
    missing = [n for n, t in io.inputs.items() if n not in inputs and not t.optional]
    if missing:
        raise InvalidArgument(f"{where}: missing input(s) {missing}")
    for name in call.outputs:
        if name not in io.outputs:
            raise InvalidArgument(f"{where}: the model has no output '{name}'")
    return InferRequest(
        inputs=inputs,
        outputs=call.outputs,
        rows=_rows(where, inputs, io),
        parameters=dict(call.parameters),
        deadline=call.deadline,
        priority=call.priority,
    )


def config_outputs(outputs: Mapping[str, np.ndarray], io: ModelIO) -> dict[str, np.ndarray]:
    """A step's outputs in the config's shape (what the next step reads)."""
    return {name: to_config(array, io.outputs[name], io.batched) for name, array in outputs.items()}


def _check(where: str, what: str, array: np.ndarray, info: TensorInfo) -> None:
    want = NUMPY_DTYPES[info.datatype]
    if array.dtype != want:
        raise InvalidArgument(f"{where}: {what} is {array.dtype}, the model takes {info.datatype}")
    shape = array.shape
    if len(shape) != len(info.shape) or any(
        d != -1 and d != got for got, d in zip(shape, info.shape, strict=True)
    ):
        raise InvalidArgument(
            f"{where}: {what} has shape {list(shape)}, the model takes {list(info.shape)}"
        )


def _rows(where: str, inputs: Mapping[str, np.ndarray], io: ModelIO) -> int:
    if not io.batched or not inputs:
        return 1
    sizes = {a.shape[0] for a in inputs.values()}
    if len(sizes) != 1:
        raise InvalidArgument(f"{where}: inputs disagree on the batch dimension {sorted(sizes)}")
    rows = int(sizes.pop())
    if not 1 <= rows <= io.max_batch_size:
        raise InvalidArgument(
            f"{where}: batch size {rows} is outside 1..{io.max_batch_size} (its max_batch_size)"
        )
    return rows
