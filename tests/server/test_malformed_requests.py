"""Malformed ModelInfer requests over real gRPC, crafted with the raw stub.

Each row is one way a caller (or an attacker) can get a request wrong. The
server must answer with the right status code and a message that names the
problem, must not leak paths or internals, and must keep serving: a good
request follows every row.
"""

from __future__ import annotations

import re
import struct
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from conftest import ServerThread
from onnx import TensorProto, helper

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.server.app import ServerConfig

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


# --- request builders ------------------------------------------------------------


def prefixed(*items: bytes) -> bytes:
    """BYTES wire format: each element behind its 4-byte little-endian length."""
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def digits(
    shape: tuple[int, ...] = (1, 64),
    *,
    datatype: str = "FP32",
    name: str = "pixels",
    raw: bytes | None = None,
) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="digits_mlp", id="row")
    msg.inputs.add(name=name, datatype=datatype, shape=shape)
    # Pass raw explicitly for huge shapes; the default is sized by the shape.
    msg.raw_input_contents.append(bytes(4 * int(np.prod(shape))) if raw is None else raw)
    return msg


def text(
    rows: int = 2,
    *,
    shapes: dict[str, tuple[int, ...]] | None = None,
    raw: dict[str, bytes] | None = None,
    drop: tuple[str, ...] = (),
) -> pb.ModelInferRequest:
    """text_stats with all three inputs raw; override a shape or a payload by name."""
    shapes = {"token_ids": (rows, 8), "weights": (rows, 8), "tag": (rows, 1), **(shapes or {})}
    payload = {
        "token_ids": bytes(8 * 8 * rows),
        "weights": bytes(2 * 8 * rows),
        "tag": prefixed(*[b"t"] * rows),
        **(raw or {}),
    }
    types = {"token_ids": "INT64", "weights": "FP16", "tag": "BYTES"}
    msg = pb.ModelInferRequest(model_name="text_stats", id="row")
    for name in ("token_ids", "weights", "tag"):
        if name not in drop:
            msg.inputs.add(name=name, datatype=types[name], shape=shapes[name])
            msg.raw_input_contents.append(payload[name])
    return msg


def changed(
    msg: pb.ModelInferRequest, edit: Callable[[pb.ModelInferRequest], object]
) -> pb.ModelInferRequest:
    out = pb.ModelInferRequest()
    out.CopyFrom(msg)
    edit(out)
    return out


def with_version(msg: pb.ModelInferRequest, version: str) -> pb.ModelInferRequest:
    return changed(msg, lambda m: setattr(m, "model_version", version))


def for_model(name: str) -> pb.ModelInferRequest:
    return changed(digits(), lambda m: setattr(m, "model_name", name))


def with_param(msg: pb.ModelInferRequest, key: str, **value: object) -> pb.ModelInferRequest:
    return changed(msg, lambda m: m.parameters[key].CopyFrom(pb.InferParameter(**value)))


def with_outputs(msg: pb.ModelInferRequest, *names: str) -> pb.ModelInferRequest:
    return changed(msg, lambda m: [m.outputs.add(name=n) for n in names])


def typed_digits(values: list[float], shape: tuple[int, ...] = (1, 64)) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="digits_mlp", id="row")
    msg.inputs.add(name="pixels", datatype="FP32", shape=shape).contents.fp32_contents.extend(
        values
    )
    return msg


def all_typed_text() -> pb.ModelInferRequest:
    """text_stats with every input in typed contents; FP16 has no typed field."""
    msg = pb.ModelInferRequest(model_name="text_stats", id="row")
    msg.inputs.add(name="token_ids", datatype="INT64", shape=[1, 8]).contents.int64_contents.extend(
        range(8)
    )
    msg.inputs.add(name="weights", datatype="FP16", shape=[1, 8]).contents.fp32_contents.extend(
        [0.5] * 8
    )
    msg.inputs.add(name="tag", datatype="BYTES", shape=[1, 1]).contents.bytes_contents.append(b"t")
    return msg


def raw_and_typed() -> pb.ModelInferRequest:
    msg = digits()
    msg.inputs[0].contents.fp32_contents.extend([0.0] * 64)
    return msg


