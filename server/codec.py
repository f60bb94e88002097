"""Protobuf <-> numpy at the edge: decode and validate a ModelInferRequest
against the model's IO, and encode outputs as raw_output_contents.

Every check runs before any allocation sized by the request, and every error
names the field at fault (``InvalidArgument``); a caller never sees internals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos.datatypes import CONTENTS_FIELD, NUMPY_DTYPES, deserialize_bytes, serialize_bytes
from inferd.server.classification import answer_output, check_classifiable
from inferd.server.errors import InvalidArgument, ResourceExhausted
from inferd.server.model_io import ModelIO, TensorInfo
from inferd.server.request import InferRequest, ParamValue
from inferd.server.reshape import to_model

#: Largest element count accepted for one tensor; bounds memory per request
#: before anything is allocated. 2**28 elements = 1 GiB of FP32.
DEFAULT_MAX_ELEMENTS = 1 << 28
#: Largest decoded tensor, bytes (see ``RequestLimits.max_tensor_bytes``).
DEFAULT_MAX_TENSOR_BYTES = 256 << 20
#: Most inputs, requested outputs and request parameters one request may carry.
DEFAULT_MAX_INPUTS = 256
DEFAULT_MAX_OUTPUTS = 256
DEFAULT_MAX_PARAMETERS = 256
#: What one BYTES element costs in memory besides its payload, bytes: the
#: object array's pointer plus CPython's ``bytes`` header (33 bytes), rounded up.
BYTES_ELEMENT_OVERHEAD = 48


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """Per-request limits the decoder enforces before allocating anything a
    request sizes. Over a limit: RESOURCE_EXHAUSTED naming the limit.

    ``max_elements``: elements in one tensor (bounds per-element work).
    ``max_tensor_bytes``: one decoded tensor's memory: elements x item size,
    and for BYTES ``BYTES_ELEMENT_OVERHEAD`` per element plus the payload (a
    64 MiB message of one-byte strings would otherwise become ~1 GiB of
    Python objects). ``max_inputs`` / ``max_outputs`` / ``max_parameters``:
    entries in ``inputs``, ``outputs`` and ``parameters``.
    """

    max_elements: int = DEFAULT_MAX_ELEMENTS
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    max_inputs: int = DEFAULT_MAX_INPUTS
    max_outputs: int = DEFAULT_MAX_OUTPUTS
    max_parameters: int = DEFAULT_MAX_PARAMETERS


DEFAULT_LIMITS = RequestLimits()

#: Longest request-supplied text (name, datatype) and most dims echoed in an
#: error: gRPC refuses status messages over 16 KiB, and the caller would get
#: that transport error instead of ours.
_ECHO_CHARS = 80
_ECHO_DIMS = 8


def _echo(text: str) -> str:
    return text if len(text) <= _ECHO_CHARS else text[:_ECHO_CHARS] + "..."


def _echo_shape(shape: tuple[int, ...]) -> str:
    if len(shape) <= _ECHO_DIMS:
        return str(list(shape))
    return "[" + ", ".join(str(d) for d in shape[:_ECHO_DIMS]) + ", ...]"


def decode_params(params: Mapping[str, pb.InferParameter]) -> dict[str, ParamValue]:
    out: dict[str, ParamValue] = {}
    for key, value in params.items():
        which = value.WhichOneof("parameter_choice")
        if which is not None:
            out[key] = getattr(value, which)
    return out


def encode_param(value: ParamValue) -> pb.InferParameter:
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        return pb.InferParameter(int64_param=value)
    if isinstance(value, float):
        return pb.InferParameter(double_param=value)
    return pb.InferParameter(string_param=str(value))


def _check_shape(
    tensor: pb.ModelInferRequest.InferInputTensor, info: TensorInfo, limits: RequestLimits
) -> tuple[tuple[int, ...], int]:
    shape = tuple(tensor.shape)
    return shape, check_shape(f"input '{tensor.name}'", shape, info, limits)


def check_shape(where: str, shape: tuple[int, ...], info: TensorInfo, limits: RequestLimits) -> int:
    """Check a request's ``shape`` against the model's and the limits, before
    anything is allocated; returns its element count. Every front end's decoder
    calls this."""
    if any(d < 0 for d in shape):
        raise InvalidArgument(f"{where}: shape {_echo_shape(shape)} has a negative dimension")
    if len(shape) != len(info.shape):
        raise InvalidArgument(
            f"{where}: shape {_echo_shape(shape)} has rank {len(shape)}, model expects rank "
            f"{len(info.shape)} {_fmt(info.shape)}"
        )
    for got, want in zip(shape, info.shape, strict=True):
        if want != -1 and got != want:
            raise InvalidArgument(
                f"{where}: shape {list(shape)} does not match model shape {_fmt(info.shape)}"
            )
    count = 1
    for d in shape:  # Python ints: no overflow, bounded before allocation
        # Each dim on its own too: numpy cannot hold [0, 2**62] although it is empty.
        if d > limits.max_elements:
            raise ResourceExhausted(
                f"{where}: dimension {d} of shape {list(shape)} exceeds the limit of "
                f"{limits.max_elements} elements"
            )
        count *= d
        if count > limits.max_elements:
            raise ResourceExhausted(
                f"{where}: shape {list(shape)} exceeds the limit of {limits.max_elements} elements"
            )
    if info.datatype != "BYTES":
        size = count * NUMPY_DTYPES[info.datatype].itemsize
        if size > limits.max_tensor_bytes:
            raise ResourceExhausted(
                f"{where}: shape {list(shape)} of {info.datatype} is {size} bytes, over the "
                f"limit of {limits.max_tensor_bytes} bytes per tensor"
            )
    return count


def check_bytes_size(where: str, count: int, payload: int, limits: RequestLimits) -> None:
    size = count * BYTES_ELEMENT_OVERHEAD + payload
    if size > limits.max_tensor_bytes:
        raise ResourceExhausted(
            f"{where}: {count} BYTES elements with {payload} bytes of data take about {size} "
            f"bytes, over the limit of {limits.max_tensor_bytes} bytes per tensor"
        )


def _fmt(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("-1" if d < 0 else str(d) for d in shape) + "]"


def _decode_tensor(
    tensor: pb.ModelInferRequest.InferInputTensor,
    info: TensorInfo,
    raw: bytes | None,
    limits: RequestLimits,
) -> np.ndarray:
    where = f"input '{tensor.name}'"
    if tensor.datatype != info.datatype:
        raise InvalidArgument(
            f"{where}: datatype {_echo(tensor.datatype) or '(empty)'} does not match the model's "
            f"{info.datatype}"
        )
    shape, count = _check_shape(tensor, info, limits)
    dtype = NUMPY_DTYPES[info.datatype]
    if raw is not None:
        if info.datatype == "BYTES":
            # Every element carries a 4-byte length prefix; checking that first
            # keeps a tiny message with a huge shape from sizing the allocation.
            if len(raw) < 4 * count:
                raise InvalidArgument(
                    f"{where}: raw_input_contents has {len(raw)} bytes, too few for the "
                    f"{count} BYTES elements of shape {list(shape)} (4-byte length prefix each)"
                )
            check_bytes_size(where, count, len(raw) - 4 * count, limits)
            try:
                return deserialize_bytes(raw, count).reshape(shape)
            except ValueError as exc:
                raise InvalidArgument(f"{where}: {exc}") from None
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise InvalidArgument(
                f"{where}: raw_input_contents has {len(raw)} bytes, shape {list(shape)} of "
                f"{info.datatype} needs {expected}"
            )
        # Zero-copy view on the message's buffer; engines treat inputs as read-only.
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
    field = CONTENTS_FIELD.get(info.datatype)
    if field is None:
        raise InvalidArgument(f"{where}: {info.datatype} data must be sent in raw_input_contents")
    values = getattr(tensor.contents, field)
    if len(values) != count:
        raise InvalidArgument(
            f"{where}: contents.{field} has {len(values)} elements, shape {list(shape)} needs "
            f"{count}"
        )
    if info.datatype == "BYTES":
        check_bytes_size(where, count, sum(len(v) for v in values), limits)
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    try:
        typed: np.ndarray = np.asarray(values, dtype=dtype).reshape(shape)
        return typed
    except OverflowError:
        raise InvalidArgument(
            f"{where}: contents.{field} has values out of range for {info.datatype}"
        ) from None


def decode_request(
    msg: pb.ModelInferRequest,
    io: ModelIO,
    *,
    max_elements: int | None = None,
    limits: RequestLimits = DEFAULT_LIMITS,
) -> InferRequest:
    """Validate ``msg`` against ``io`` and return the numpy request.

    Raises only ``InferdError`` subclasses (a fuzz test holds it to that).
    ``max_elements`` overrides ``limits.max_elements``."""
    if max_elements is not None:
        limits = replace(limits, max_elements=max_elements)
    # Counts first: each is one length read, before any per-entry work.
    check_counts(len(msg.inputs), len(msg.outputs), len(msg.parameters), limits)
    raw_contents = msg.raw_input_contents
    if raw_contents and len(raw_contents) != len(msg.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw_contents)} entries for {len(msg.inputs)} inputs"
        )
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(msg.inputs):
        info = io.inputs.get(tensor.name)
        if info is None:
            raise InvalidArgument(
                f"unknown input '{_echo(tensor.name)}'; the model's inputs are {sorted(io.inputs)}"
            )
        if tensor.name in inputs:
            raise InvalidArgument(f"input '{tensor.name}' is given more than once")
        if raw_contents and tensor.HasField("contents"):
            raise InvalidArgument(
                f"input '{tensor.name}': contents and raw_input_contents are both set"
            )
        raw = raw_contents[i] if raw_contents else None
        inputs[tensor.name] = to_model(_decode_tensor(tensor, info, raw, limits), info, io.batched)
    rows = batch_rows(inputs, io)
    outputs = tuple(o.name for o in msg.outputs)
    check_outputs(outputs, io)
    classification = {
        o.name: _class_count(o.parameters["classification"], io.outputs[o.name])
        for o in msg.outputs
        if "classification" in o.parameters
    }
    return InferRequest(
        inputs=inputs,
        outputs=outputs,
        rows=rows,
        id=msg.id,
        parameters=decode_params(msg.parameters),
        classification=classification,
    )


def _class_count(param: pb.InferParameter, info: TensorInfo) -> int:
    if param.WhichOneof("parameter_choice") != "int64_param":
        raise InvalidArgument(
            f"output '{info.name}': invalid value type for 'classification' parameter, "
            "expected int64_param"
        )
    return class_count(param.int64_param, info)


def check_counts(inputs: int, outputs: int, parameters: int, limits: RequestLimits) -> None:
    """Entries in a request's inputs, requested outputs and parameters against the limits."""
    if inputs > limits.max_inputs:
        raise ResourceExhausted(
            f"request has {inputs} inputs, over the limit of {limits.max_inputs}"
        )
    if outputs > limits.max_outputs:
        raise ResourceExhausted(
            f"request asks for {outputs} outputs, over the limit of {limits.max_outputs}"
        )
    if parameters > limits.max_parameters:
        raise ResourceExhausted(
            f"request has {parameters} parameters, over the limit of {limits.max_parameters}"
        )


