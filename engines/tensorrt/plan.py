"""TensorRT plans as plain data: the sidecar file, compatibility checks, and
the layout (tensors and optimization profiles) read from a deserialized
engine.

Nothing here imports ``tensorrt`` or ``pycuda``: ``read_layout`` takes the
engine and the ``tensorrt`` module as arguments, so all of it runs (and is
tested) on machines without a GPU.

The sidecar
-----------

``inferd build-engine`` writes ``<plan>.json`` (``model.plan.json``) next to
the plan. It records what TensorRT cannot be asked about a plan before
deserializing it: the TensorRT version and the GPU (compute capability and
name) it was built with, a SHA-256 of the plan, the precision and the batch
profiles. At load the server checks it before handing the bytes to
TensorRT, so a plan copied to another GPU or served by another TensorRT
version is refused with a message that says which and what to do, instead
of TensorRT's generic deserialization failure. Plans without a sidecar
(``trtexec``) load too; TensorRT's own checks are then all there is.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

from inferd.engines.base import EngineError, Signature, TensorSpec
from inferd.engines.tensorrt.profiles import (
    BatchProfile,
    ShapeRange,
    allowed_batch_sizes,
    describe_profiles,
    profile_groups,
)

SIDECAR_SUFFIX = ".json"
SIDECAR_FORMAT = 1
#: Sidecars larger than this are not sidecars.
_SIDECAR_MAX_BYTES = 1 << 20
_PRECISIONS = ("fp32", "fp16", "int8")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REBUILD = "rebuild it with 'inferd build-engine' on this machine"
PLAN_ERROR = "TensorRT plan could not be loaded"

#: TensorRT ``DataType`` member names -> numpy dtypes (every I/O type the
#: inference protocol can carry; FP8, INT4 and FP4 cannot be).
TRT_DTYPES: dict[str, np.dtype[Any]] = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "INT8": np.dtype(np.int8),
    "UINT8": np.dtype(np.uint8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
}


# --------------------------------------------------------------------------- sidecar


@dataclass(frozen=True)
class PlanInfo:
    """What ``build-engine`` knew when it built a plan."""

    tensorrt_version: str
    compute_capability: tuple[int, int]
    device_name: str
    precision: str
    plan_sha256: str
    plan_bytes: int
    batch_profiles: tuple[BatchProfile, ...] = ()
    contexts: int = 1
    onnx_sha256: str = ""
    built_at: str = ""
    format: int = SIDECAR_FORMAT

    def to_json(self) -> str:
        data = {
            "format": self.format,
            "builder": "inferd build-engine",
            "tensorrt_version": self.tensorrt_version,
            "compute_capability": list(self.compute_capability),
            "device_name": self.device_name,
            "precision": self.precision,
            "plan_sha256": self.plan_sha256,
            "plan_bytes": self.plan_bytes,
            "batch_profiles": [[p.min, p.opt, p.max] for p in self.batch_profiles],
            "contexts": self.contexts,
            "onnx_sha256": self.onnx_sha256,
            "built_at": self.built_at,
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PlanInfo:
        """Parse a sidecar; ``ValueError`` says what is wrong (no paths)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise ValueError(f"it is not valid JSON ({detail})") from None
        if not isinstance(data, dict):
            raise ValueError("it does not hold a JSON object")
        fmt = data.get("format")
        if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
            raise ValueError("'format' must be a positive integer")
        if fmt > SIDECAR_FORMAT:
            raise ValueError(
                f"it has format {fmt}, newer than this server understands ({SIDECAR_FORMAT})"
            )
        version = _string(data, "tensorrt_version")
        if not re.fullmatch(r"[0-9]+(\.[0-9]+)*([.+-]?[A-Za-z0-9.]*)?", version):
            raise ValueError("'tensorrt_version' is not a version number")
        capability = data.get("compute_capability")
        if (
            not isinstance(capability, list)
            or len(capability) != 2
            or not all(_is_count(c, 0) for c in capability)
        ):
            raise ValueError("'compute_capability' must be [major, minor]")
        precision = _string(data, "precision")
        if precision not in _PRECISIONS:
            raise ValueError(f"'precision' must be one of {', '.join(_PRECISIONS)}")
        digest = _string(data, "plan_sha256")
        if not _SHA256.fullmatch(digest):
            raise ValueError("'plan_sha256' is not a SHA-256 hex digest")
        plan_bytes = data.get("plan_bytes", 0)
        if not _is_count(plan_bytes, 1):
            raise ValueError("'plan_bytes' must be a positive integer")
        raw_profiles = data.get("batch_profiles", [])
        if not isinstance(raw_profiles, list):
            raise ValueError("'batch_profiles' must be a list of [min, opt, max]")
        profiles: list[BatchProfile] = []
        for item in raw_profiles:
            if (
                not isinstance(item, list)
                or len(item) != 3
                or not all(_is_count(v, 1) for v in item)
            ):
                raise ValueError("'batch_profiles' must be a list of [min, opt, max]")
            try:
                profiles.append(BatchProfile(*item))
            except ValueError as exc:
                raise ValueError(f"'batch_profiles': {exc}") from None
        contexts = data.get("contexts", 1)
        if not _is_count(contexts, 1):
            raise ValueError("'contexts' must be a positive integer")
        return cls(
            tensorrt_version=version,
            compute_capability=(int(capability[0]), int(capability[1])),
            device_name=_string(data, "device_name", required=False),
            precision=precision,
            plan_sha256=digest,
            plan_bytes=int(plan_bytes),
            batch_profiles=tuple(profiles),
            contexts=int(contexts),
            onnx_sha256=_string(data, "onnx_sha256", required=False),
            built_at=_string(data, "built_at", required=False),
            format=fmt,
        )


