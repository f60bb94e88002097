"""Property-based fuzzing of the request decoder (``server.codec.decode_request``).

Thousands of generated ModelInferRequests (structured ones, and byte-level
mutations of valid ones that still parse) against several model signatures:
every outcome must be a decoded request or a clean ``InferdError`` with a
caller-facing status and a short message, never another exception (which the
servicer would answer as a bare INTERNAL) and never a big allocation.
"""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos.datatypes import CONTENTS_FIELD, NUMPY_DTYPES
from inferd.server.codec import RequestLimits, decode_request
from inferd.server.errors import InferdError, Status
from inferd.server.model_io import ModelIO, TensorInfo
from inferd.server.request import InferRequest

DATATYPES = sorted(NUMPY_DTYPES)


def _io(
    inputs: dict[str, tuple[str, tuple[int, ...]]],
    outputs: dict[str, tuple[str, tuple[int, ...]]],
    max_batch: int,
) -> ModelIO:
    return ModelIO(
        {n: TensorInfo(n, d, s) for n, (d, s) in inputs.items()},
        {n: TensorInfo(n, d, s) for n, (d, s) in outputs.items()},
        max_batch,
    )


MODELS = [
    _io(
        {"pixels": ("FP32", (-1, 64))},
        {"probabilities": ("FP32", (-1, 10)), "label": ("INT64", (-1, 1))},
        64,
    ),
    _io(
        {"token_ids": ("INT64", (-1, 8)), "weights": ("FP16", (-1, 8)), "tag": ("BYTES", (-1, 1))},
        {"id_sum": ("INT64", (-1, 1)), "tag_echo": ("BYTES", (-1, 1))},
        64,
    ),
    # Every V2 datatype, a variable inner dimension, batched.
    _io({f"in_{d}": (d, (-1, -1)) for d in DATATYPES}, {"out": ("FP32", (-1, 2))}, 4),
    # Not batched, fixed and variable dims.
    _io({"a": ("INT8", (3,)), "b": ("BYTES", (-1, 2))}, {"c": ("UINT8", (3,))}, 0),
]

ALL_INPUTS = sorted({n for m in MODELS for n in m.inputs})
ALL_OUTPUTS = sorted({n for m in MODELS for n in m.outputs})

SMALL = RequestLimits(
    max_elements=4096, max_tensor_bytes=64 << 10, max_inputs=16, max_outputs=8, max_parameters=8
)
#: Statuses the decoder may answer with; anything else is a bug.
ALLOWED = {
    Status.INVALID_ARGUMENT,
    Status.RESOURCE_EXHAUSTED,
}

dims = st.one_of(
    st.integers(0, 5),
    st.integers(-3, -1),
    st.sampled_from([2**31 - 1, 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1, -(2**63)]),
)
shapes = st.lists(dims, max_size=5)
names = st.one_of(st.sampled_from(ALL_INPUTS), st.text(max_size=12))
datatypes = st.one_of(st.sampled_from(DATATYPES), st.text(max_size=8))

CONTENT_FIELDS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32, allow_nan=True, allow_infinity=True),
    "fp64_contents": st.floats(allow_nan=True, allow_infinity=True),
    "bytes_contents": st.binary(max_size=8),
}


@st.composite
def bytes_payload(draw: st.DrawFn) -> bytes:
    """BYTES wire data: valid prefixes, or prefixes that lie."""
    items = draw(st.lists(st.binary(max_size=6), max_size=6))
    data = b"".join(struct.pack("<I", len(i)) + i for i in items)
    cut = draw(st.integers(0, len(data)))
    junk = draw(st.binary(max_size=6))
    lie = draw(st.sampled_from([b"", struct.pack("<I", 2**32 - 1), struct.pack("<I", 100)]))
    return draw(st.sampled_from([data, data, data[:cut], data + junk, lie + data]))


@st.composite
def raw_payload(draw: st.DrawFn, shape: list[int], datatype: str) -> bytes:
    if datatype == "BYTES":
        return draw(bytes_payload())
    count = 1
    for d in shape:
        count *= d
    itemsize = NUMPY_DTYPES[datatype].itemsize if datatype in NUMPY_DTYPES else 4
    exact = count * itemsize
    if 0 <= exact <= 4096:
        return draw(
            st.sampled_from(
                [bytes(exact)] * 3
                + [bytes(max(0, exact - 1)), bytes(exact + itemsize), b"\xff" * exact]
            )
        )
    return draw(st.binary(max_size=64))