def batch_rows(inputs: Mapping[str, np.ndarray], io: ModelIO) -> int:
    """Check that no input is missing and that the inputs agree on a batch size
    the model takes; returns the rows (1 for a model that does not batch)."""
    missing = [n for n, t in io.inputs.items() if n not in inputs and not t.optional]
    if missing:
        raise InvalidArgument(f"missing input(s) {missing}")
    if not io.batched or not inputs:
        return 1
    batch_sizes = {a.shape[0] for a in inputs.values()}
    if len(batch_sizes) != 1:
        raise InvalidArgument(f"inputs disagree on the batch dimension: {sorted(batch_sizes)}")
    rows = batch_sizes.pop()
    if rows < 1:
        raise InvalidArgument("batch size is 0; send at least one row")
    if rows > io.max_batch_size:
        raise InvalidArgument(
            f"batch size {rows} exceeds the model's max_batch_size {io.max_batch_size}"
        )
    return int(rows)


def check_outputs(outputs: Sequence[str], io: ModelIO) -> None:
    """Requested output names: each known, none twice."""
    for name in outputs:
        if name not in io.outputs:
            raise InvalidArgument(
                f"unknown output '{_echo(name)}'; the model's outputs are {sorted(io.outputs)}"
            )
    if len(set(outputs)) != len(outputs):
        seen: set[str] = set()
        for name in outputs:
            if name in seen:
                raise InvalidArgument(f"output '{name}' is requested more than once")
            seen.add(name)


