"""Request inputs for any model: synthetic ones from its metadata, or read from a file.

Load tools (the locustfile, ``inferd infer``) call models they know nothing
about: the shapes and datatypes come from ModelMetadata, and whether the first
dimension is the batch from ModelConfig's ``max_batch_size``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inferd.protos.datatypes import NUMPY_DTYPES

#: Synthetic values stay small so that index-like integer inputs stay in range.
_INT_HIGH = 8


class InputDataError(ValueError):
    """Inputs cannot be built for this model: the message says which and why."""


def parse_shape_overrides(items: Sequence[str]) -> dict[str, list[int]]:
    """``["ids=4,8", ...]`` -> ``{"ids": [4, 8]}``: sizes for an input's variable dims."""
    shapes: dict[str, list[int]] = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            sizes = [int(d) for d in dims.split(",")] if dims else []
        except ValueError:
            sizes = []
        if not sep or not name or not sizes or min(sizes) < 1:
            raise InputDataError(f"--shape {item!r}: expected NAME=D1,D2,... with sizes >= 1")
        shapes[name] = sizes
    return shapes


def concrete_shape(
    name: str, shape: Sequence[int], *, batched: bool, rows: int, override: Sequence[int] | None
) -> list[int]:
    """The request shape of one input: the batch dim gets ``rows``, variable dims
    the override (the input's dims without the batch dim) or 1."""
    dims = list(shape[1:] if batched else shape)
    if override is not None:
        if len(override) != len(dims):
            raise InputDataError(
                f"input {name!r}: --shape gives {len(override)} dims, the model has {len(dims)} "
                f"({'after the batch dim ' if batched else ''}{dims})"
            )
        for index, (want, have) in enumerate(zip(override, dims, strict=True)):
            if have >= 0 and want != have:
                raise InputDataError(
                    f"input {name!r}: dim {index} is fixed at {have}, --shape gives {want}"
                )
        dims = list(override)
    dims = [d if d >= 0 else 1 for d in dims]
    return [rows, *dims] if batched else dims


def synthetic_array(datatype: str, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Random values of ``datatype`` (BYTES: short byte strings)."""
    if datatype == "BYTES":
        flat = [f"inferd-{i}".encode() for i in rng.integers(0, 1000, int(np.prod(shape)))]
        return np.array(flat, dtype=object).reshape(shape)
    dtype = NUMPY_DTYPES.get(datatype)
    if dtype is None:
        raise InputDataError(f"datatype {datatype!r} is not one the protocol defines")
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(np.bool_)
    if dtype.kind in "iu":
        return rng.integers(0, _INT_HIGH, shape).astype(dtype)
    return rng.random(shape, dtype=np.float32).astype(dtype)


def synthetic_inputs(
    metadata: Mapping[str, Any],
    *,
    max_batch_size: int,
    rows: int = 1,
    shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """One request's inputs for the model that ``metadata`` (ModelMetadata as a
    dict) describes."""
    shapes = shapes or {}
    batched = max_batch_size > 0
    if batched and not 1 <= rows <= max_batch_size:
        raise InputDataError(f"rows {rows} is outside 1..{max_batch_size} (max_batch_size)")
    known = {i["name"] for i in metadata["inputs"]}
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise InputDataError(f"--shape names {unknown}, the model's inputs are {sorted(known)}")
    rng = np.random.default_rng(seed)
    inputs = {}
    for tensor in metadata["inputs"]:
        name = tensor["name"]
        shape = concrete_shape(
            name, tensor["shape"], batched=batched, rows=rows, override=shapes.get(name)
        )
        inputs[name] = synthetic_array(tensor["datatype"], shape, rng)
    return inputs


def load_inputs(path: Path, metadata: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Inputs from ``.npz`` (arrays by input name), ``.npy`` (a model with one
    input) or ``.json`` (``{"input": nested list}``, typed by the metadata)."""
    datatypes = {i["name"]: i["datatype"] for i in metadata["inputs"]}
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        elif suffix == ".npy":
            if len(datatypes) != 1:
                raise InputDataError(
                    f"{path}: a .npy file feeds a model with one input; this one has "
                    f"{sorted(datatypes)} (use .npz or .json)"
                )
            arrays = {next(iter(datatypes)): np.load(path, allow_pickle=False)}
        elif suffix == ".json":
            arrays = _from_json(path, datatypes)
        else:
            raise InputDataError(f"{path}: expected a .npz, .npy or .json file")
    except OSError as exc:
        raise InputDataError(f"{path}: {exc.strerror or exc}") from None
    except (ValueError, json.JSONDecodeError) as exc:
        if isinstance(exc, InputDataError):
            raise
        raise InputDataError(f"{path}: {exc}") from None
    missing = sorted(set(datatypes) - set(arrays))
    extra = sorted(set(arrays) - set(datatypes))
    if missing or extra:
        raise InputDataError(
            f"{path}: inputs missing {missing}, not the model's {extra} "
            f"(the model's inputs are {sorted(datatypes)})"
        )
    return arrays


def _from_json(path: Path, datatypes: Mapping[str, str]) -> dict[str, np.ndarray]:
    document = json.loads(path.read_text())
    if not isinstance(document, dict):
        raise InputDataError(f"{path}: expected an object mapping input names to lists")
    arrays = {}
    for name, value in document.items():
        datatype = datatypes.get(name)
        if datatype == "BYTES":
            arrays[name] = np.vectorize(lambda s: str(s).encode(), otypes=[object])(
                np.array(value, dtype=object)
            )
        elif datatype is not None:
            arrays[name] = np.array(value, dtype=NUMPY_DTYPES[datatype])
        else:
            arrays[name] = np.array(value)
    return arrays
