"""What ``inferd build-engine`` asks for, checked without TensorRT or a GPU:
the ONNX model's inputs, per-input shape ranges for each batch profile
(``input_profiles``), the precision, and the whole request (``BuildSpec``).

Precisions:

* ``fp32``: FP32 kernels only (TF32 is switched off, so results match
  onnxruntime's to FP32 rounding).
* ``fp16``: FP16 allowed where TensorRT finds it faster.
* ``int8``: INT8 with FP16 fallback, scales calibrated from sample inputs
  (``engines.tensorrt.calibration``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inferd.engines.tensorrt.profiles import BatchProfile, ShapeRange

PRECISIONS = ("fp32", "fp16", "int8")


class BuildError(Exception):
    """The plan could not be built; the message says why (for the operator)."""


@dataclass(frozen=True)
class ModelInput:
    name: str
    dtype: np.dtype[Any]
    #: -1 for a dimension that is not a fixed number.
    dims: tuple[int, ...]

    @property
    def batched(self) -> bool:
        return bool(self.dims) and self.dims[0] == -1


def read_onnx_inputs(path: Path) -> list[ModelInput]:
    """The model's real inputs (initializers excluded)."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise BuildError("the ONNX model does not exist") from None
    except Exception as exc:
        raise BuildError(f"the ONNX model cannot be read: {exc}") from None
    initializers = {i.name for i in model.graph.initializer}
    inputs: list[ModelInput] = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        tensor = vi.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except Exception:
            raise BuildError(f"input '{vi.name}' has a type TensorRT cannot take") from None
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        inputs.append(ModelInput(vi.name, dtype, dims))
    if not inputs:
        raise BuildError("the ONNX model has no inputs")
    return inputs


def input_profiles(
    inputs: Sequence[ModelInput],
    batch_profiles: Sequence[BatchProfile],
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[dict[str, ShapeRange], ...]:
    """Per-input (min, opt, max) shapes, one dict per batch profile.

    An input whose first dimension is dynamic is batched: its first
    dimension follows the batch profile. Any other dynamic dimension needs a
    size from ``shapes``: the dimensions after the batch for a batched
    input, the whole shape otherwise. Inputs with only fixed dimensions are
    left out (TensorRT needs no profile for them). With no dynamic input at
    all the result is empty; with dynamic inputs but none batched, one
    profile of the given shapes.
    """
    shapes = dict(shapes or {})
    unknown = sorted(set(shapes) - {i.name for i in inputs})
    if unknown:
        known = ", ".join(i.name for i in inputs)
        raise BuildError(f"--input-shape names '{unknown[0]}', which is not an input ({known})")
    fixed: dict[str, tuple[int, ...]] = {}
    for inp in inputs:
        if -1 not in inp.dims:
            if inp.name in shapes and tuple(shapes[inp.name]) != inp.dims:
                raise BuildError(
                    f"input '{inp.name}' has the fixed shape {list(inp.dims)}; "
                    f"--input-shape gives {list(shapes[inp.name])}"
                )
            continue
        rest = inp.dims[1:] if inp.batched else inp.dims
        given = shapes.get(inp.name)
        what = "the dimensions after the batch" if inp.batched else "its shape"
        if given is None and -1 not in rest:
            fixed[inp.name] = rest
            continue
        if given is None:
            axis = rest.index(-1) + (1 if inp.batched else 0)
            raise BuildError(
                f"input '{inp.name}' has a dynamic dimension {axis} besides the batch; give "
                f"{what} with --input-shape {inp.name}=" + "x".join("N" for _ in rest)
            )
        given = tuple(int(d) for d in given)
        if len(given) != len(rest) or any(
            g < 1 or (d != -1 and g != d) for g, d in zip(given, rest, strict=True)
        ):
            raise BuildError(
                f"--input-shape for '{inp.name}' must give {what}: {len(rest)} positive sizes "
                f"matching {list(rest)} (-1: any)"
            )
        fixed[inp.name] = given
    dynamic = [i for i in inputs if i.name in fixed]
    if not dynamic:
        return ()
    batched = [i for i in dynamic if i.batched]
    if not batched:
        one = {i.name: (fixed[i.name], fixed[i.name], fixed[i.name]) for i in dynamic}
        return (one,)
    if not batch_profiles:
        raise BuildError("the model has a dynamic batch dimension; give at least one batch size")
    profiles: list[dict[str, ShapeRange]] = []
    for bp in batch_profiles:
        profile: dict[str, ShapeRange] = {}
        for i in dynamic:
            rest = fixed[i.name]
            if i.batched:
                profile[i.name] = ((bp.min, *rest), (bp.opt, *rest), (bp.max, *rest))
            else:
                profile[i.name] = (rest, rest, rest)
        profiles.append(profile)
    return tuple(profiles)


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


@dataclass(frozen=True)
class BuildSpec:
    onnx_path: Path
    plan_path: Path
    batch_profiles: tuple[BatchProfile, ...]
    precision: str = "fp32"
    workspace_bytes: int | None = None
    contexts: int = 1
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    calibration_files: Mapping[str, Path] = field(default_factory=dict)
    calibration_batch: int = 8
    calibration_cache: Path | None = None
    device_id: int = 0

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise BuildError(f"precision must be one of {', '.join(PRECISIONS)}")
        if self.contexts < 1:
            raise BuildError("contexts must be at least 1")
        if self.precision == "int8" and not self.calibration_files:
            raise BuildError("int8 needs calibration samples (--calibration-data NAME=FILE.npy)")
        if self.precision != "int8" and self.calibration_files:
            raise BuildError("calibration samples are only used with --precision int8")
