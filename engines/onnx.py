"""ONNX Runtime engine.

Every message in an ``EngineError`` raised here may reach a remote caller, so
it is built from a short reason with filesystem paths, source locations and
stack traces scrubbed out; the original exception stays chained for the
server's own logs.

Data type notes:

* BYTES: onnxruntime's Python binding carries string tensors as ``str``
  (it turns a ``bytes`` element into its ``repr``), so inputs are decoded and
  outputs encoded as UTF-8. An input element that is not valid UTF-8 cannot
  be passed and is rejected with an ``EngineError``.
* BF16: onnxruntime accepts bfloat16 I/O through ``OrtValue`` objects but not
  ``ml_dtypes.bfloat16`` numpy arrays, so models with a BF16 input or output
  run through ``run_with_ort_values``. The CPU provider implements few
  bfloat16 kernels (``Cast`` yes, ``MatMul``/``Add``/``Relu`` no), so a model
  that computes in bfloat16 fails to load on CPU with "Could not find an
  implementation for ..."; one that casts at its edges works. That path
  cannot carry string tensors, so a model with BF16 tensors and a BYTES input
  is refused at load.

GPU providers: ``EngineOptions.providers`` lists them in preference order
(TensorRT, CUDA, then CPU, from the config's execution accelerators). A
provider missing from this onnxruntime build, or one that fails to
initialise (no GPU, no CUDA libraries), is dropped with a logged warning and
the model runs on what remains, CPU last. When the session really runs on
CUDA or TensorRT, calls use IO binding (``_run_bound``); otherwise plain
``run``.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnxruntime as ort

from inferd.engines.base import (
    BYTES_DTYPE,
    Engine,
    EngineError,
    EngineInputError,
    EngineOptions,
    Signature,
    TensorSpec,
)
from inferd.engines.messages import clean_message as _clean_message

logger = logging.getLogger("inferd.engines.onnx")

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"
_TENSORRT = "TensorrtExecutionProvider"
_GPU_PROVIDERS = (_TENSORRT, _CUDA)
_BF16 = np.dtype(ml_dtypes.bfloat16)
_ONNX_BFLOAT16 = 16  # TensorProto.BFLOAT16; kept literal to avoid importing onnx here

#: onnxruntime type strings -> numpy dtypes, covering every V2 datatype.
ORT_DTYPES: dict[str, np.dtype[Any]] = {
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(bfloat16)": _BF16,
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(string)": BYTES_DTYPE,
}


def _dim(d: object) -> int:
    # ORT reports symbolic dims as str and unknown ones as None.
    return d if isinstance(d, int) and d >= 0 else -1


def _spec(arg: Any) -> TensorSpec:
    dtype = ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise EngineError(
            f"ONNX model could not be loaded: tensor '{arg.name}' has type {arg.type}, "
            f"which the inference protocol cannot carry{_type_hint(arg.type)}"
        )
    shape = arg.shape if isinstance(arg.shape, list) else []
    return TensorSpec(name=arg.name, dtype=dtype, shape=tuple(_dim(d) for d in shape))


def _type_hint(onnx_type: str) -> str:
    """How to fix a type the protocol cannot carry, where the usual cause is known."""
    if onnx_type.startswith("seq(map("):
        # A classifier's probabilities per class, as converters write them by
        # default (skl2onnx's and onnxmltools' ZipMap).
        return (
            "; a classifier's ZipMap output: convert without it to get the probabilities "
            "as one tensor (skl2onnx: options={id(clf): {'zipmap': False}}; "
            "onnxmltools.convert_lightgbm: zipmap=False)"
        )
    return ""


def _select_providers(requested: Sequence[str]) -> list[str]:
    available = ort.get_available_providers()
    chosen: list[str] = []
    for name in dict.fromkeys(requested):
        if name in available:
            chosen.append(name)
        else:
            logger.warning(
                "execution provider %s is not available in this onnxruntime build "
                "(available: %s); falling back to the next provider",
                name,
                ", ".join(available),
            )
    # CPU goes last so that any node another provider cannot run still has a home.
    if _CPU not in chosen:
        chosen.append(_CPU)
    return chosen


ProviderSpec = str | tuple[str, dict[str, str]]


def provider_specs(
    chosen: Sequence[str], options: EngineOptions, path: Path | None = None
) -> list[ProviderSpec]:
    """``chosen`` providers with their options, as ``InferenceSession`` takes
    them: the GPU providers get ``device_id`` and the config's parameters;
    the TensorRT provider also gets one shape profile for the batch sizes the
    scheduler will dispatch (``trt_profile_*_shapes``), read from the model's
    inputs, unless the options already set one. Without it the provider
    rebuilds its engine each time a batch is larger than any seen before,
    which warmup's ascending sizes would trigger at every size."""
    specs: list[ProviderSpec] = []
    for name in chosen:
        if name not in _GPU_PROVIDERS:
            specs.append(name)
            continue
        values = {"device_id": str(options.device_id), **options.options_for(name)}
        if (
            name == _TENSORRT
            and path is not None
            and options.max_batch_size > 0
            and not any(k.startswith("trt_profile_") for k in values)
        ):
            values.update(trt_profile_options(_graph_inputs(path), options.max_batch_size))
        specs.append((name, values))
    return specs


