"""Request building and response parsing shared by the sync and asyncio clients.

Everything here is transport-free: the clients only pick a channel kind and
decide whether to ``await``. Each unary RPC is described once as a ``Unary``
(stub method name, request message, reply parser) so both clients run the
same code path.
"""

from __future__ import annotations

import math
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

import grpc
import numpy as np
import numpy.typing as npt

from inferd.clients.errors import InferenceServerError
from inferd.protos import grpc_service_pb2 as pb
from inferd.protos.datatypes import (
    CONTENTS_FIELD,
    NUMPY_DTYPES,
    deserialize_bytes,
    numpy_dtype,
    serialize_bytes,
    v2_datatype,
)
from inferd.protos.model_card import model_card

T = TypeVar("T")
NDArray: TypeAlias = npt.NDArray[Any]
ParameterValue: TypeAlias = bool | int | float | str
Metadata: TypeAlias = Sequence[tuple[str, str | bytes]]
#: One streamed request: (request id, inputs).
StreamItem: TypeAlias = tuple[str, Mapping[str, NDArray]]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
# Element types a BYTES object array may hold; anything else would go through
# bytes(x), which turns an int n into n zero bytes instead of failing.
_BYTES_LIKE = (bytes, bytearray, memoryview, str)


class InferResult(Mapping[str, NDArray]):
    """One inference response: a read-only mapping of output name -> numpy array.

    Arrays keep the server's order, dtype and shape; BYTES outputs are object
    arrays of ``bytes``. Arrays are read-only (raw outputs are views of the
    response buffer); ``.copy()`` one to modify it.
    """

    __slots__ = ("_outputs", "id", "model_name", "model_version", "parameters")

    def __init__(
        self,
        outputs: Mapping[str, NDArray],
        *,
        model_name: str = "",
        model_version: str = "",
        id: str = "",
        parameters: Mapping[str, ParameterValue] | None = None,
    ) -> None:
        self._outputs = dict(outputs)
        self.model_name = model_name
        self.model_version = model_version
        self.id = id
        self.parameters: dict[str, ParameterValue] = dict(parameters or {})

    def __getitem__(self, name: str) -> NDArray:
        return self._outputs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._outputs.items())
        return f"<InferResult {self.model_name!r} version={self.model_version!r} {{{shapes}}}>"


# --- parameters ----------------------------------------------------------------


def encode_parameters(target: Any, parameters: Mapping[str, ParameterValue] | None) -> None:
    """Fill a ``map<string, InferParameter>`` from plain Python values."""
    for key, value in (parameters or {}).items():
        param = target[key]
        # bool first: it is an int subclass.
        if isinstance(value, bool | np.bool_):
            param.bool_param = bool(value)
        elif isinstance(value, int | np.integer):
            number = int(value)
            if _INT64_MIN <= number <= _INT64_MAX:
                param.int64_param = number
            elif _INT64_MAX < number <= _UINT64_MAX:
                param.uint64_param = number
            else:
                raise ValueError(f"parameter {key!r}: {number} does not fit in 64 bits")
        elif isinstance(value, float | np.floating):
            param.double_param = float(value)
        elif isinstance(value, str):
            param.string_param = value
        else:
            raise TypeError(
                f"parameter {key!r}: {type(value).__name__} is not bool, int, float or str"
            )


def decode_parameters(source: Any) -> dict[str, ParameterValue]:
    out: dict[str, ParameterValue] = {}
    for key, param in source.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(param, choice)
    return out


# --- tensors -------------------------------------------------------------------