def duplicate_input() -> pb.ModelInferRequest:
    msg = digits()
    msg.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    msg.raw_input_contents.append(bytes(256))
    return msg


# --- the table -------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    request: pb.ModelInferRequest
    code: grpc.StatusCode
    #: Substrings the message must contain: the field, input, output or model at fault.
    mentions: tuple[str, ...]
    #: Caller-supplied text the message may quote (e.g. a model named
    #: '/etc/passwd'); removed before looking for leaked paths.
    echo: str = ""


def row(
    id: str,
    request: pb.ModelInferRequest,
    code: grpc.StatusCode,
    *mentions: str,
    echo: str = "",
) -> Any:
    return pytest.param(Row(request, code, mentions, echo), id=id)


HOSTILE_NAMES = ["../x", "/etc/passwd", "a/b", "$(rm -rf /)", "x;ls", "../digits_mlp", "DIGITS_MLP"]

ROWS = [
    # Model and version resolution.
    row("unknown-model", for_model("no_such_model"), NOT_FOUND, "'no_such_model'"),
    *[
        row(f"model-name-{name}", for_model(name), NOT_FOUND, f"'{name}'", echo=name)
        for name in HOSTILE_NAMES
    ],
    row("model-name-empty", for_model(""), NOT_FOUND, "model ''"),
    row("model-name-long", for_model("m" * 100_000), NOT_FOUND, "mmmm..."),
    row("unknown-version", with_version(digits(), "7"), NOT_FOUND, "7", "digits_mlp"),
    row("version-non-numeric", with_version(digits(), "latest"), NOT_FOUND, "'latest'"),
    row("version-traversal", with_version(digits(), "../1"), NOT_FOUND, "'../1'", echo="../1"),
    row("version-negative", with_version(digits(), "-1"), NOT_FOUND, "-1", "digits_mlp"),
    # int() accepts these, but none of them is how version 1 is written.
    row("version-underscore", with_version(digits(), "1_0"), NOT_FOUND, "'1_0'"),
    row("version-arabic-digit", with_version(digits(), "\u0661"), NOT_FOUND, "'\u0661'"),
    row("version-huge", with_version(digits(), "9" * 5000), NOT_FOUND, "digits_mlp"),
    # Datatype and shape.
    row("wrong-datatype", digits(datatype="FP64", raw=bytes(512)), INVALID, "pixels", "FP64"),
    row("empty-datatype", digits(datatype=""), INVALID, "pixels", "(empty)"),
    row("unknown-datatype", digits(datatype="FLOAT32"), INVALID, "pixels", "FLOAT32"),
    row("datatype-long", digits(datatype="F" * 50_000), INVALID, "pixels", "FFF..."),
    row("rank-too-low", digits((64,)), INVALID, "pixels", "rank 1"),
    row("rank-too-high", digits((1, 64, 1)), INVALID, "pixels", "rank 3"),
    row("rank-huge", digits((1,) * 20_000, raw=b""), INVALID, "pixels", "rank 20000"),
    row("fixed-dim-mismatch", digits((1, 63)), INVALID, "pixels", "[1, 63]", "[-1, 64]"),
    row("negative-dim", digits((-1, 64), raw=b""), INVALID, "pixels", "negative"),
    row("negative-inner-dim", digits((1, -64), raw=b""), INVALID, "pixels", "negative"),
    row("overflow-fixed-dim", digits((2**40, 2**40), raw=b""), INVALID, "pixels", "[-1, 64]"),
    row("overflow-elements", digits((2**40, 64), raw=b""), EXHAUSTED, "pixels", "limit"),
    row("overflow-int64-dims", digits((2**62, 64), raw=b""), EXHAUSTED, "pixels", "limit"),
    row(
        "overflow-bytes-elements",
        text(1, shapes={"tag": (2**40, 1)}, raw={"tag": b""}),
        EXHAUSTED,
        "tag",
        "limit",
    ),
    # Raw contents.
    row("raw-too-short", digits(raw=bytes(255)), INVALID, "pixels", "255 bytes", "256"),
    row("raw-too-long", digits(raw=bytes(257)), INVALID, "pixels", "257 bytes", "256"),
    row("raw-and-typed", raw_and_typed(), INVALID, "pixels", "both"),
    row(
        "raw-count-too-low",
        changed(text(), lambda m: m.raw_input_contents.pop()),
        INVALID,
        "raw_input_contents",
        "2 entries for 3 inputs",
    ),
    row(
        "raw-count-too-high",
        changed(digits(), lambda m: m.raw_input_contents.append(b"")),
        INVALID,
        "raw_input_contents",
        "2 entries for 1 inputs",
    ),
    row(
        "raw-without-inputs",
        changed(digits(), lambda m: m.ClearField("inputs")),
        INVALID,
        "raw_input_contents",
    ),
    # Typed contents.
    row("typed-too-few", typed_digits([0.0] * 63), INVALID, "pixels", "fp32_contents", "63"),
    row("typed-too-many", typed_digits([0.0] * 65), INVALID, "pixels", "fp32_contents", "65"),
    row(
        "typed-wrong-field",
        changed(typed_digits([]), lambda m: m.inputs[0].contents.int_contents.extend([0] * 64)),
        INVALID,
        "pixels",
        "fp32_contents",
    ),
    row("typed-fp16", all_typed_text(), INVALID, "weights", "FP16", "raw_input_contents"),
    # BYTES length prefixes.
    row(
        "bytes-prefix-overrun",
        text(1, raw={"tag": struct.pack("<I", 100) + b"abc"}),
        INVALID,
        "tag",
        "length 100",
    ),
    row(
        "bytes-prefix-truncated",
        text(2, raw={"tag": prefixed(b"abc") + b"\x01\x00"}),
        INVALID,
        "tag",
        "element 1",
        "length prefix",
    ),
    row(
        "bytes-trailing",
        text(2, raw={"tag": prefixed(b"a", b"b") + b"zz"}),
        INVALID,
        "tag",
        "2 bytes left",
    ),
    row(
        "bytes-more-elements-than-shape",
        text(1, raw={"tag": prefixed(b"a", b"b")}),
        INVALID,
        "tag",
        "left after 1 elements",
    ),
    row(
        "bytes-fewer-elements-than-shape",
        text(2, raw={"tag": prefixed(b"hello")}),
        INVALID,
        "tag",
        "element 1",
    ),
    row(
        "bytes-huge-shape-tiny-data",
        text(1, shapes={"tag": (2**28, 1)}, raw={"tag": prefixed(b"x")}),
        INVALID,
        "tag",
        "too few",
    ),
    # Which inputs and outputs.
    row("duplicate-input", duplicate_input(), INVALID, "'pixels'", "more than once"),
    row("missing-input", text(drop=("weights",)), INVALID, "missing", "weights"),
    row("no-inputs", text(drop=("token_ids", "weights", "tag")), INVALID, "missing", "token_ids"),
    row("unknown-input", digits(name="pixles"), INVALID, "'pixles'", "pixels"),
    row("unknown-input-long", digits(name="p" * 50_000), INVALID, "unknown input", "ppp..."),
    row("unknown-output", with_outputs(digits(), "logits"), INVALID, "'logits'", "label"),
    row("unknown-output-long", with_outputs(digits(), "o" * 50_000), INVALID, "ooo..."),
    row("duplicate-output", with_outputs(digits(), "label", "label"), INVALID, "'label'", "once"),
    # Batch dimension.
    row("batch-zero", digits((0, 64)), INVALID, "batch size is 0"),
    row("batch-over-max", digits((65, 64)), INVALID, "batch size 65", "max_batch_size 64"),
    row(
        "batch-disagreement",
        text(2, shapes={"weights": (3, 8)}, raw={"weights": bytes(48)}),
        INVALID,
        "batch dimension",
        "[2, 3]",
    ),
    # Triton request parameters.
    row("timeout-negative", with_param(digits(), "timeout", int64_param=-1), INVALID, "timeout"),
    row("timeout-string", with_param(digits(), "timeout", string_param="10"), INVALID, "timeout"),
    row("timeout-double", with_param(digits(), "timeout", double_param=1.5), INVALID, "timeout"),
    row("timeout-bool", with_param(digits(), "timeout", bool_param=True), INVALID, "timeout"),
    row("priority-negative", with_param(digits(), "priority", int64_param=-2), INVALID, "priority"),
]