def _mostly(draw: st.DrawFn, good: object, bad: st.SearchStrategy[object]) -> object:
    """``good`` nine times in ten, else something from ``bad``."""
    return good if draw(st.integers(0, 9)) else draw(bad)


@st.composite
def tensor_for(
    draw: st.DrawFn, io: ModelIO, info: TensorInfo, rows: int, raw: bool
) -> tuple[pb.ModelInferRequest.InferInputTensor, bytes]:
    """One input, near-valid for ``info``: each property is right most of the time."""
    fitting = [
        rows if i == 0 and io.batched else (d if d >= 0 else 2) for i, d in enumerate(info.shape)
    ]
    shape = _mostly(draw, fitting, shapes)
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=str(_mostly(draw, info.name, names)),
        datatype=str(_mostly(draw, info.datatype, datatypes)),
        shape=shape,  # type: ignore[arg-type]
    )
    payload = b""
    if raw:
        payload = draw(raw_payload(list(tensor.shape), tensor.datatype))
    elif draw(st.integers(0, 5)):
        count = 1
        for d in tensor.shape:
            count *= d
        fields = [f for f, t in CONTENTS_FIELD.items() if t == info.datatype] or ["fp32_contents"]
        field = str(_mostly(draw, fields[0], st.sampled_from(sorted(CONTENT_FIELDS))))
        size = count if 0 <= count <= 64 and draw(st.integers(0, 4)) else draw(st.integers(0, 24))
        values = draw(st.lists(CONTENT_FIELDS[field], min_size=size, max_size=size))
        getattr(tensor.contents, field).extend(values)
    if draw(st.integers(0, 9)) == 0:
        tensor.parameters["binary_data_size"].int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    return tensor, payload


@st.composite
def requests(draw: st.DrawFn, io: ModelIO) -> pb.ModelInferRequest:
    raw = draw(st.booleans())
    rows = draw(st.sampled_from([1, 1, 2, 2, 3, 0, io.max_batch_size + 1]))
    msg = pb.ModelInferRequest(model_name=draw(st.text(max_size=8)), id=draw(st.text(max_size=8)))
    wanted = list(io.inputs.values())
    if draw(st.integers(0, 4)) == 0:
        wanted = draw(st.lists(st.sampled_from(wanted), max_size=len(wanted) + 1))
    for info in wanted:
        tensor, payload = draw(tensor_for(io, info, rows, raw))
        msg.inputs.append(tensor)
        if raw:
            msg.raw_input_contents.append(payload)
    extra = draw(st.integers(-1, 18))
    if extra < 0 and msg.raw_input_contents:
        msg.raw_input_contents.pop()
    elif extra == 1:
        msg.raw_input_contents.append(draw(st.binary(max_size=16)))
    output_names = st.one_of(st.sampled_from(sorted(io.outputs)), st.text(max_size=6))
    for name in draw(st.lists(output_names, max_size=3)):
        out = msg.outputs.add(name=name)
        if draw(st.integers(0, 5)) == 0:
            out.parameters["classification"].int64_param = 3
    params = draw(
        st.dictionaries(
            st.sampled_from(["timeout", "priority", "sequence_id", "x"]) | st.text(max_size=4),
            st.one_of(
                st.builds(pb.InferParameter, bool_param=st.booleans()),
                st.builds(pb.InferParameter, int64_param=st.integers(-(2**63), 2**63 - 1)),
                st.builds(pb.InferParameter, string_param=st.text(max_size=8)),
                st.builds(pb.InferParameter, double_param=st.floats()),
                st.builds(pb.InferParameter, uint64_param=st.integers(0, 2**64 - 1)),
                st.just(pb.InferParameter()),
            ),
            max_size=3,
        )
    )
    for key, value in params.items():
        msg.parameters[key].CopyFrom(value)
    return msg


