"""A ModelStreamInfer call holds at most its budget: a caller that sends
without reading its answers is pushed back by HTTP/2 flow control instead of
growing the server, and other callers are served meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import onnx
from conftest import ServerThread
from onnx import TensorProto, helper

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.server.grpc.stream_budget import StreamBudget

#: FP32 elements per row: 4 KiB requests and answers.
WIDTH = 1024
ROW_BYTES = WIDTH * 4


def echo_repository(root: Path) -> Path:
    """One model, ``echo``: y = x for FP32 [batch, WIDTH]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "echo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / "echo" / "1").mkdir(parents=True)
    onnx.save(model, str(root / "echo" / "1" / "model.onnx"))
    (root / "echo" / "config.pbtxt").write_text(
        f'name: "echo"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        f'input {{ name: "x" data_type: TYPE_FP32 dims: [ {WIDTH} ] }}\n'
        f'output {{ name: "y" data_type: TYPE_FP32 dims: [ {WIDTH} ] }}\n'
    )
    return root


def echo_request(i: int) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="echo", id=str(i))
    msg.inputs.add(name="x", datatype="FP32", shape=[1, WIDTH])
    msg.raw_input_contents.append(np.full(WIDTH, i, dtype=np.float32).tobytes())
    return msg


def channel(address: str) -> grpc.Channel:
    # Its own TCP connection, not one shared with other channels.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def peaks(server: ServerThread) -> tuple[int, int]:
    assert server.server is not None
    budgets: list[StreamBudget] = list(server.server.servicer.open_streams)
    return max((b.peak_held for b in budgets), default=0), max(
        (b.peak_bytes for b in budgets), default=0
    )


def test_a_stream_that_never_reads_holds_at_most_its_budget(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    max_held, max_bytes, total = 16, 32 * ROW_BYTES, 6_000
    server = make_server(
        echo_repository(tmp_path / "models"),
        stream_max_inflight=max_held,
        stream_max_buffered_bytes=max_bytes,
    )
    sent = 0

    def requests() -> Iterator[pb.ModelInferRequest]:
        nonlocal sent
        for i in range(total):
            yield echo_request(i)
            sent = i + 1

    with channel(server.address) as flooded, channel(server.address) as other:
        call = pb_grpc.GRPCInferenceServiceStub(flooded).ModelStreamInfer(requests(), timeout=120)
        # Nothing is read: once the budget and the flow-control windows are
        # full the sender stalls.
        last, still_since = -1, time.monotonic()
        while time.monotonic() - still_since < 1.5:
            time.sleep(0.1)
            if sent != last:
                last, still_since = sent, time.monotonic()
        held, held_bytes = peaks(server)
        assert 0 < held <= max_held
        # Bytes are charged once a request is decoded: the reader can be at
        # most the requests it already read past the bound.
        assert held_bytes <= max_bytes + max_held * ROW_BYTES
        assert sent < total, "the server read everything a non-reading stream sent"

        # Another caller is served meanwhile.
        started = time.monotonic()
        reply = pb_grpc.GRPCInferenceServiceStub(other).ModelInfer(echo_request(-1), timeout=10)
        assert reply.id == "-1"
        assert time.monotonic() - started < 2.0

        # Reading again: every request is answered, in full, nothing lost.
        ids = []
        for response in call:
            assert response.error_message == ""
            ids.append(int(response.infer_response.id))
            if len(ids) == total:
                break
        assert sorted(ids) == list(range(total))
        held, _ = peaks(server)
        assert held <= max_held
        call.cancel()