#: Paths that must never appear in a message, whatever the request said.
_PATH = re.compile(r"(?<![\w.])/(?:tmp|home|root|usr|var|etc|proc|work|opt|srv)(?:/|\b)")


def assert_clean(details: str, echo: str, repository: Path) -> None:
    assert str(repository) not in details
    text_ = details.replace(echo, "") if echo else details
    assert tempfile.gettempdir() + "/" not in text_
    assert not _PATH.search(text_), details
    assert "Traceback" not in text_ and ".py" not in text_, details
    # Messages travel in a gRPC header (16 KiB at most); ours stay short.
    assert len(details) < 1000


@pytest.fixture(scope="module")
def stub(server_address: str) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def assert_still_serving(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    pixels = np.arange(128, dtype=np.float32).reshape(2, 64) % 17
    good = digits((2, 64), raw=pixels.tobytes())
    reply = stub.ModelInfer(good, timeout=30)
    assert [o.name for o in reply.outputs] == ["probabilities", "label"]
    assert list(reply.outputs[1].shape) == [2, 1]
    tags = prefixed("é".encode(), b"ok")
    reply = stub.ModelInfer(text(2, raw={"tag": tags}), timeout=30)
    assert reply.raw_output_contents[2] == tags


@pytest.mark.parametrize("case", ROWS)
def test_malformed_request_is_refused(
    stub: pb_grpc.GRPCInferenceServiceStub, demo_repository: Path, case: Row
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(case.request, timeout=30)
    details = info.value.details()
    assert info.value.code() == case.code, details
    for word in case.mentions:
        assert word in details, f"{word!r} not in {details!r}"
    assert_clean(details, case.echo, demo_repository)
    assert_still_serving(stub)


#: A sample of rows (resolution, decoding, parameters) replayed inside a stream.
STREAM_ROWS = [
    p
    for p in ROWS
    if p.id
    in {
        "unknown-model",
        "model-name-/etc/passwd",
        "model-name-long",
        "version-traversal",
        "wrong-datatype",
        "raw-too-short",
        "typed-fp16",
        "bytes-prefix-overrun",
        "duplicate-output",
        "batch-over-max",
        "timeout-negative",
    }
]


@pytest.mark.parametrize("case", STREAM_ROWS)
def test_malformed_request_in_a_stream_answers_and_continues(
    stub: pb_grpc.GRPCInferenceServiceStub, demo_repository: Path, case: Row
) -> None:
    # The same refusal inside ModelStreamInfer: an error reply carrying the
    # request id, and the good request after it is still answered.
    bad = changed(case.request, lambda m: setattr(m, "id", "bad"))
    good = changed(digits(), lambda m: setattr(m, "id", "good"))
    replies = {r.infer_response.id: r for r in stub.ModelStreamInfer(iter([bad, good]), timeout=30)}
    assert set(replies) == {"bad", "good"}
    message = replies["bad"].error_message
    for word in case.mentions:
        assert word in message
    assert_clean(message, case.echo, demo_repository)
    assert replies["good"].error_message == ""
    assert [o.name for o in replies["good"].infer_response.outputs] == ["probabilities", "label"]


# --- requests that must succeed ----------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(with_param(digits(), "binary_data_output", bool_param=True), id="bool"),
        pytest.param(with_param(digits(), "sequence_id", int64_param=0), id="sequence-id"),
        pytest.param(with_param(digits(), "x-custom", string_param="v"), id="string"),
        pytest.param(with_param(digits(), "weight", double_param=0.5), id="double"),
        pytest.param(with_param(digits(), "big", uint64_param=2**64 - 1), id="uint64"),
        pytest.param(changed(digits(), lambda m: m.parameters["unset"]), id="empty-parameter"),
        pytest.param(with_param(digits(), "timeout", int64_param=0), id="timeout-zero"),
        pytest.param(with_param(digits(), "timeout", uint64_param=10**7), id="timeout-uint64"),
        pytest.param(with_param(digits(), "priority", int64_param=0), id="priority-default"),
        pytest.param(
            changed(
                digits(),
                lambda m: (
                    m.outputs.add(name="label")
                    .parameters["binary_data"]
                    .CopyFrom(pb.InferParameter(bool_param=True))
                ),
            ),
            id="output-parameter",
        ),
        pytest.param(
            changed(
                digits(),
                lambda m: (
                    m.inputs[0]
                    .parameters["binary_data_size"]
                    .CopyFrom(pb.InferParameter(int64_param=256))
                ),
            ),
            id="input-parameter",
        ),
    ],
)
def test_unknown_and_valid_parameters_are_accepted(
    stub: pb_grpc.GRPCInferenceServiceStub, request_: pb.ModelInferRequest
) -> None:
    # Triton's clients always send some parameters of their own; refusing the
    # ones we do not know would break them.
    reply = stub.ModelInfer(request_, timeout=30)
    assert reply.model_name == "digits_mlp"
    assert reply.id == "row"
    assert len(reply.raw_output_contents) == len(reply.outputs) >= 1