def _graph_inputs(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """(name, dims) of the model's real inputs (initializers excluded), -1 for
    a dimension that is not a fixed number; [] when the file cannot be read
    here (the session load then reports the problem)."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # the session will say what is wrong with the file
        return []
    initializers = {i.name for i in model.graph.initializer}
    inputs: list[tuple[str, tuple[int, ...]]] = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        dims = vi.type.tensor_type.shape.dim
        inputs.append(
            (vi.name, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims))
        )
    return inputs


def trt_profile_options(
    inputs: Sequence[tuple[str, Sequence[int]]], max_batch_size: int
) -> dict[str, str]:
    """One TensorRT-provider profile: batch 1..``max_batch_size`` (opt at the
    largest) for every input whose only dynamic dimension is the first.

    Empty when no input has a dynamic first dimension, or when some input has
    another dynamic dimension (its range is unknown here; the provider then
    grows its profile from the shapes it sees)."""
    dynamic = [(name, tuple(dims)) for name, dims in inputs if -1 in dims]
    if max_batch_size <= 0 or not dynamic:
        return {}
    for name, dims in dynamic:
        if not dims or dims[0] != -1 or -1 in dims[1:]:
            logger.info(
                "input %s has dynamic dimensions besides the batch; the TensorRT provider "
                "will size its profile from the shapes it sees",
                name,
            )
            return {}

    def shapes(batch: int) -> str:
        return ",".join(
            f"{name}:" + "x".join(str(d) for d in (batch, *dims[1:])) for name, dims in dynamic
        )

    return {
        "trt_profile_min_shapes": shapes(1),
        "trt_profile_opt_shapes": shapes(max_batch_size),
        "trt_profile_max_shapes": shapes(max_batch_size),
    }


def binding_target(
    active: Sequence[str], signature: Signature, device_id: int
) -> tuple[str, int] | None:
    """Where to bind outputs with IO binding: the GPU when the session runs on
    the CUDA or TensorRT provider, else None (plain ``run``). BYTES tensors
    cannot live on a GPU and BF16 ones take the OrtValue path, so models with
    either keep ``run``."""
    if not any(p in _GPU_PROVIDERS for p in active):
        return None
    if any(t.dtype in (BYTES_DTYPE, _BF16) for t in (*signature.inputs, *signature.outputs)):
        return None
    return ("cuda", device_id)


def _run_bound(
    session: ort.InferenceSession,
    names: list[str],
    feeds: dict[str, np.ndarray],
    target: tuple[str, int],
    run_options: ort.RunOptions,
) -> list[np.ndarray]:
    """IO binding: onnxruntime copies the inputs to the device itself and the
    outputs stay there until one copy back at the end (instead of run()'s
    per-call allocations). One binding per call keeps calls thread-safe."""
    device, device_id = target
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_cpu_input(name, array)
    for name in names:
        binding.bind_output(name, device, device_id)
    session.run_with_iobinding(binding, run_options)
    return list(binding.copy_outputs_to_cpu())


def _encode_strings(name: str, array: np.ndarray) -> np.ndarray:
    """BYTES elements -> ``str`` (what ORT's binding takes for string tensors)."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat):
        if isinstance(item, (bytes, bytearray, memoryview, np.bytes_)):
            try:
                out[i] = bytes(item).decode("utf-8")
            except UnicodeDecodeError:
                raise EngineInputError(
                    f"input '{name}' element {i} is not valid UTF-8; "
                    "onnxruntime string tensors can only hold UTF-8 text"
                ) from None
        elif isinstance(item, str):
            out[i] = item
        else:
            raise EngineError(
                f"input '{name}' element {i} is {type(item).__name__}, expected bytes"
            )
    return out.reshape(array.shape)


def _decode_strings(array: np.ndarray) -> np.ndarray:
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat):
        out[i] = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    return out.reshape(array.shape)


def _bf16_from_ortvalue(value: Any) -> np.ndarray:
    # OrtValue.numpy() has no bfloat16 mapping; copy the raw buffer instead.
    if value.device_name().lower() != "cpu":
        raise EngineError("a bfloat16 output was left on a device; only CPU outputs are supported")
    size = value.tensor_size_in_bytes()
    raw = ctypes.string_at(value.data_ptr(), size) if size else b""
    return np.frombuffer(raw, dtype=_BF16).reshape(value.shape()).copy()


class OnnxEngine(Engine):
    """One ONNX model loaded into an onnxruntime ``InferenceSession``."""

    def __init__(self, path: Path, options: EngineOptions) -> None:
        path = Path(path)
        self._scrub = (str(path), str(path.resolve()), str(path.parent), str(path.parent.resolve()))
        self.max_concurrency = max(1, options.concurrency)

        if not path.is_file():
            raise EngineError(
                "ONNX model could not be loaded: the model file does not exist or is not a file"
            )

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = max(0, options.intra_op_threads)
        so.inter_op_num_threads = max(0, options.inter_op_threads)
        if not options.intra_op_spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if options.inter_op_threads > 1:
            # The inter-op pool is only used in parallel mode; asking for it
            # would otherwise be a silent no-op.
            so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        # ORT's own warnings go to stderr outside Python logging; failures
        # still surface as exceptions, which we turn into EngineError.
        so.log_severity_level = 3

        providers = _select_providers(options.providers)
        specs = provider_specs(providers, options, path)
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=specs)
        except Exception as exc:
            raise EngineError(
                f"ONNX model could not be loaded: {_clean_message(str(exc), self._scrub)}"
            ) from exc

        active = session.get_providers()
        for name in providers:
            if name not in active:
                logger.warning(
                    "execution provider %s could not be initialised; running on %s",
                    name,
                    ", ".join(active),
                )

        self._signature = Signature(
            inputs=tuple(_spec(a) for a in session.get_inputs()),
            outputs=tuple(_spec(a) for a in session.get_outputs()),
        )
        self._use_ort_values = any(
            t.dtype == _BF16 for t in (*self._signature.inputs, *self._signature.outputs)
        )
        if self._use_ort_values and any(t.dtype == BYTES_DTYPE for t in self._signature.inputs):
            raise EngineError(
                "ONNX model could not be loaded: onnxruntime's Python API cannot run a model "
                "with both BF16 tensors and BYTES inputs"
            )
        self._binding = (
            None
            if self._use_ort_values
            else binding_target(active, self._signature, options.device_id)
        )
        self._inputs = {t.name: t for t in self._signature.inputs}
        self._string_inputs = tuple(n for n, t in self._inputs.items() if t.dtype == BYTES_DTYPE)
        self._outputs = {t.name: t for t in self._signature.outputs}
        # Silence ORT's per-failure stderr log: the caller gets the error.
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4
        self._session: ort.InferenceSession | None = session

    @property
    def signature(self) -> Signature:
        return self._signature

    @property
    def io_binding(self) -> bool:
        """Whether calls go through IO binding (only on a GPU provider)."""
        return self._binding is not None

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses, in priority order."""
        session = self._session
        return list(session.get_providers()) if session is not None else []

    def infer(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        session = self._session  # local ref: a concurrent close() cannot pull it mid-run
        if session is None:
            raise EngineError("the model has been unloaded")

        names = list(self._outputs) if outputs is None else list(dict.fromkeys(outputs))
        for name in names:
            if name not in self._outputs:
                raise EngineError(f"unknown output '{name}'")
        feeds = self._prepare_inputs(inputs)
        if not names:
            return {}

        try:
            if self._use_ort_values:
                results = self._run_ort_values(session, names, feeds)
            elif self._binding is not None:
                results = _run_bound(session, names, feeds, self._binding, self._run_options)
            else:
                results = session.run(names, feeds, self._run_options)
        except EngineError:
            raise
        except UnicodeDecodeError:
            raise EngineError(
                "the model produced a string output that is not valid UTF-8"
            ) from None
        except Exception as exc:
            raise EngineError(f"inference failed: {_clean_message(str(exc), self._scrub)}") from exc

        out: dict[str, np.ndarray] = {}
        for name, value in zip(names, results, strict=True):
            array = np.asarray(value)
            if self._outputs[name].dtype == BYTES_DTYPE:
                array = _decode_strings(array)
            out[name] = np.ascontiguousarray(array)
        return out

    def check_request(self, inputs: Mapping[str, np.ndarray]) -> None:
        # Per request on the hot path: nothing to do for models without text.
        for name in self._string_inputs:
            if name in inputs:
                _encode_strings(name, np.asarray(inputs[name]))

    def _prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        unknown = [n for n in inputs if n not in self._inputs]
        if unknown:
            raise EngineError(f"unknown input '{unknown[0]}'")
        feeds: dict[str, np.ndarray] = {}
        for name, spec in self._inputs.items():
            if name not in inputs:
                raise EngineError(f"missing input '{name}'")
            array = np.asarray(inputs[name])
            if spec.dtype == BYTES_DTYPE:
                if array.dtype.kind not in "OSU":
                    raise EngineError(f"input '{name}' has dtype {array.dtype}, expected BYTES")
                array = _encode_strings(name, array)
            elif array.dtype != spec.dtype:
                if array.dtype.newbyteorder("=") != spec.dtype.newbyteorder("="):
                    raise EngineError(
                        f"input '{name}' has dtype {array.dtype}, expected {spec.dtype}"
                    )
                array = array.astype(spec.dtype)  # byte-swapped copy of the same type
            if len(array.shape) != len(spec.shape) or any(
                want != -1 and got != want
                for got, want in zip(array.shape, spec.shape, strict=True)
            ):
                raise EngineError(
                    f"input '{name}' has shape {list(array.shape)}, "
                    f"expected {list(spec.shape)} (-1: any size)"
                )
            feeds[name] = np.ascontiguousarray(array)
        return feeds

    def _run_ort_values(
        self, session: ort.InferenceSession, names: list[str], feeds: dict[str, np.ndarray]
    ) -> list[np.ndarray]:
        # The OrtValues borrow the arrays' memory; ``feeds`` keeps them alive.
        values = {
            name: (
                ort.OrtValue.ortvalue_from_numpy_with_onnx_type(
                    array.view(np.uint16), _ONNX_BFLOAT16
                )
                if array.dtype == _BF16
                else ort.OrtValue.ortvalue_from_numpy(array)
            )
            for name, array in feeds.items()
        }
        results = session.run_with_ort_values(names, values, self._run_options)
        return [
            _bf16_from_ortvalue(value)
            if self._outputs[name].dtype == _BF16
            else np.asarray(value.numpy())
            for name, value in zip(names, results, strict=True)
        ]

    def close(self) -> None:
        # In-flight calls hold their own reference and finish normally.
        self._session = None
