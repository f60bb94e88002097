"""The rest of the bad-input table, over real gRPC: transport limits, request
limits, NaN/Inf, deadlines, cancellation.

``test_malformed_requests.py`` holds the decoder rows of issue 6's table:
unknown model or version (including '../x', absolute paths and shell
metacharacters: ``model-name-*``, ``version-*``), wrong datatype
(``wrong-datatype``), rank/shape mismatch (``rank-*``, ``fixed-dim-mismatch``),
negative dims (``negative-*``), element-count overflow (``overflow-*``), raw
byte length (``raw-too-short/long``), raw and typed both set
(``raw-and-typed``), raw count (``raw-count-*``), BYTES prefixes that overrun,
split or miscount (``bytes-*``), duplicate/missing/unknown inputs, and zero
and over-max batch (``batch-zero``, ``batch-over-max``). This file adds the
rows that need a server with small limits or a controlled engine: oversized
message and response, a gzip bomb, oversized metadata, too many inputs,
outputs or parameters, a tensor over the byte limit, NaN/Inf, an expired
deadline and a cancel while queued.

Every row checks the status, that the message names the problem, and that
the same server answers a good request afterwards.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import ServerThread

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.server.app import ServerConfig

MiB = 1 << 20
KiB = 1 << 10
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED

#: The limited server's settings; rows are sized against these.
LIMITS = {
    "max_message_bytes": 1 * MiB,
    "max_send_message_bytes": 8 * KiB,
    "max_metadata_bytes": 8 * KiB,
    "max_tensor_bytes": 64 * KiB,
    "max_inputs": 8,
    "max_outputs": 8,
    "max_parameters": 16,
}


def digits(rows: int = 1, pixels: np.ndarray | None = None) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="digits_mlp", id="row")
    msg.inputs.add(name="pixels", datatype="FP32", shape=[rows, 64])
    data = np.zeros((rows, 64), np.float32) if pixels is None else pixels
    msg.raw_input_contents.append(np.ascontiguousarray(data, np.float32).tobytes())
    return msg


def dense(rows: int) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="dense_reference", id="dense")
    msg.inputs.add(name="x", datatype="FP32", shape=[rows, 1024])
    msg.raw_input_contents.append(np.ones((rows, 1024), np.float32).tobytes())
    return msg


def typed_tags(rows: int) -> pb.ModelInferRequest:
    """text_stats' ``tag`` alone, as ``rows`` one-byte strings in typed
    bytes_contents (decoded first, so its limit is what answers)."""
    msg = pb.ModelInferRequest(model_name="text_stats", id="row")
    tag = msg.inputs.add(name="tag", datatype="BYTES", shape=[rows, 1])
    tag.contents.bytes_contents.extend([b"t"] * rows)
    return msg


@dataclass(frozen=True)
class Row:
    call: Callable[[pb_grpc.GRPCInferenceServiceStub], Any]
    code: grpc.StatusCode
    mentions: tuple[str, ...]


def row(id: str, call: Callable[..., Any], code: grpc.StatusCode, *mentions: str) -> Any:
    return pytest.param(Row(call, code, mentions), id=id)


def with_outputs(n: int) -> pb.ModelInferRequest:
    msg = digits()
    for _ in range(n):
        msg.outputs.add(name="label")
    return msg


def with_inputs(n: int) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="digits_mlp")
    for i in range(n):
        msg.inputs.add(name=f"in{i}", datatype="FP32", shape=[1, 64])
    return msg


def with_parameters(n: int) -> pb.ModelInferRequest:
    msg = digits()
    for i in range(n):
        msg.parameters[f"p{i}"].int64_param = i
    return msg


def gzip_bomb(stub: pb_grpc.GRPCInferenceServiceStub) -> Any:
    # 8 MiB of zeros: the message is 8x the 1 MiB limit, gzip makes it ~8 KiB
    # on the wire, so only the decompressed size can catch it.
    msg = digits(rows=8 * MiB // 256)
    assert len(gzip.compress(msg.SerializeToString())) < 64 * KiB
    return stub.ModelInfer(msg, timeout=30, compression=grpc.Compression.Gzip)


def expired_deadline(stub: pb_grpc.GRPCInferenceServiceStub) -> Any:
    # Triton's `timeout` parameter (µs): 1 µs is over before the server reads it.
    msg = digits()
    msg.parameters["timeout"].int64_param = 1
    return stub.ModelInfer(msg, timeout=30)


ROWS = [
    row(
        "oversized-message",
        lambda s: s.ModelInfer(digits(rows=(2 * MiB) // 256), timeout=30),
        EXHAUSTED,
        "larger than max",
        str(1 * MiB),
    ),
    row("compressed-bomb", gzip_bomb, EXHAUSTED, "Decompressed message larger than max"),
    row(
        # 15 rows: x is 60 KiB (under every request limit), y is 15 KiB, over
        # the 8 KiB send limit.
        "oversized-response",
        lambda s: s.ModelInfer(dense(15), timeout=30),
        EXHAUSTED,
        "larger than max",
    ),
    row(
        "oversized-metadata",
        lambda s: s.ModelInfer(digits(), timeout=30, metadata=[("x-padding", "a" * 16 * KiB)]),
        EXHAUSTED,
        "metadata",
        "exceeds",
    ),
    row(
        "too-many-outputs",
        lambda s: s.ModelInfer(with_outputs(9), timeout=30),
        EXHAUSTED,
        "9 outputs",
        "limit of 8",
    ),
    row(
        "too-many-inputs",
        lambda s: s.ModelInfer(with_inputs(9), timeout=30),
        EXHAUSTED,
        "9 inputs",
        "limit of 8",
    ),
    row(
        "too-many-parameters",
        lambda s: s.ModelInfer(with_parameters(17), timeout=30),
        EXHAUSTED,
        "17 parameters",
        "limit of 16",
    ),
    row(
        # 32 x 1024 FP32 = 128 KiB, under the message limit, over 64 KiB per tensor.
        "tensor-over-byte-limit",
        lambda s: s.ModelInfer(dense(32), timeout=30),
        EXHAUSTED,
        "input 'x'",
        "bytes per tensor",
    ),
    row(
        # 2000 one-byte strings: ~6 KiB on the wire, ~96 KiB as Python objects.
        "typed-bytes-expansion",
        lambda s: s.ModelInfer(typed_tags(2000), timeout=30),
        EXHAUSTED,
        "input 'tag'",
        "bytes per tensor",
    ),
    row(
        "deadline-already-expired",
        expired_deadline,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "deadline",
    ),
]


@pytest.fixture(scope="module")
def limited(demo_repository: Path) -> Iterator[ServerThread]:
    config = ServerConfig(model_repository=demo_repository, grpc_port=0, **LIMITS)  # type: ignore[arg-type]
    server = ServerThread(config).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(limited: ServerThread) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    # No client-side limits: the server's own limits are under test.
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(limited.address, options=options) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def assert_still_serving(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    pixels = (np.arange(128, dtype=np.float32).reshape(2, 64) % 17).astype(np.float32)
    reply = stub.ModelInfer(digits(2, pixels), timeout=30)
    assert [o.name for o in reply.outputs] == ["probabilities", "label"]
    assert list(reply.outputs[1].shape) == [2, 1]


@pytest.mark.parametrize("case", ROWS)
def test_abusive_request_is_refused(stub: pb_grpc.GRPCInferenceServiceStub, case: Row) -> None:
    with pytest.raises(grpc.RpcError) as info:
        case.call(stub)
    details = info.value.details() or ""
    assert info.value.code() == case.code, details
    for word in case.mentions:
        assert word in details, f"{word!r} not in {details!r}"
    assert "Traceback" not in details and ".py" not in details
    assert_still_serving(stub)


def test_limits_are_the_configured_ones(limited: ServerThread) -> None:
    # The rows above only mean something if the server runs with LIMITS.
    assert limited.server is not None
    config = limited.server.config
    for key, value in LIMITS.items():
        assert getattr(config, key) == value


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([np.nan] * 64, id="nan"),
        pytest.param([np.inf] * 32 + [-np.inf] * 32, id="inf"),
        pytest.param([np.nan, np.inf, -np.inf, 1.0] * 16, id="mixed"),
    ],
)
def test_nan_and_inf_are_passed_through(
    stub: pb_grpc.GRPCInferenceServiceStub, values: list[float]
) -> None:
    # Policy (docs/protocol.md): non-finite inputs are valid FP32 values and reach the
    # model unchanged; what the model makes of them is its answer. Refusing
    # them would take a per-element scan of every request and break models
    # that use NaN as "missing".
    pixels = np.array([values], dtype=np.float32)
    reply = stub.ModelInfer(digits(1, pixels), timeout=30)
    probabilities = np.frombuffer(reply.raw_output_contents[0], np.float32)
    assert probabilities.shape == (10,)
    assert not np.isfinite(probabilities).all()  # the NaN reached the model and came back
    assert_still_serving(stub)


def test_cancel_while_queued_never_runs(
    limited: ServerThread, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    """A request cancelled by its client while queued leaves the queue and
    never reaches the engine; the one running finishes normally."""
    assert limited.server is not None
    version = limited.server.models.resolve("digits_mlp")
    engine = version.scheduler.engine
    gate = threading.Event()
    started = threading.Event()
    seen: list[float] = []
    real_infer = engine.infer

    def gated(inputs: Any, outputs: Any = None) -> Any:
        seen.append(float(inputs["pixels"][0, 0]))
        started.set()
        gate.wait(30)
        return real_infer(inputs, outputs)

    engine.infer = gated  # type: ignore[method-assign]
    cancelled_before = version.scheduler.counters.cancelled
    try:
        blocker = stub.ModelInfer.future(digits(1, np.full((1, 64), 1.0)), timeout=30)
        assert started.wait(10)
        queued = stub.ModelInfer.future(digits(1, np.full((1, 64), 2.0)), timeout=30)
        deadline = time.monotonic() + 10
        while version.scheduler.queued == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert version.scheduler.queued == 1
        queued.cancel()
        with pytest.raises(grpc.FutureCancelledError):
            queued.result()
        while version.scheduler.queued and time.monotonic() < deadline:
            time.sleep(0.01)
        assert version.scheduler.counters.cancelled == cancelled_before + 1
        assert version.scheduler.queued == 0
        gate.set()
        assert [o.name for o in blocker.result(30).outputs] == ["probabilities", "label"]
    finally:
        gate.set()
        del engine.infer  # back to the class's method
    assert seen == [1.0]  # the cancelled request (2.0) never ran
    assert_still_serving(stub)