def test_fp32_typed_contents_equal_raw(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    pixels = (np.arange(128) % 17).astype(np.float32)
    typed = stub.ModelInfer(typed_digits(pixels.tolist(), (2, 64)), timeout=30)
    raw = stub.ModelInfer(digits((2, 64), raw=pixels.tobytes()), timeout=30)
    assert typed.raw_output_contents == raw.raw_output_contents
    assert [list(o.shape) for o in typed.outputs] == [[2, 10], [2, 1]]


def _io_model(path: Path) -> None:
    """ints INT64 [-1,3] and texts BYTES [-1,2] -> echoed unchanged."""
    ints = helper.make_tensor_value_info("ints", TensorProto.INT64, ["b", 3])
    texts = helper.make_tensor_value_info("texts", TensorProto.STRING, ["b", 2])
    ints_out = helper.make_tensor_value_info("ints_out", TensorProto.INT64, ["b", 3])
    texts_out = helper.make_tensor_value_info("texts_out", TensorProto.STRING, ["b", 2])
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["ints"], ["ints_out"]),
            helper.make_node("Identity", ["texts"], ["texts_out"]),
        ],
        "typed_io",
        [ints, texts],
        [ints_out, texts_out],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def typed_io_stub(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    # The demo models mix FP16 (raw only) with INT64/BYTES, and raw and typed
    # contents cannot be mixed in one request: a model without FP16 is needed.
    repo = tmp_path_factory.mktemp("typed") / "models"
    _io_model(repo / "typed_io" / "1" / "model.onnx")
    server = ServerThread(ServerConfig(model_repository=repo, grpc_port=0)).start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            yield pb_grpc.GRPCInferenceServiceStub(channel)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("ints", "texts"),
    [
        pytest.param([[1, -2, 3]], [[b"a", b""]], id="one-row"),
        pytest.param(
            [[2**63 - 1, -(2**63), 0], [7, 8, 9]],
            [["ünï".encode(), "日本".encode()], [b"x" * 1000, b"nul\x00"]],
            id="extremes",
        ),
    ],
)
def test_int64_and_bytes_typed_contents(
    typed_io_stub: pb_grpc.GRPCInferenceServiceStub,
    ints: list[list[int]],
    texts: list[list[bytes]],
) -> None:
    msg = pb.ModelInferRequest(model_name="typed_io", id="typed")
    rows = len(ints)
    msg.inputs.add(name="ints", datatype="INT64", shape=[rows, 3]).contents.int64_contents.extend(
        v for r in ints for v in r
    )
    msg.inputs.add(name="texts", datatype="BYTES", shape=[rows, 2]).contents.bytes_contents.extend(
        v for r in texts for v in r
    )
    reply = typed_io_stub.ModelInfer(msg, timeout=30)
    assert [(o.name, o.datatype, list(o.shape)) for o in reply.outputs] == [
        ("ints_out", "INT64", [rows, 3]),
        ("texts_out", "BYTES", [rows, 2]),
    ]
    ints_raw, texts_raw = reply.raw_output_contents
    np.testing.assert_array_equal(np.frombuffer(ints_raw, "<i8").reshape(rows, 3), ints)
    assert texts_raw == prefixed(*[v for r in texts for v in r])