def encode_tensor(name: str, value: npt.ArrayLike) -> tuple[str, list[int], bytes]:
    """(datatype, shape, raw bytes) for one input. str/bytes arrays are BYTES."""
    array = np.asarray(value)
    try:
        datatype = v2_datatype(array.dtype)
    except ValueError as err:
        raise ValueError(f"input {name!r}: {err}") from None
    if datatype == "BYTES":
        if array.dtype.kind == "O":
            for index, item in enumerate(array.flat):
                if not isinstance(item, _BYTES_LIKE):
                    raise ValueError(
                        f"input {name!r}: BYTES elements must be bytes or str, "
                        f"element {index} is {type(item).__name__}"
                    )
        raw = serialize_bytes(array)
    else:
        # Copies only when the array is strided or big-endian; tobytes() is the
        # one copy protobuf forces (upb's repeated bytes take only bytes).
        raw = np.ascontiguousarray(array, dtype=NUMPY_DTYPES[datatype]).tobytes()
    return datatype, list(array.shape), raw


def decode_tensor(datatype: str, shape: Sequence[int], raw: bytes | None, contents: Any) -> NDArray:
    """One output as a read-only array; ``raw`` None means use typed ``contents``.

    Raises ValueError when the data does not match the datatype and shape.
    """
    dtype = numpy_dtype(datatype)
    if dtype is None:
        raise ValueError(f"unknown datatype {datatype!r}")
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise ValueError(f"shape {list(dims)} has a negative dimension")
    count = math.prod(dims)
    array: NDArray
    if raw is not None:
        if datatype == "BYTES":
            array = deserialize_bytes(raw, count)
        else:
            expected = count * dtype.itemsize
            if len(raw) != expected:
                raise ValueError(
                    f"{len(raw)} bytes of data for {datatype} {list(dims)} (expected {expected})"
                )
            array = np.frombuffer(raw, dtype=dtype)
    else:
        field = CONTENTS_FIELD.get(datatype)
        if field is None:
            raise ValueError(f"{datatype} has no typed contents and no raw data was sent")
        values = getattr(contents, field)
        if len(values) != count:
            raise ValueError(f"{len(values)} values for {datatype} {list(dims)} (expected {count})")
        if datatype == "BYTES":
            array = np.empty(count, dtype=object)
            array[:] = [bytes(v) for v in values]
        else:
            try:
                # Through a list: numpy wraps out-of-range ints silently when
                # reading protobuf's repeated container directly.
                array = np.array(list(values), dtype=dtype)
            except OverflowError as err:
                raise ValueError(f"{datatype} value out of range: {err}") from None
    array = array.reshape(dims)
    array.flags.writeable = False
    return array


# --- requests and responses -----------------------------------------------------


def encode_request(
    model: str,
    inputs: Mapping[str, npt.ArrayLike],
    *,
    outputs: Sequence[str] | None = None,
    version: str = "",
    request_id: str = "",
    parameters: Mapping[str, ParameterValue] | None = None,
) -> Any:
    """Build a ``ModelInferRequest``; every input travels in raw_input_contents.

    Raises ValueError/TypeError for inputs or parameters the protocol cannot
    carry, before anything is sent.
    """
    request = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    encode_parameters(request.parameters, parameters)
    raw_contents: list[bytes] = []
    for name, value in inputs.items():
        datatype, shape, raw = encode_tensor(name, value)
        request.inputs.add(name=name, datatype=datatype, shape=shape)
        raw_contents.append(raw)
    request.raw_input_contents.extend(raw_contents)
    if isinstance(outputs, str):  # a lone name would otherwise iterate as letters
        outputs = [outputs]
    for output in outputs or ():
        request.outputs.add(name=output)
    return request


def decode_response(response: Any) -> InferResult:
    """Turn a ``ModelInferResponse`` into an InferResult.

    A response whose data does not match its declared datatypes and shapes
    raises InferenceServerError(INTERNAL): the server broke the protocol.
    """
    raw = response.raw_output_contents
    if raw and len(raw) != len(response.outputs):
        raise _malformed(f"{len(raw)} raw_output_contents for {len(response.outputs)} outputs")
    arrays: dict[str, NDArray] = {}
    for index, output in enumerate(response.outputs):
        try:
            arrays[output.name] = decode_tensor(
                output.datatype, output.shape, raw[index] if raw else None, output.contents
            )
        except ValueError as err:
            raise _malformed(f"output {output.name!r}: {err}") from None
    return InferResult(
        arrays,
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id,
        parameters=decode_parameters(response.parameters),
    )