def _is_count(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _string(data: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise ValueError(f"'{key}' must be a non-empty string")
    return value


def sidecar_path(plan: Path) -> Path:
    """``model.plan`` -> ``model.plan.json``."""
    return plan.with_name(plan.name + SIDECAR_SUFFIX)


def read_sidecar(plan: Path) -> PlanInfo | None:
    """The plan's sidecar, None when there is none. A sidecar that cannot be
    read or parsed is an ``EngineError`` (it is there, so it is meant)."""
    path = sidecar_path(plan)
    where = f"{PLAN_ERROR}: its sidecar {path.name}"
    try:
        size = path.stat().st_size
        if size > _SIDECAR_MAX_BYTES:
            raise EngineError(f"{where} is {size} bytes, too large for a sidecar")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise EngineError(f"{where} is not UTF-8 text; {_REBUILD}") from None
    except OSError as exc:
        raise EngineError(f"{where} cannot be read: {exc.strerror or 'I/O error'}") from None
    try:
        return PlanInfo.from_json(text)
    except ValueError as exc:
        raise EngineError(f"{where} is malformed: {exc}; {_REBUILD}") from None


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same
    directory, so a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_sidecar(plan: Path, info: PlanInfo) -> Path:
    path = sidecar_path(plan)
    write_atomically(path, info.to_json().encode("utf-8"))
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(info: PlanInfo, data: bytes) -> None:
    """The plan is the one its sidecar describes."""
    if len(data) != info.plan_bytes or sha256(data) != info.plan_sha256:
        raise EngineError(
            f"{PLAN_ERROR}: the plan does not match its sidecar (the plan file was replaced "
            f"or the sidecar belongs to another plan); {_REBUILD}"
        )


def parse_version(text: str) -> tuple[int, ...]:
    """Leading numeric components: '10.3.0.26' -> (10, 3, 0, 26),
    '8.6.1.post1' -> (8, 6, 1)."""
    parts: list[int] = []
    for piece in text.split("."):
        match = re.match(r"[0-9]+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts)


def check_compatibility(
    info: PlanInfo,
    runtime_version: str,
    compute_capability: tuple[int, int],
    device_name: str,
    device_id: int = 0,
) -> list[str]:
    """Refuse (``EngineError``) a plan built by another TensorRT release or
    for another GPU architecture; return warnings for what TensorRT accepts
    but advises against (another GPU model of the same architecture)."""
    built = parse_version(info.tensorrt_version)[:3]
    running = parse_version(runtime_version)[:3]
    # Plans are not portable across TensorRT releases (without the
    # version-compatible build flag, which build-engine does not use).
    if built != running:
        raise EngineError(
            f"{PLAN_ERROR}: it was built with TensorRT {info.tensorrt_version} but this "
            f"server runs TensorRT {runtime_version}; {_REBUILD}"
        )
    if tuple(info.compute_capability) != tuple(compute_capability):
        have = ".".join(str(c) for c in compute_capability)
        want = ".".join(str(c) for c in info.compute_capability)
        built_on = f" ({info.device_name})" if info.device_name else ""
        raise EngineError(
            f"{PLAN_ERROR}: it was built for a GPU of compute capability {want}{built_on} "
            f"but GPU {device_id} ({device_name}) has compute capability {have}; {_REBUILD}"
        )
    warnings: list[str] = []
    if info.device_name and device_name and info.device_name != device_name:
        warnings.append(
            f"the plan was built on a {info.device_name} and runs on a {device_name} of the "
            "same compute capability; TensorRT advises rebuilding for each GPU model "
            "(performance, and in rare cases correctness)"
        )
    return warnings


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class TensorLayout:
    name: str
    dtype: np.dtype[Any]
    #: As the plan reports it: -1 for a dimension chosen per call.
    shape: tuple[int, ...]

    @property
    def dynamic(self) -> bool:
        return -1 in self.shape

    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.dtype, self.shape)


@dataclass(frozen=True)
class PlanLayout:
    """A deserialized plan's I/O tensors and optimization profiles."""

    inputs: tuple[TensorLayout, ...]
    outputs: tuple[TensorLayout, ...]
    #: Per profile: dynamic input name -> (min, opt, max) shapes.
    profiles: tuple[dict[str, ShapeRange], ...] = field(default=())

    @property
    def dynamic(self) -> bool:
        """Some input has a dimension chosen per call (profiles apply)."""
        return any(t.dynamic for t in self.inputs)

    @property
    def batched(self) -> bool:
        """Every input's first dimension is chosen per call."""
        return bool(self.inputs) and all(t.shape and t.shape[0] == -1 for t in self.inputs)

    @property
    def group_size(self) -> int:
        """Profiles per execution context (see ``engines.tensorrt.profiles``)."""
        return profile_groups(self.profiles) if self.dynamic and self.profiles else 1

    @property
    def replicas(self) -> int:
        """How many execution contexts can run at once: copies of the profile
        set for a plan with dynamic shapes, unlimited (0) otherwise."""
        if not self.dynamic:
            return 0
        return len(self.profiles) // self.group_size if self.profiles else 0

    def group(self, index: int) -> tuple[int, ...]:
        """Global profile indices owned by execution context ``index``."""
        size = self.group_size
        return tuple(range(index * size, (index + 1) * size))

    def batch_profile(self, profile: Mapping[str, ShapeRange]) -> BatchProfile | None:
        """The batch range every input of ``profile`` admits, or None."""
        if not self.batched:
            return None
        lows, opts, highs = [], [], []
        for t in self.inputs:
            lo, opt, hi = profile[t.name]
            lows.append(lo[0])
            opts.append(opt[0])
            highs.append(hi[0])
        low, high = max(max(lows), 1), min(highs)
        if low > high:
            return None
        return BatchProfile(low, min(max(opts[0], low), high), high)

    def batch_profiles(self) -> tuple[BatchProfile, ...]:
        """Batch ranges of the first context's profiles (all contexts' are equal)."""
        if not self.batched:
            return ()
        found = (self.batch_profile(self.profiles[i]) for i in self.group(0))
        return tuple(p for p in found if p is not None)

    def batch_sizes(self) -> tuple[int, ...]:
        """``Signature.batch_sizes``: the union of the profiles' batch ranges.
        A plan without a dynamic batch whose tensors all share one fixed
        first dimension runs that size only; otherwise () (no batching)."""
        if self.batched:
            return allowed_batch_sizes(self.batch_profiles())
        tensors = (*self.inputs, *self.outputs)
        firsts = {t.shape[0] for t in tensors if t.shape}
        if tensors and all(t.shape for t in tensors) and len(firsts) == 1:
            (first,) = firsts
            return (first,) if first > 0 else ()
        return ()

    def signature(self) -> Signature:
        return Signature(
            inputs=tuple(t.spec() for t in self.inputs),
            outputs=tuple(t.spec() for t in self.outputs),
            batch_sizes=self.batch_sizes(),
        )

    def dim_bounds(self) -> dict[str, tuple[tuple[int, int], ...]]:
        """Per dynamic input, (low, high) of each dimension over the first
        context's profiles (for per-request checks)."""
        bounds: dict[str, tuple[tuple[int, int], ...]] = {}
        group = [self.profiles[i] for i in self.group(0)] if self.profiles else []
        for t in self.inputs:
            if not t.dynamic or not group:
                continue
            ranges = [p[t.name] for p in group if t.name in p]
            bounds[t.name] = tuple(
                (min(r[0][axis] for r in ranges), max(r[2][axis] for r in ranges))
                for axis in range(len(t.shape))
            )
        return bounds

    def describe(self) -> str:
        if not self.dynamic:
            return "static shapes"
        if self.batched:
            return f"batch profiles {describe_profiles(self.batch_profiles())}"
        return f"{self.group_size} optimization profile(s)"


def numpy_dtype(tensor: str, trt_dtype: Any) -> np.dtype[Any]:
    name = getattr(trt_dtype, "name", str(trt_dtype)).rsplit(".", 1)[-1]
    dtype = TRT_DTYPES.get(name)
    if dtype is None:
        raise EngineError(
            f"{PLAN_ERROR}: tensor '{tensor}' has type {name}, which the inference protocol "
            "cannot carry"
        )
    return dtype


def _dims(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in value)


def read_layout(engine: Any, trt: Any) -> PlanLayout:
    """Tensors and profiles of a deserialized ``trt.ICudaEngine`` through the
    name-based API of TensorRT 10 (``num_io_tensors``, ``get_tensor_*``)."""
    inputs: list[TensorLayout] = []
    outputs: list[TensorLayout] = []
    linear = getattr(getattr(trt, "TensorFormat", None), "LINEAR", None)
    for i in range(int(engine.num_io_tensors)):
        name = str(engine.get_tensor_name(i))
        mode = engine.get_tensor_mode(name)
        if engine.get_tensor_location(name) != trt.TensorLocation.DEVICE:
            raise EngineError(
                f"{PLAN_ERROR}: tensor '{name}' is a shape tensor (host memory), which this "
                "server does not support"
            )
        if linear is not None and engine.get_tensor_format(name) != linear:
            raise EngineError(
                f"{PLAN_ERROR}: tensor '{name}' uses a vectorized memory format; rebuild the "
                "plan with linear I/O formats"
            )
        tensor = TensorLayout(
            name,
            numpy_dtype(name, engine.get_tensor_dtype(name)),
            _dims(engine.get_tensor_shape(name)),
        )
        if mode == trt.TensorIOMode.INPUT:
            inputs.append(tensor)
        elif mode == trt.TensorIOMode.OUTPUT:
            outputs.append(tensor)
    if not inputs or not outputs:
        raise EngineError(f"{PLAN_ERROR}: the plan has no inputs or no outputs")
    profiles: list[dict[str, ShapeRange]] = []
    dynamic = [t for t in inputs if t.dynamic]
    if dynamic:
        for index in range(int(engine.num_optimization_profiles)):
            profile: dict[str, ShapeRange] = {}
            for t in dynamic:
                low, opt, high = (_dims(s) for s in engine.get_tensor_profile_shape(t.name, index))
                profile[t.name] = (low, opt, high)
            profiles.append(profile)
        if not profiles:
            raise EngineError(f"{PLAN_ERROR}: the plan has dynamic inputs but no profiles")
    return PlanLayout(tuple(inputs), tuple(outputs), tuple(profiles))


def volume(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1
