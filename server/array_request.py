"""A request made of numpy arrays inside the server (a Python model's BLS
call), checked against the model as the front ends' decoders check theirs."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from inferd.protos.datatypes import NUMPY_DTYPES
from inferd.server.errors import InvalidArgument
from inferd.server.model_io import ModelIO
from inferd.server.request import InferRequest
from inferd.server.reshape import to_model


def array_request(
    inputs: Mapping[str, np.ndarray], outputs: tuple[str, ...], io: ModelIO
) -> InferRequest:
    """Raises ``InvalidArgument`` naming the input or output that is wrong."""
    arrays: dict[str, np.ndarray] = {}
    for name, array in inputs.items():
        info = io.inputs.get(name)
        if info is None:
            raise InvalidArgument(
                f"unknown input '{name}'; the model's inputs are {sorted(io.inputs)}"
            )
        want = NUMPY_DTYPES[info.datatype]
        if info.datatype == "BYTES" and array.dtype.kind in "SUO":
            # Text as the protocol carries it: bytes (a model may hand over str).
            array = np.vectorize(_as_bytes, otypes=[object])(array)
        if array.dtype != want:
            raise InvalidArgument(
                f"input '{name}' has dtype {array.dtype}, the model expects {info.datatype}"
            )
        shape = tuple(array.shape)
        fits = len(shape) == len(info.shape) and all(
            d in (-1, got) for got, d in zip(shape, info.shape, strict=True)
        )
        if not fits:
            raise InvalidArgument(
                f"input '{name}' has shape {list(shape)}, the model expects {list(info.shape)}"
            )
        arrays[name] = to_model(array, info, io.batched)
    missing = [n for n, t in io.inputs.items() if n not in arrays and not t.optional]
    if missing:
        raise InvalidArgument(f"missing input(s) {missing}")
    for name in outputs:
        if name not in io.outputs:
            raise InvalidArgument(
                f"unknown output '{name}'; the model's outputs are {sorted(io.outputs)}"
            )
    rows = 1
    if io.batched and arrays:
        sizes = {a.shape[0] for a in arrays.values()}
        if len(sizes) != 1:
            raise InvalidArgument(f"inputs disagree on the batch dimension: {sorted(sizes)}")
        rows = sizes.pop()
        if not 1 <= rows <= io.max_batch_size:
            raise InvalidArgument(
                f"batch size {rows} is outside 1..{io.max_batch_size} (the model's max_batch_size)"
            )
    return InferRequest(inputs=arrays, outputs=outputs, rows=int(rows))


def _as_bytes(item: object) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode("utf-8")