def decode_stream_response(message: Any) -> InferResult | InferenceServerError:
    """One ``ModelStreamInferResponse``: a result, or the error for one request.

    Stream errors carry only a message, no status code, so they surface as
    UNKNOWN (INTERNAL would claim a server bug, which the message may not be).
    """
    request_id = message.infer_response.id
    if message.error_message:
        return InferenceServerError(
            grpc.StatusCode.UNKNOWN, message.error_message, request_id=request_id
        )
    try:
        return decode_response(message.infer_response)
    except InferenceServerError as err:
        err.request_id = request_id
        return err


def _malformed(detail: str) -> InferenceServerError:
    return InferenceServerError(grpc.StatusCode.INTERNAL, f"malformed response: {detail}")


class StreamRequests:
    """Encodes streamed (request_id, inputs) items lazily, for either client.

    gRPC consumes request iterators on its own thread (sync) or task (aio),
    where an exception would only cancel the call with no trace of the cause.
    So a failure to encode is kept in ``error`` and ends the request stream;
    the caller drains the replies to what was sent, then raises it.
    """

    def __init__(
        self,
        items: Iterable[StreamItem] | AsyncIterable[StreamItem],
        model: str,
        *,
        outputs: Sequence[str] | None,
        version: str,
        parameters: Mapping[str, ParameterValue] | None,
    ) -> None:
        self._items = items
        self._model = model
        self._outputs = outputs
        self._version = version
        self._parameters = parameters
        self.error: Exception | None = None

    def _encode(self, item: StreamItem) -> Any:
        request_id, inputs = item
        return encode_request(
            self._model,
            inputs,
            outputs=self._outputs,
            version=self._version,
            request_id=request_id,
            parameters=self._parameters,
        )

    def __iter__(self) -> Iterator[Any]:
        try:
            if isinstance(self._items, AsyncIterable):
                raise TypeError("the sync client needs a plain iterable of (request_id, inputs)")
            for item in self._items:
                yield self._encode(item)
        except Exception as err:
            self.error = err

    async def __aiter__(self) -> AsyncIterator[Any]:
        try:
            if isinstance(self._items, AsyncIterable):
                async for item in self._items:
                    yield self._encode(item)
            else:
                for item in self._items:
                    yield self._encode(item)
        except Exception as err:
            self.error = err


# --- unary RPCs ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unary(Generic[T]):
    """One unary call: the generated stub's method name, the request, the reply parser."""

    method: str
    request: Any
    parse: Callable[[Any], T]


def server_live() -> Unary[bool]:
    return Unary("ServerLive", pb.ServerLiveRequest(), lambda r: bool(r.live))


def server_ready() -> Unary[bool]:
    return Unary("ServerReady", pb.ServerReadyRequest(), lambda r: bool(r.ready))


def model_ready(name: str, version: str) -> Unary[bool]:
    request = pb.ModelReadyRequest(name=name, version=version)
    return Unary("ModelReady", request, lambda r: bool(r.ready))


def server_metadata() -> Unary[dict[str, Any]]:
    return Unary("ServerMetadata", pb.ServerMetadataRequest(), message_to_dict)


def model_metadata(name: str, version: str) -> Unary[dict[str, Any]]:
    request = pb.ModelMetadataRequest(name=name, version=version)
    return Unary("ModelMetadata", request, metadata_to_dict)


def metadata_to_dict(message: pb.ModelMetadataResponse) -> dict[str, Any]:
    """A ModelMetadata reply as plain Python, the model card as ``properties``."""
    return {**message_to_dict(message), "properties": model_card(message)}


