"""A Python model's response against its config: every output declared,
of the declared datatype and shape, with the request's rows. Shared by the
server (``engine``) and the test helper (``testing``), so a unit test fails
where the server would."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from inferd.engines.base import EngineRequestError, RequestCall, RequestResult, Signature
from inferd.protos.datatypes import v2_datatype


def checked_outputs(
    model: str, signature: Signature, batched: bool, call: RequestCall, result: RequestResult
) -> RequestResult:
    """The outputs the caller asked for (all declared ones when it named
    none), or an INTERNAL error naming the first output that is wrong.
    ``batched``: the config's ``max_batch_size`` > 0; only then must each
    output have the request's rows (an unbatched model's -1 first dimension
    is any size, not a batch)."""
    if isinstance(result, EngineRequestError):
        return result
    rows = next(iter(call.inputs.values())).shape[0] if batched and call.inputs else 1
    for name, array in result.items():
        problem = output_problem(signature, name, array, rows if batched else None)
        if problem is not None:
            return EngineRequestError(f"model '{model}': output '{name}' {problem}")
    wanted = call.outputs or tuple(o.name for o in signature.outputs)
    missing = [n for n in wanted if n not in result]
    if missing:
        return EngineRequestError(
            f"model '{model}': output '{missing[0]}' is missing from the model's response"
        )
    return {n: result[n] for n in wanted}


def output_problem(
    signature: Signature, name: str, array: np.ndarray, rows: int | None
) -> str | None:
    """What is wrong with one output (None: nothing); ``rows``: the
    request's batch size when the model batches."""
    spec = signature.output(name)
    if spec is None:
        declared = ", ".join(repr(o.name) for o in signature.outputs)
        return f"is not declared in the model's config (it declares {declared})"
    if array.dtype != spec.dtype:
        return (
            f"has datatype {_datatype(array.dtype)}, but the config declares "
            f"{_datatype(spec.dtype)}"
        )
    shape = tuple(array.shape)
    fits = len(shape) == len(spec.shape) and all(
        want in (-1, got) for got, want in zip(shape, spec.shape, strict=True)
    )
    if not fits:
        return f"has shape {list(shape)}, but the config declares {list(spec.shape)}"
    if rows is not None and shape[0] != rows:
        return f"has {shape[0]} rows for a request of {rows}"
    return None


def _datatype(dtype: np.dtype) -> str:
    try:
        return v2_datatype(dtype)
    except ValueError:
        return str(dtype)


def as_request_arrays(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Text arrays (numpy ``str``/``bytes``) as BYTES tensors (``object`` of ``bytes``)."""
    arrays: dict[str, np.ndarray] = {}
    for name, array in inputs.items():
        array = np.asarray(array)
        if array.dtype.kind in "SU":
            flat = [v.encode() if isinstance(v, str) else bytes(v) for v in array.ravel().tolist()]
            array = np.array(flat, dtype=object).reshape(array.shape)
        arrays[name] = array
    return arrays
