"""``triton_python_backend_utils`` as a model sees it (``import
triton_python_backend_utils as pb_utils``): Triton's names and meanings,
numpy tensors on the CPU only.

Kept free of the server's modules: the model process imports it under
Triton's name. BLS requests (``InferenceRequest.exec`` / ``async_exec``) go
through ``set_bls_handler``'s handler: the model process's channel to the
server, or a test's stand-in (``testing``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_RELEASE_ALL = 1

TRITON_STRING_TO_NUMPY: dict[str, Any] = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}

#: Triton's DataType enum numbers, in the order of its ``TYPE_*`` names above.
_TYPE_NUMBERS: list[Any] = [
    np.bool_, np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32,
    np.int64, np.float16, np.float32, np.float64, np.object_,
]  # fmt: skip

_log = logging.getLogger("inferd.python_model")


class TritonError(Exception):
    """An error a response carries (``InferenceResponse(error=...)``)."""

    UNKNOWN = 0
    INTERNAL = 1
    NOT_FOUND = 2
    INVALID_ARG = 3
    UNAVAILABLE = 4
    UNSUPPORTED = 5
    ALREADY_EXISTS = 6
    CANCELLED = 7

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        super().__init__(message)
        self._message = str(message)
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class TritonModelException(Exception):
    """Raised by the utilities on misuse (Triton's name)."""


class Tensor:
    """A named numpy tensor. BYTES tensors are ``object`` arrays of ``bytes``."""

    def __init__(self, name: str, data: Any, dtype: Any = None) -> None:
        if not isinstance(data, np.ndarray):
            raise TritonModelException(f"tensor '{name}': data must be a numpy array")
        if data.dtype.type is np.bytes_ or data.dtype.type is np.str_:
            data = data.astype(np.object_)
        self._name = name
        self._data: np.ndarray = data

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._data

    def shape(self) -> list[int]:
        return list(self._data.shape)

    def is_cpu(self) -> bool:
        return True

    def triton_dtype(self) -> int | None:
        return numpy_to_triton_type(self._data.dtype.type)

    def to_dlpack(self) -> Any:
        return self._data.__dlpack__()

    @staticmethod
    def from_dlpack(name: str, capsule: Any) -> Tensor:
        array: np.ndarray = np.from_dlpack(capsule)
        return Tensor(name, array)

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={list(self._data.shape)}, dtype={self._data.dtype})"


class InferenceResponse:
    def __init__(
        self,
        output_tensors: Sequence[Tensor] = (),
        error: TritonError | None = None,
        parameters: dict[str, Any] | str | None = None,
    ) -> None:
        self._outputs = list(output_tensors)
        self._error = error
        self._parameters = (
            parameters if isinstance(parameters, str) else json.dumps(parameters or {})
        )

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters


#: Runs a BLS request: gives back a future of its response.
BlsHandler = Callable[["InferenceRequest"], "concurrent.futures.Future[InferenceResponse]"]
_bls_handler: BlsHandler | None = None


def set_bls_handler(handler: BlsHandler | None) -> None:
    """Where ``exec``/``async_exec`` send requests (the model process sets it)."""
    global _bls_handler
    _bls_handler = handler


class InferenceRequest:
    """A request ``execute`` receives, or one a model builds for BLS."""

    def __init__(
        self,
        model_name: str = "",
        inputs: Sequence[Tensor] = (),
        requested_output_names: Iterable[str] = (),
        model_version: int = -1,
        flags: int = 0,
        correlation_id: int | str = 0,
        request_id: str = "",
        timeout: int = 0,
        parameters: dict[str, Any] | str | None = None,
        **_: Any,
    ) -> None:
        self._model_name = model_name
        self._inputs = list(inputs)
        self._outputs = list(requested_output_names)
        self._model_version = model_version
        self._flags = flags
        self._correlation_id = correlation_id
        self._request_id = request_id
        self._timeout = timeout
        self._parameters = (
            parameters if isinstance(parameters, str) else json.dumps(parameters or {})
        )

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._outputs

    def model_name(self) -> str:
        return self._model_name

    def model_version(self) -> int:
        return self._model_version

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        """Microseconds; 0: none."""
        return self._timeout

    def parameters(self) -> str:
        """The request's parameters as a JSON object string (Triton's form)."""
        return self._parameters

    def is_cancelled(self) -> bool:
        return False

    def get_response_sender(self) -> Any:
        raise TritonModelException("decoupled models are not supported by this server")

    def exec(self, decoupled: bool = False) -> InferenceResponse:
        """Run this request on another model of the server and wait (BLS).
        Failures come back as the response's error, as in Triton."""
        if decoupled:
            raise TritonModelException("decoupled BLS calls are not supported by this server")
        return self._submit().result()

    def async_exec(self, decoupled: bool = False) -> asyncio.Future[InferenceResponse]:
        """``exec`` for ``async def execute``: await the result."""
        if decoupled:
            raise TritonModelException("decoupled BLS calls are not supported by this server")
        return asyncio.wrap_future(self._submit())

    def _submit(self) -> concurrent.futures.Future[InferenceResponse]:
        if not self._model_name:
            raise TritonModelException("a BLS request needs a model_name")
        if _bls_handler is None:
            raise TritonModelException("BLS calls are not available outside execute")
        return _bls_handler(self)


class Logger:
    """Triton's ``pb_utils.Logger``: lines go to the server's log."""

    INFO, WARNING, ERROR, VERBOSE = 0, 1, 2, 3

    @staticmethod
    def log(message: str, level: int = 0) -> None:
        levels = (logging.INFO, logging.WARNING, logging.ERROR, logging.DEBUG)
        _log.log(levels[level] if 0 <= level < len(levels) else logging.INFO, message)

    @staticmethod
    def log_info(message: str) -> None:
        _log.info(message)

    @staticmethod
    def log_warn(message: str) -> None:
        _log.warning(message)

    @staticmethod
    def log_error(message: str) -> None:
        _log.error(message)

    @staticmethod
    def log_verbose(message: str) -> None:
        _log.debug(message)


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in inference_request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in inference_response.output_tensors() if t.name() == name), None)


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((t for t in model_config.get("input", []) if t["name"] == name), None)


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((t for t in model_config.get("output", []) if t["name"] == name), None)


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


def triton_to_numpy_type(data_type: int) -> Any:
    return _TYPE_NUMBERS[data_type - 1] if 1 <= data_type <= len(_TYPE_NUMBERS) else None


def numpy_to_triton_type(data_type: Any) -> int | None:
    kind = np.dtype(data_type).type
    if kind is np.bytes_:
        kind = np.object_
    return next((i + 1 for i, t in enumerate(_TYPE_NUMBERS) if t is kind), None)


def triton_string_to_numpy(triton_type_string: str) -> Any:
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def serialize_byte_tensor(input_tensor: np.ndarray) -> bytes | None:
    """Elements as 4-byte little-endian lengths followed by their bytes, in C order."""
    if input_tensor.size == 0:
        return b""
    if input_tensor.dtype != np.object_ and input_tensor.dtype.type is not np.bytes_:
        return None
    parts = []
    for item in input_tensor.reshape(-1):
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts += [struct.pack("<I", len(raw)), raw]
    return b"".join(parts)


def deserialize_bytes_tensor(encoded_tensor: bytes) -> np.ndarray:
    items, offset = [], 0
    while offset < len(encoded_tensor):
        (length,) = struct.unpack_from("<I", encoded_tensor, offset)
        offset += 4
        items.append(bytes(encoded_tensor[offset : offset + length]))
        offset += length
    return np.array(items, dtype=np.object_)