def model_config(name: str, version: str) -> Unary[dict[str, Any]]:
    request = pb.ModelConfigRequest(name=name, version=version)
    return Unary("ModelConfig", request, lambda r: message_to_dict(r.config))


def model_statistics(name: str, version: str) -> Unary[dict[str, Any]]:
    request = pb.ModelStatisticsRequest(name=name, version=version)
    return Unary("ModelStatistics", request, message_to_dict)


def repository_index(ready: bool) -> Unary[list[dict[str, Any]]]:
    request = pb.RepositoryIndexRequest(ready=ready)
    return Unary("RepositoryIndex", request, lambda r: [message_to_dict(m) for m in r.models])


def load_model(name: str) -> Unary[None]:
    request = pb.RepositoryModelLoadRequest(model_name=name)
    return Unary("RepositoryModelLoad", request, lambda r: None)


def unload_model(name: str) -> Unary[None]:
    request = pb.RepositoryModelUnloadRequest(model_name=name)
    return Unary("RepositoryModelUnload", request, lambda r: None)


def infer(request: Any) -> Unary[InferResult]:
    return Unary("ModelInfer", request, decode_response)


def message_to_dict(message: Any) -> dict[str, Any]:
    """A message as plain Python: proto field names, enums by name.

    Unlike ``json_format.MessageToDict``, 64-bit integers stay ``int`` (shapes,
    counters) and bytes stay ``bytes``. Fields without presence are always
    present (so ``cfg["max_batch_size"]`` works); unset sub-messages and
    oneof members are left out.
    """
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.has_presence and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        if field.is_repeated:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                out[field.name] = {k: _plain(value_field, v) for k, v in value.items()}
            else:
                out[field.name] = [_plain(field, v) for v in value]
        else:
            out[field.name] = _plain(field, value)
    return out


def _plain(field: Any, value: Any) -> Any:
    if field.type == field.TYPE_MESSAGE:
        return message_to_dict(value)
    if field.type == field.TYPE_ENUM:
        known = field.enum_type.values_by_number.get(value)
        return known.name if known is not None else value
    return value


# --- channel and metadata ----------------------------------------------------------


def open_channel(
    url: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]],
) -> grpc.Channel:
    """The blocking channel every sync client uses (TLS when ``credentials``)."""
    if credentials is None:
        return grpc.insecure_channel(url, options=options)
    return grpc.secure_channel(url, credentials, options=options)


def open_aio_channel(
    url: str,
    credentials: grpc.ChannelCredentials | None,
    options: Sequence[tuple[str, Any]],
) -> grpc.aio.Channel:
    """The asyncio channel every async client uses (TLS when ``credentials``)."""
    if credentials is None:
        return grpc.aio.insecure_channel(url, options=options)
    return grpc.aio.secure_channel(url, credentials, options=options)


def channel_options(
    max_message_bytes: int,
    extra: Sequence[tuple[str, Any]],
    defaults: Sequence[tuple[str, Any]] = (),
) -> list[tuple[str, Any]]:
    """Message size limits for both directions plus ``defaults``; explicit
    ``extra`` options win."""
    overridden = {key for key, _ in extra}
    base = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        *defaults,
    ]
    return [opt for opt in base if opt[0] not in overridden] + list(extra)


def normalize_metadata(metadata: Metadata) -> tuple[tuple[str, str | bytes], ...]:
    # gRPC rejects upper-case header names; HTTP/2 headers are case-insensitive.
    return tuple((key.lower(), value) for key, value in metadata)


def merge_metadata(
    default: tuple[tuple[str, str | bytes], ...], per_call: Metadata
) -> tuple[tuple[str, str | bytes], ...] | None:
    """Client metadata plus per-call metadata; a per-call key replaces the
    client's entries for that key (e.g. a fresher auth token)."""
    call = normalize_metadata(per_call)
    if not call:
        return default or None
    keys = {key for key, _ in call}
    return tuple(item for item in default if item[0] not in keys) + call