@st.composite
def model_and_request(draw: st.DrawFn) -> tuple[ModelIO, pb.ModelInferRequest]:
    io = draw(st.sampled_from(MODELS))
    return io, draw(requests(io))


def check(msg: pb.ModelInferRequest, io: ModelIO, limits: RequestLimits) -> None:
    try:
        decoded = decode_request(msg, io, limits=limits)
    except InferdError as exc:
        assert exc.code in ALLOWED, (exc.code, exc.message)
        assert exc.message and len(exc.message) < 1000, exc.message
        event(f"refused: {exc.code.name}")
        return
    event("accepted")
    # Accepted: it must really match the model.
    assert isinstance(decoded, InferRequest)
    for name, array in decoded.inputs.items():
        info = io.inputs[name]
        assert array.ndim == len(info.shape)
        assert array.size <= limits.max_elements
        for got, want in zip(array.shape, info.shape, strict=True):
            assert want == -1 or got == want
    if io.batched and decoded.inputs:
        assert 1 <= decoded.rows <= io.max_batch_size


FUZZ = settings(
    max_examples=2500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


@FUZZ
@given(case=model_and_request())
def test_generated_requests_decode_or_fail_cleanly(
    case: tuple[ModelIO, pb.ModelInferRequest],
) -> None:
    check(case[1], case[0], SMALL)


@settings(FUZZ, max_examples=1500)
@given(case=model_and_request())
def test_generated_requests_with_default_limits_allocate_little(
    case: tuple[ModelIO, pb.ModelInferRequest],
) -> None:
    # Default limits admit huge shapes up to 2**28 elements; every one of
    # them must still be refused before anything is sized by it.
    tracemalloc.start()
    try:
        check(case[1], case[0], RequestLimits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"


def _seed_messages() -> list[bytes]:
    good = pb.ModelInferRequest(model_name="text_stats", id="x")
    good.inputs.add(name="token_ids", datatype="INT64", shape=[2, 8])
    good.inputs.add(name="weights", datatype="FP16", shape=[2, 8])
    good.inputs.add(name="tag", datatype="BYTES", shape=[2, 1])
    good.raw_input_contents.extend(
        [bytes(128), bytes(32), struct.pack("<I", 1) + b"a" + struct.pack("<I", 0)]
    )
    good.outputs.add(name="tag_echo")
    good.parameters["timeout"].int64_param = 1000
    typed = pb.ModelInferRequest(model_name="digits_mlp")
    typed.inputs.add(name="pixels", datatype="FP32", shape=[1, 64]).contents.fp32_contents.extend(
        np.arange(64, dtype=np.float32).tolist()
    )
    return [good.SerializeToString(), typed.SerializeToString()]


SEEDS = _seed_messages()


@settings(FUZZ, max_examples=1500)
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=6),
    model=st.sampled_from(range(len(MODELS))),
)
def test_mutated_wire_messages_decode_or_fail_cleanly(
    seed: int, edits: list[tuple[int, int]], model: int
) -> None:
    data = bytearray(SEEDS[seed])
    for position, value in edits:
        data[position % len(data)] = value
    msg = pb.ModelInferRequest()
    try:
        msg.ParseFromString(bytes(data))
    except Exception:
        return  # gRPC answers an unparsable message itself, before our code
    check(msg, MODELS[model], SMALL)


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
@pytest.mark.parametrize("raw", [True, False])
def test_an_empty_tensor_with_a_huge_dimension_is_refused(datatype: str, raw: bool) -> None:
    """[0, 2**40] holds no element, yet numpy cannot shape it (found by the fuzzer:
    a ValueError became INTERNAL); each dimension is bounded by the element limit."""
    io = MODELS[2]
    msg = pb.ModelInferRequest(model_name="m")
    tensor = msg.inputs.add(name=f"in_{datatype}", datatype=datatype, shape=[0, 2**40])
    if raw:
        msg.raw_input_contents.append(b"")
    else:
        tensor.contents.SetInParent()
    with pytest.raises(InferdError) as info:
        decode_request(msg, io, limits=SMALL)
    assert info.value.code is Status.RESOURCE_EXHAUSTED
    assert "dimension 1099511627776 of shape [0, 1099511627776] exceeds the limit" in (
        info.value.message
    )
