"""Triton's ``reshape``: clients send and receive a tensor in the config's
``dims``, the model sees ``reshape.shape``.

The batch dimension (when the model batches) is kept as it is; only the
per-row dims change. Variable dims (-1) carry over in order: the first -1 of
``dims`` gives the value of the first -1 of ``reshape.shape``, and so on
(Triton's ``InferenceRequest::Normalize`` and ``InferenceResponse::Output::
Reshape``). The config check (``reshape_problem``) is Triton's too, so an
accepted config always maps a valid request onto the model's shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inferd.server.model_io import TensorInfo


def _count(dims: Sequence[int]) -> int:
    """Element count, -1 when any dim is variable, 0 for an empty shape
    (Triton's ``GetElementCount``)."""
    if not dims:
        return 0
    count = 1
    for d in dims:
        if d == -1:
            return -1
        count *= d
    return count


def _chunks(dims: Sequence[int]) -> list[int]:
    """Element counts of the runs between variable dims."""
    chunks, current = [], 1
    for d in dims:
        if d == -1:
            chunks.append(current)
            current = 1
        else:
            current *= d
    chunks.append(current)
    return chunks


def reshape_problem(dims: Sequence[int], shape: Sequence[int], batching: bool) -> str | None:
    """Why ``reshape: { shape }`` cannot stand for ``dims``, or None when it can."""
    if not shape and not batching:
        return "cannot have an empty reshape without batching (scalar tensors are not supported)"
    if any(d < 1 and d != -1 for d in shape):
        return f"reshape {list(shape)}: dimensions must be >= 1, or -1 for a variable size"
    dims_count, shape_count = _count(dims), _count(shape)
    # An empty reshape stands for dims of one element.
    if dims_count != shape_count and (shape_count != 0 or dims_count != 1):
        return f"dims {list(dims)} and reshape {list(shape)} have different sizes"
    if dims_count == -1:
        dims_chunks, shape_chunks = _chunks(dims), _chunks(shape)
        if len(dims_chunks) != len(shape_chunks):
            return (
                f"dims {list(dims)} and reshape {list(shape)} have different numbers of "
                "variable-size dimensions"
            )
        if dims_chunks != shape_chunks:
            return f"dims {list(dims)} and reshape {list(shape)} have different sizes"
    return None


def _remap(
    shape: tuple[int, ...], source: Sequence[int], target: Sequence[int], batched: bool
) -> tuple[int, ...]:
    """``shape`` (laid out as ``source``, after the batch dim) laid out as ``target``."""
    lead, body = (shape[:1], shape[1:]) if batched else ((), shape)
    variable = iter([size for size, d in zip(body, source, strict=False) if d == -1])
    return lead + tuple(next(variable, 1) if d == -1 else d for d in target)


def _config_dims(info: TensorInfo, batched: bool) -> tuple[int, ...]:
    return info.shape[1:] if batched else info.shape


def to_model(array: np.ndarray, info: TensorInfo, batched: bool) -> np.ndarray:
    """An input as the client sent it (already checked against ``dims``), in
    the shape the model sees. No copy: the data's order is unchanged."""
    if info.reshape is None:
        return array
    return array.reshape(_remap(array.shape, _config_dims(info, batched), info.reshape, batched))


def to_config(array: np.ndarray, info: TensorInfo, batched: bool) -> np.ndarray:
    """An output as the model returned it, in the shape the config's ``dims`` say."""
    if info.reshape is None:
        return array
    return array.reshape(_remap(array.shape, info.reshape, _config_dims(info, batched), batched))
