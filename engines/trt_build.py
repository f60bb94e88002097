"""Build a TensorRT plan from an ONNX model (``inferd build-engine``).

Everything up to the TensorRT calls is plain Python and runs without a GPU:
reading the model's inputs, turning the batch profiles into per-input shape
ranges (``input_profiles``) and loading INT8 calibration samples
(``CalibrationSet``). ``build_plan`` then imports ``tensorrt`` and
``pycuda``, parses the model, configures precision, workspace, profiles and
calibration, builds (reporting progress through TensorRT's
``IProgressMonitor`` where the release has it, else by phase), and writes
the plan and its sidecar (``engines.trt_plan``) atomically.

Precisions:

* ``fp32``: FP32 kernels only (TF32 is switched off, so results match
  onnxruntime's to FP32 rounding).
* ``fp16``: FP16 allowed where TensorRT finds it faster.
* ``int8``: INT8 with FP16 fallback, scales calibrated with TensorRT's
  entropy calibrator (``IInt8EntropyCalibrator2``) from sample inputs given
  as ``.npy`` files (one per input, samples along the first axis). TensorRT
  10 deprecates implicit-quantization calibration in favour of QDQ models;
  it still works in 10.x.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inferd.engines.trt_plan import PlanInfo, sha256, write_atomically, write_sidecar
from inferd.engines.trt_profiles import BatchProfile, ShapeRange, replicate

log = logging.getLogger("inferd.engines.trt_build")

PRECISIONS = ("fp32", "fp16", "int8")


class BuildError(Exception):
    """The plan could not be built; the message says why (for the operator)."""


# --------------------------------------------------------------------------- model inputs


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


# --------------------------------------------------------------------------- calibration


class CalibrationSet:
    """INT8 calibration samples: one ``.npy`` file per model input, samples
    along the first axis, read memory-mapped and handed out ``batch_size``
    samples at a time (a remainder smaller than a batch is dropped)."""

    def __init__(
        self,
        files: Mapping[str, Path],
        inputs: Sequence[ModelInput],
        batch_size: int,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        if batch_size < 1:
            raise BuildError("--calibration-batch must be at least 1")
        names = [i.name for i in inputs]
        missing = [n for n in names if n not in files]
        extra = [n for n in files if n not in names]
        if extra:
            raise BuildError(f"--calibration-data names '{extra[0]}', which is not an input")
        if missing:
            raise BuildError(
                f"--calibration-data has no samples for input '{missing[0]}' "
                "(every input needs a file)"
            )
        shapes = dict(shapes or {})
        if batch_size != 1 and not all(i.batched for i in inputs):
            raise BuildError(
                "inputs without a dynamic batch dimension take one sample (a whole input) "
                "per calibration batch: use --calibration-batch 1"
            )
        self.batch_size = batch_size
        self.arrays: dict[str, np.ndarray] = {}
        counts: set[int] = set()
        for inp in inputs:
            array = _load_npy(inp.name, files[inp.name])
            expected = inp.dims[1:] if inp.batched else inp.dims
            if inp.name in shapes and -1 in expected:
                expected = tuple(shapes[inp.name])
            sample = array.shape[1:]
            if array.ndim != len(expected) + 1 or any(
                e != -1 and s != e for s, e in zip(sample, expected, strict=True)
            ):
                raise BuildError(
                    f"calibration samples for '{inp.name}' have shape {list(array.shape)}; "
                    f"expected [samples, {', '.join(str(e) for e in expected)}]"
                )
            if not np.can_cast(array.dtype, inp.dtype, casting="same_kind"):
                raise BuildError(
                    f"calibration samples for '{inp.name}' are {array.dtype}, "
                    f"the input is {inp.dtype}"
                )
            self.arrays[inp.name] = array
            counts.add(int(array.shape[0]))
        if len(counts) != 1:
            raise BuildError("the calibration files hold different numbers of samples")
        (self.samples,) = counts
        if self.samples < batch_size:
            raise BuildError(
                f"{self.samples} calibration samples are fewer than one batch of {batch_size}"
            )
        self.dtypes = {i.name: i.dtype for i in inputs}

    @property
    def batches(self) -> int:
        return self.samples // self.batch_size

    def batch_nbytes(self, name: str) -> int:
        array = self.arrays[name]
        return self.batch_size * math.prod(array.shape[1:]) * self.dtypes[name].itemsize

    def batch_shape(self, name: str) -> tuple[int, ...]:
        return (self.batch_size, *self.arrays[name].shape[1:])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for b in range(self.batches):
            lo, hi = b * self.batch_size, (b + 1) * self.batch_size
            yield {
                name: np.ascontiguousarray(array[lo:hi], dtype=self.dtypes[name])
                for name, array in self.arrays.items()
            }


def _load_npy(name: str, path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise BuildError(f"the calibration file for '{name}' does not exist") from None
    except (OSError, ValueError) as exc:
        raise BuildError(f"the calibration file for '{name}' is not a .npy array: {exc}") from None
    if not isinstance(array, np.ndarray) or array.ndim < 1:
        raise BuildError(f"the calibration file for '{name}' must hold an array of samples")
    return array


# --------------------------------------------------------------------------- build


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


class Progress(Protocol):
    """What a build reports. TensorRT's phases nest (``parent``); ``step``
    returning False cancels the build."""

    def phase_start(self, name: str, parent: str | None, steps: int) -> None: ...

    def step(self, name: str, step: int) -> bool: ...

    def phase_finish(self, name: str) -> None: ...


class _NoProgress:
    def phase_start(self, name: str, parent: str | None, steps: int) -> None:
        return None

    def step(self, name: str, step: int) -> bool:
        return True

    def phase_finish(self, name: str) -> None:
        return None


class _Phase:
    """One of our own phases (parse, configure, build, write), reported like
    TensorRT's."""

    def __init__(self, progress: Progress, name: str) -> None:
        self.progress, self.name = progress, name

    def __enter__(self) -> None:
        self.progress.phase_start(self.name, None, 0)

    def __exit__(self, *exc: object) -> None:
        self.progress.phase_finish(self.name)