def class_count(value: int, info: TensorInfo) -> int:
    """K of an output's ``classification`` parameter, once it is known to be
    an integer (Triton's checks)."""
    where = f"output '{info.name}'"
    if value < 1:
        raise InvalidArgument(
            f"{where}: invalid value {value} for 'classification' parameter, expected >= 1"
        )
    check_classifiable(info)
    # Triton holds K in 32 bits; more than that many classes cannot exist anyway.
    return min(value, 2**32 - 1)


def encode_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Mapping[str, np.ndarray],
    io: ModelIO,
    order: Sequence[str] = (),
    classification: Mapping[str, int] | None = None,
) -> pb.ModelInferResponse:
    """Outputs in ``order`` (default: the model's order) as raw contents, in
    the config's shape (server.reshape); ``classification`` maps an output
    to its K, answered as Triton's class results (server.classification)."""
    classes = classification or {}
    names = order or [n for n in io.outputs if n in outputs]
    response = pb.ModelInferResponse(
        model_name=model_name, model_version=model_version, id=request_id
    )
    raw = response.raw_output_contents
    for name in names:
        info = io.outputs[name]
        datatype, array = answer_output(outputs[name], info, io.batched, classes.get(name))
        response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if datatype == "BYTES":
            raw.append(serialize_bytes(array))
        else:
            raw.append(np.ascontiguousarray(array, dtype=NUMPY_DTYPES[datatype]).tobytes())
    return response
