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
"""

from __future__ import annotations

import ctypes
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnxruntime as ort

from engines.base import (
    BYTES_DTYPE,
    Engine,
    EngineError,
    EngineInputError,
    EngineOptions,
    Signature,
    TensorSpec,
)

logger = logging.getLogger("inferd.engines.onnx")

_CPU = "CPUExecutionProvider"
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

_ORT_PREFIX = re.compile(r"\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_LOAD_PREFIX = re.compile(r"Load model(?: from)? .*? failed\s*:?\s*", re.S)
_STACKTRACE = re.compile(r"\s*Stack ?trace:.*", re.S | re.I)
# ORT_ENFORCE messages start "<file>:<line> <C++ signature> <condition> was false."
_SOURCE_LOCATION = re.compile(
    r"(?:[A-Za-z]:)?[^\s'\":]*[\\/][^\s'\":]+\.(?:h|hh|hpp|c|cc|cpp|cxx|cu|cuh|inc):\d+"
    r"(?:\s+[^\n()]*\([^()\n]*\)(?:\s*const)?)?\s*"
)
# Absolute paths that start a word. Quoted names (ORT writes node names as
# Name:'/fc1/Gemm') are left alone: they are graph names, not files.
_ABS_PATH = re.compile(r"(?:(?<=\s)|^)(?:[A-Za-z]:\\|~?/)[^\s'\",;]+")
_MAX_MESSAGE = 400


def _clean_message(text: str, paths: Sequence[str] = ()) -> str:
    """A one-paragraph reason safe to show a remote caller."""
    for p in sorted(paths, key=len, reverse=True):
        if p:
            text = text.replace(p, "<model>")
    text = _STACKTRACE.sub("", text)
    text = _ORT_PREFIX.sub("", text)
    text = _LOAD_PREFIX.sub("", text)
    text = _SOURCE_LOCATION.sub("", text)
    text = _ABS_PATH.sub("<path>", text)
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text or "unknown error"


def _dim(d: object) -> int:
    # ORT reports symbolic dims as str and unknown ones as None.
    return d if isinstance(d, int) and d >= 0 else -1


def _spec(arg: Any) -> TensorSpec:
    dtype = ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise EngineError(
            f"ONNX model could not be loaded: tensor '{arg.name}' has type {arg.type}, "
            "which the inference protocol cannot carry"
        )
    shape = arg.shape if isinstance(arg.shape, list) else []
    return TensorSpec(name=arg.name, dtype=dtype, shape=tuple(_dim(d) for d in shape))


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
        if options.inter_op_threads > 1:
            # The inter-op pool is only used in parallel mode; asking for it
            # would otherwise be a silent no-op.
            so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        # ORT's own warnings go to stderr outside Python logging; failures
        # still surface as exceptions, which we turn into EngineError.
        so.log_severity_level = 3

        providers = _select_providers(options.providers)
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
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
        self._inputs = {t.name: t for t in self._signature.inputs}
        self._outputs = {t.name: t for t in self._signature.outputs}
        # Silence ORT's per-failure stderr log: the caller gets the error.
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4
        self._session: ort.InferenceSession | None = session

    @property
    def signature(self) -> Signature:
        return self._signature

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
        for name, spec in self._inputs.items():
            if spec.dtype == BYTES_DTYPE and name in inputs:
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