def _make_monitor(trt: Any, progress: Progress) -> Any:
    """A ``trt.IProgressMonitor`` forwarding to ``progress``. Ctrl-C during a
    build arrives in one of its callbacks (the only Python code that runs);
    it cancels the build there instead of unwinding through TensorRT."""

    class Monitor(trt.IProgressMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.cancelled = False

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            try:
                progress.phase_start(phase_name, parent_phase, int(num_steps))
            except KeyboardInterrupt:
                self.cancelled = True
            except Exception:
                log.debug("progress display failed", exc_info=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            try:
                go_on = progress.step(phase_name, int(step))
            except KeyboardInterrupt:
                self.cancelled = True
            except Exception:
                log.debug("progress display failed", exc_info=True)
                go_on = True
            return bool(go_on) and not self.cancelled

        def phase_finish(self, phase_name: str) -> None:
            try:
                progress.phase_finish(phase_name)
            except KeyboardInterrupt:
                self.cancelled = True
            except Exception:
                log.debug("progress display failed", exc_info=True)

    return Monitor()


def _make_calibrator(trt: Any, cuda: Any, data: CalibrationSet, cache: Path | None) -> Any:
    """An ``IInt8EntropyCalibrator2`` feeding ``data`` from device buffers."""

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batches = iter(data)
            self.device = {name: cuda.mem_alloc(data.batch_nbytes(name)) for name in data.arrays}
            self.done = 0

        def get_batch_size(self) -> int:
            # Explicit-batch networks (the only kind in TensorRT 10): the batch is
            # part of the input shape (the calibration profile); TensorRT multiplies
            # by this value, so it must be 1.
            return 1

        def get_batch(self, names: Sequence[str], *args: Any) -> list[int] | None:
            try:
                batch = next(self.batches)
            except StopIteration:
                return None
            for name in names:
                cuda.memcpy_htod(self.device[name], batch[name])
            self.done += 1
            return [int(self.device[name]) for name in names]

        def read_calibration_cache(self, *args: Any) -> bytes | None:
            if cache is not None and cache.is_file():
                log.info("using the INT8 calibration cache (delete it to recalibrate)")
                return cache.read_bytes()
            return None

        def write_calibration_cache(self, blob: Any, *args: Any) -> None:
            if cache is not None:
                write_atomically(cache, bytes(blob))

        def free(self) -> None:
            for allocation in self.device.values():
                allocation.free()
            self.device.clear()

    return Calibrator()


def _parser_errors(parser: Any) -> str:
    found = [str(parser.get_error(i)) for i in range(int(parser.num_errors))]
    return "; ".join(found[:5]) or "the ONNX parser gave no reason"


def build_plan(spec: BuildSpec, progress: Progress | None = None) -> PlanInfo:
    """Build ``spec.onnx_path`` into ``spec.plan_path`` (+ sidecar) on GPU
    ``spec.device_id``. Raises ``EngineError`` when TensorRT, pycuda or a
    GPU is missing, ``BuildError`` when the build fails."""
    from inferd.engines.tensorrt import CudaDevice, TrtLogger, import_cuda, import_tensorrt

    progress = progress or _NoProgress()
    inputs = read_onnx_inputs(spec.onnx_path)
    profiles = input_profiles(inputs, spec.batch_profiles, spec.input_shapes)
    calibration = (
        CalibrationSet(spec.calibration_files, inputs, spec.calibration_batch, spec.input_shapes)
        if spec.precision == "int8"
        else None
    )
    trt = import_tensorrt()
    cuda = import_cuda()
    device = CudaDevice(cuda, spec.device_id)
    logger = TrtLogger.get(trt)
    started = time.monotonic()
    calibrator: Any = None
    try:
        with device.active():
            builder = trt.Builder(logger)
            network = builder.create_network(0)  # explicit batch: the only mode in TensorRT 10
            parser = trt.OnnxParser(network, logger)
            with _Phase(progress, "Parsing the ONNX model"):
                if not parser.parse_from_file(str(spec.onnx_path)):
                    raise BuildError(f"TensorRT cannot parse the model: {_parser_errors(parser)}")
            network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
            if network_inputs != {i.name for i in inputs}:
                raise BuildError(
                    "TensorRT sees inputs "
                    f"{sorted(network_inputs)}, the ONNX graph {sorted(i.name for i in inputs)}"
                )
            with _Phase(progress, "Configuring the builder"):
                config = builder.create_builder_config()
                if spec.workspace_bytes:
                    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_bytes)
                if spec.precision == "fp32":
                    config.clear_flag(trt.BuilderFlag.TF32)
                if spec.precision in ("fp16", "int8"):
                    config.set_flag(trt.BuilderFlag.FP16)
                for shapes in replicate(profiles, spec.contexts) if profiles else ():
                    profile = builder.create_optimization_profile()
                    for name, (low, opt, high) in shapes.items():
                        profile.set_shape(name, low, opt, high)
                    config.add_optimization_profile(profile)
                if calibration is not None:
                    config.set_flag(trt.BuilderFlag.INT8)
                    calibrator = _make_calibrator(trt, cuda, calibration, spec.calibration_cache)
                    config.int8_calibrator = calibrator
                    if profiles:
                        # Calibration runs at one shape: a batch of samples.
                        fixed = builder.create_optimization_profile()
                        batched = {i.name for i in inputs if i.batched}
                        for name, (pinned, _, _) in profiles[0].items():
                            shape = calibration.batch_shape(name) if name in batched else pinned
                            fixed.set_shape(name, shape, shape, shape)
                        config.set_calibration_profile(fixed)
                monitor = None
                if hasattr(trt, "IProgressMonitor"):
                    monitor = _make_monitor(trt, progress)
                    config.progress_monitor = monitor
            logger.take()
            with _Phase(progress, "Building the engine (minutes for large models)"):
                serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                if monitor is not None and monitor.cancelled:
                    raise BuildError("the build was cancelled")
                said = logger.take()
                raise BuildError(f"TensorRT could not build the plan: {said or 'no reason given'}")
            with _Phase(progress, "Writing the plan"):
                data = bytes(memoryview(serialized))
                write_atomically(spec.plan_path, data)
                info = PlanInfo(
                    tensorrt_version=str(trt.__version__),
                    compute_capability=device.compute_capability,
                    device_name=device.name,
                    precision=spec.precision,
                    plan_sha256=sha256(data),
                    plan_bytes=len(data),
                    batch_profiles=tuple(spec.batch_profiles) if profiles else (),
                    contexts=spec.contexts,
                    onnx_sha256=sha256(spec.onnx_path.read_bytes()),
                    built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds"
                    ),
                )
                write_sidecar(spec.plan_path, info)
            if calibrator is not None:
                calibrator.free()
                calibrator = None
    finally:
        if calibrator is not None:
            with device.active():
                calibrator.free()
        device.release()
    log.info("plan built in %.1f s", time.monotonic() - started)
    return info


__all__ = [
    "PRECISIONS",
    "BuildError",
    "BuildSpec",
    "CalibrationSet",
    "ModelInput",
    "Progress",
    "build_plan",
    "format_shape",
    "input_profiles",
    "read_onnx_inputs",
]