def test_typed_contents_with_wrong_count_on_int64_and_bytes(
    typed_io_stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    msg = pb.ModelInferRequest(model_name="typed_io")
    msg.inputs.add(name="ints", datatype="INT64", shape=[1, 3]).contents.int64_contents.extend(
        [1, 2, 3]
    )
    msg.inputs.add(name="texts", datatype="BYTES", shape=[1, 2]).contents.bytes_contents.append(
        b"only one"
    )
    with pytest.raises(grpc.RpcError) as info:
        typed_io_stub.ModelInfer(msg, timeout=30)
    assert info.value.code() == INVALID
    assert "texts" in info.value.details() and "bytes_contents has 1" in info.value.details()


# --- memory: refused before allocation ---------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(digits((2**40, 2**40), raw=b""), id="fp32-overflow-both-dims"),
        pytest.param(digits((2**40, 64), raw=b""), id="fp32-overflow"),
        pytest.param(digits((2**22, 64), raw=b""), id="fp32-at-limit-no-data"),
        # 2**24 BYTES elements would be a 128 MiB object array; 8 bytes of
        # data cannot hold more than 2 length prefixes.
        pytest.param(text(1, shapes={"tag": (2**24, 1)}, raw={"tag": bytes(8)}), id="bytes"),
        pytest.param(typed_digits([0.0], (2**20, 64)), id="typed-count"),
    ],
)
def test_huge_shapes_are_refused_without_allocating(
    stub: pb_grpc.GRPCInferenceServiceStub, request_: pb.ModelInferRequest
) -> None:
    # The server runs in this process, so tracemalloc (which numpy reports
    # its buffers to) sees every allocation the request causes.
    tracemalloc.start()
    try:
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(request_, timeout=30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code() in (INVALID, EXHAUSTED)
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB"


# --- RPCs inferd does not offer ------------------------------------------------------

UNIMPLEMENTED = [
    "SystemSharedMemoryStatus",
    "SystemSharedMemoryRegister",
    "SystemSharedMemoryUnregister",
    "CudaSharedMemoryStatus",
    "CudaSharedMemoryRegister",
    "CudaSharedMemoryUnregister",
    "TraceSetting",
    "LogSettings",
]


@pytest.mark.parametrize("rpc", UNIMPLEMENTED)
def test_unoffered_rpcs_are_unimplemented(stub: pb_grpc.GRPCInferenceServiceStub, rpc: str) -> None:
    request = getattr(pb, f"{rpc}Request")()
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "not supported" in info.value.details()
    assert_still_serving(stub)


@pytest.mark.parametrize("rpc", ["RepositoryModelLoad", "RepositoryModelUnload"])
def test_load_and_unload_are_refused_in_model_control_mode_none(
    stub: pb_grpc.GRPCInferenceServiceStub, rpc: str
) -> None:
    """The session server runs in mode none (the default): the model_repository
    extension is there, but loading and unloading on request is not allowed."""
    request = getattr(pb, f"{rpc}Request")(model_name="digits_mlp")
    with pytest.raises(grpc.RpcError) as info:
        getattr(stub, rpc)(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "model control mode 'none'" in info.value.details()
    assert_still_serving(stub)


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (pb.RepositoryModelLoadRequest(model_name=""), "model_name is required"),
        (
            pb.RepositoryModelLoadRequest(model_name="digits_mlp", repository_name="other"),
            "single model repository",
        ),
        (
            pb.RepositoryModelLoadRequest(
                model_name="digits_mlp",
                parameters={"config": pb.ModelRepositoryParameter(string_param="{}")},
            ),
            "parameters are not supported",
        ),
    ],
    ids=["no-name", "repository-name", "config-override"],
)
def test_malformed_load_requests_are_invalid(
    stub: pb_grpc.GRPCInferenceServiceStub, request_: pb.RepositoryModelLoadRequest, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.RepositoryModelLoad(request_, timeout=30)
    assert info.value.code() == INVALID
    assert words in info.value.details()
    assert_still_serving(stub)
