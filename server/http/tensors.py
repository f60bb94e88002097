"""JSON (and Triton's binary tensor extension) <-> numpy for inference.

A request body is a JSON object, optionally followed by binary tensor data:
``Inference-Header-Content-Length`` gives the JSON's length, and each input
with a ``binary_data_size`` parameter takes that many bytes of what follows,
in input order. Every check the gRPC codec makes on shapes and limits runs
here too (the same functions, ``server.codec``), before anything sized by
the request is allocated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from inferd.protos.datatypes import NUMPY_DTYPES, deserialize_bytes, serialize_bytes
from inferd.server.classification import answer_output
from inferd.server.codec import (
    RequestLimits,
    batch_rows,
    check_bytes_size,
    check_counts,
    check_outputs,
    check_shape,
    class_count,
)
from inferd.server.errors import InvalidArgument
from inferd.server.model_io import ModelIO, TensorInfo
from inferd.server.request import InferRequest, ParamValue
from inferd.server.reshape import to_model

#: Longest request-supplied text echoed in an error.
_ECHO = 80
_INT_KINDS = "iu"
_NUMBER_KINDS = "iuf"


def _echo(text: object) -> str:
    s = str(text)
    return s if len(s) <= _ECHO else s[:_ECHO] + "..."


@dataclass(slots=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    #: JSON ``data`` (nested or flat), or None when the tensor is binary.
    data: Any = None
    #: The tensor's bytes from the binary part of the body.
    raw: memoryview | None = None


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool
    #: The ``classification`` parameter as sent (checked against the model later).
    classification: Any = None


@dataclass(slots=True)
class HttpRequest:
    """A parsed inference request: well-formed, not yet checked against a model."""

    id: str
    parameters: dict[str, ParamValue]
    inputs: list[InputTensor]
    outputs: list[RequestedOutput]
    #: ``binary_data_output``: outputs not listed (or listed without
    #: ``binary_data``) come back binary.
    binary_output: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be a JSON object")
    return value


def _parameters(value: Any, where: str) -> dict[str, ParamValue]:
    params = _object(value, where)
    for key, item in params.items():
        if not isinstance(item, bool | int | float | str):
            raise InvalidArgument(
                f"{where}: parameter '{_echo(key)}' must be a string, number or boolean"
            )
    return params


def _int_param(params: Mapping[str, Any], key: str, where: str) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{where}: parameter '{key}' must be a non-negative integer")
    return value


def _bool_param(params: Mapping[str, Any], key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise InvalidArgument(f"{where}: parameter '{key}' must be true or false")
    return value


def parse_request(body: bytes, header_length: int | None, limits: RequestLimits) -> HttpRequest:
    """Split and parse an inference body; raises ``InvalidArgument`` /
    ``ResourceExhausted`` naming what is wrong."""
    header: bytes | memoryview
    if header_length is None:
        header, binary = body, memoryview(b"")
    else:
        if not 0 < header_length <= len(body):
            raise InvalidArgument(
                f"Inference-Header-Content-Length {header_length} is outside the body of "
                f"{len(body)} bytes"
            )
        view = memoryview(body)
        header, binary = view[:header_length], view[header_length:]
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc}") from None
    doc = _object(doc, "the request")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InvalidArgument("the request needs 'inputs', a non-empty list")
    outputs = doc.get("outputs", [])
    if not isinstance(outputs, list):
        raise InvalidArgument("'outputs' must be a list")
    params = _parameters(doc.get("parameters", {}), "the request")
    check_counts(len(inputs), len(outputs), len(params), limits)
    request_id = doc.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument("'id' must be a string")
    binary_output = _bool_param(params, "binary_data_output", "the request")
    params.pop("binary_data_output", None)
    offset = 0
    parsed_inputs: list[InputTensor] = []
    for item in inputs:
        tensor = _input(item)
        size = _int_param(
            _parameters(item.get("parameters", {}), f"input '{tensor.name}'"),
            "binary_data_size",
            f"input '{tensor.name}'",
        )
        if size is not None:
            if "data" in item:
                raise InvalidArgument(
                    f"input '{tensor.name}': 'data' and 'binary_data_size' are both set"
                )
            if offset + size > len(binary):
                raise InvalidArgument(
                    f"input '{tensor.name}': binary_data_size {size} runs past the "
                    f"{len(binary)} bytes of binary data in the body"
                )
            tensor.raw = binary[offset : offset + size]
            offset += size
        elif "data" not in item:
            raise InvalidArgument(f"input '{tensor.name}' has neither 'data' nor binary data")
        else:
            tensor.data = item["data"]
        parsed_inputs.append(tensor)
    if offset != len(binary):
        raise InvalidArgument(
            f"the body has {len(binary)} bytes of binary data, the inputs' binary_data_size "
            f"add up to {offset}"
        )
    return HttpRequest(
        id=request_id,
        parameters=params,
        inputs=parsed_inputs,
        outputs=[_output(o) for o in outputs],
        binary_output=binary_output,
    )


def _input(item: Any) -> InputTensor:
    item = _object(item, "each input")
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidArgument("each input needs a 'name' string")
    datatype = item.get("datatype")
    if not isinstance(datatype, str):
        raise InvalidArgument(f"input '{_echo(name)}' needs a 'datatype' string")
    shape = item.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise InvalidArgument(f"input '{_echo(name)}' needs a 'shape', a list of integers")
    return InputTensor(name, datatype, tuple(shape))


def _output(item: Any) -> RequestedOutput:
    item = _object(item, "each output")
    name = item.get("name")
    if not isinstance(name, str):
        raise InvalidArgument("each requested output needs a 'name' string")
    params = _parameters(item.get("parameters", {}), f"output '{_echo(name)}'")
    return RequestedOutput(
        name,
        binary=_bool_param(params, "binary_data", f"output '{_echo(name)}'"),
        classification=params.get("classification"),
    )


# -- against the model ---------------------------------------------------------------------


def _from_json(tensor: InputTensor, info: TensorInfo, count: int, limits: RequestLimits) -> Any:
    where = f"input '{tensor.name}'"
    data = tensor.data
    if not isinstance(data, list):
        data = [data]
    if info.datatype == "BYTES":
        flat = _flatten(data, where)
        if len(flat) != count:
            raise InvalidArgument(
                f"{where}: 'data' has {len(flat)} elements, shape {list(tensor.shape)} needs "
                f"{count}"
            )
        if not all(isinstance(v, str) for v in flat):
            raise InvalidArgument(f"{where}: BYTES data must be strings")
        encoded = [v.encode("utf-8") for v in flat]
        check_bytes_size(where, count, sum(len(v) for v in encoded), limits)
        array = np.empty(count, dtype=object)
        array[:] = encoded
        return array
    try:
        values = np.asarray(data)
    except ValueError:
        raise InvalidArgument(f"{where}: 'data' is a ragged nested list") from None
    if values.size != count:
        raise InvalidArgument(
            f"{where}: 'data' has {values.size} elements, shape {list(tensor.shape)} needs {count}"
        )
    kind = values.dtype.kind
    dtype = NUMPY_DTYPES[info.datatype]
    if count and info.datatype == "BOOL":
        if kind != "b":
            raise InvalidArgument(f"{where}: BOOL data must be true or false")
    elif count and dtype.kind in _INT_KINDS:
        if kind in "fO":
            # numpy infers float64 (or object) for integers past int64, such as
            # UINT64's upper half: check the Python values themselves.
            flat = _flatten(data, where)
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
                raise InvalidArgument(f"{where}: {info.datatype} data must be integers")
            values = np.asarray(flat, dtype=object)
            kind = "i"
        if kind not in _INT_KINDS:
            raise InvalidArgument(f"{where}: {info.datatype} data must be integers")
        limits_of = np.iinfo(dtype)
        if values.min() < limits_of.min or values.max() > limits_of.max:
            raise InvalidArgument(f"{where}: data has values out of range for {info.datatype}")
    elif count and kind not in _NUMBER_KINDS:
        raise InvalidArgument(f"{where}: {info.datatype} data must be numbers")
    return values.astype(dtype).reshape(-1)


def _flatten(data: list[Any], where: str) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _from_binary(tensor: InputTensor, info: TensorInfo, count: int, limits: RequestLimits) -> Any:
    where = f"input '{tensor.name}'"
    raw = tensor.raw
    assert raw is not None
    if info.datatype == "BYTES":
        if len(raw) < 4 * count:
            raise InvalidArgument(
                f"{where}: binary data has {len(raw)} bytes, too few for the {count} BYTES "
                "elements (4-byte length prefix each)"
            )
        check_bytes_size(where, count, len(raw) - 4 * count, limits)
        try:
            return deserialize_bytes(raw, count)
        except ValueError as exc:
            raise InvalidArgument(f"{where}: {exc}") from None
    dtype = NUMPY_DTYPES[info.datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidArgument(
            f"{where}: binary_data_size is {len(raw)} bytes, shape {list(tensor.shape)} of "
            f"{info.datatype} needs {count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count)


def decode_request(parsed: HttpRequest, io: ModelIO, limits: RequestLimits) -> InferRequest:
    """The numpy request for the version ``io`` describes."""
    inputs: dict[str, np.ndarray] = {}
    for tensor in parsed.inputs:
        info = io.inputs.get(tensor.name)
        where = f"input '{_echo(tensor.name)}'"
        if info is None:
            raise InvalidArgument(
                f"unknown input '{_echo(tensor.name)}'; the model's inputs are {sorted(io.inputs)}"
            )
        if tensor.name in inputs:
            raise InvalidArgument(f"{where} is given more than once")
        if tensor.datatype != info.datatype:
            raise InvalidArgument(
                f"{where}: datatype {_echo(tensor.datatype) or '(empty)'} does not match the "
                f"model's {info.datatype}"
            )
        count = check_shape(where, tensor.shape, info, limits)
        if tensor.raw is not None:
            flat = _from_binary(tensor, info, count, limits)
        else:
            flat = _from_json(tensor, info, count, limits)
        inputs[tensor.name] = to_model(flat.reshape(tensor.shape), info, io.batched)
    rows = batch_rows(inputs, io)
    outputs = tuple(o.name for o in parsed.outputs)
    check_outputs(outputs, io)
    classification: dict[str, int] = {}
    for o in parsed.outputs:
        k = o.classification
        if k is None:
            continue
        if isinstance(k, bool) or not isinstance(k, int):
            raise InvalidArgument(
                f"output '{o.name}': 'classification' parameter must be an integer"
            )
        classification[o.name] = class_count(k, io.outputs[o.name])
    return InferRequest(
        inputs=inputs,
        outputs=outputs,
        rows=rows,
        id=parsed.id,
        parameters=parsed.parameters,
        classification=classification,
    )


# -- response ------------------------------------------------------------------------------


def _json_data(array: np.ndarray, name: str) -> Any:
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype == object:
        try:
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in flat]
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"output '{name}' holds bytes that are not UTF-8; ask for it with "
                "'binary_data': true"
            ) from None
    if flat.dtype == NUMPY_DTYPES["BF16"]:
        return flat.astype(np.float32)
    return flat


def encode_response(
    model_name: str,
    model_version: str,
    parsed: HttpRequest,
    outputs: Mapping[str, np.ndarray],
    io: ModelIO,
    order: Sequence[str],
    classification: Mapping[str, int],
) -> tuple[bytes, int | None]:
    """The response body, and the JSON part's length when binary data follows."""
    binary_asked = {o.name: o.binary or parsed.binary_output for o in parsed.outputs}
    names = order or [n for n in io.outputs if n in outputs]
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        info = io.outputs[name]
        datatype, array = answer_output(outputs[name], info, io.batched, classification.get(name))
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary_asked.get(name, parsed.binary_output):
            if datatype == "BYTES":
                blob = serialize_bytes(array)
            else:
                blob = np.ascontiguousarray(array, dtype=NUMPY_DTYPES[datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(array, name)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if parsed.id:
        doc["id"] = parsed.id
    doc["outputs"] = entries
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
