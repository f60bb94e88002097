"""One limit for both front ends (server.admission_limits): gRPC and HTTP
inference calls together never exceed ``--max-concurrent-rpcs``, health,
readiness and metadata answer while it is full, and HTTP inference bodies
are charged to the request-bytes budget gRPC messages are."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ServerThread
from grpc_health.v1 import health_pb2, health_pb2_grpc
from http_helpers import http_port, request

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
LIMIT = 2
PIXELS = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0] * 64}]}
INFER = "/v2/models/digits_mlp/infer"


def digits() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="digits_mlp")
    msg.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    msg.raw_input_contents.append(bytes(256))
    return msg


class HeldInference(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Each ModelInfer waits (holding its slot) until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if details.method != MODEL_INFER:
            return handler
        inner = handler.unary_unary

        async def held(request: Any, context: Any) -> Any:
            while not self.release.is_set():
                await asyncio.sleep(0.01)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            held, handler.request_deserializer, handler.response_serializer
        )


def wait_for_active(server: ServerThread, count: int) -> None:
    assert server.server is not None
    deadline = time.monotonic() + 10
    while server.server.admission.active != count:
        assert time.monotonic() < deadline, f"{server.server.admission.active} calls admitted"
        time.sleep(0.01)


@contextmanager
def held_http(port: int, count: int, content_length: int = 100) -> Iterator[None]:
    """``count`` HTTP inference requests whose bodies never finish, in flight until exit."""
    with ExitStack() as stack:
        for _ in range(count):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=10))
            head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {content_length}\r\n\r\n"
            sock.sendall(head.encode() + b"{")
        yield


def chunked(port: int, body: bytes) -> tuple[int, dict[str, str], bytes]:
    """An HTTP inference request whose body is sent chunked (no Content-Length)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", INFER, body=iter([body[:10], body[10:]]), encode_chunked=True)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def assert_probes_answer(port: int, address: str) -> None:
    """Health, readiness and metadata, over both protocols: not counted."""
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/digits_mlp",
        "/v2/models/digits_mlp/ready",
    ):
        status, _, body = request(port, "GET", path)
        assert status == 200, (path, body)
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        stub.ModelMetadata(pb.ModelMetadataRequest(name="digits_mlp"), timeout=10)
        check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_calls_in_flight_refuse_http_inference(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    gate = HeldInference()
    server = make_server(
        demo_repository, [gate], max_concurrent_rpcs=LIMIT, allow_http=True, http_port=0
    )
    port = http_port(server)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = [stub.ModelInfer.future(digits(), timeout=30) for _ in range(LIMIT)]
        try:
            wait_for_active(server, LIMIT)
            status, _, body = request(port, "POST", INFER, PIXELS)
            assert status == 429, body
            assert "Concurrent RPC limit of 2 reached" in json.loads(body)["error"]
            assert_probes_answer(port, server.address)
        finally:
            gate.release.set()
        for call in calls:
            assert call.result().model_name == "digits_mlp"
    wait_for_active(server, 0)
    assert request(port, "POST", INFER, PIXELS)[0] == 200


def test_http_requests_in_flight_refuse_grpc_inference(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository, max_concurrent_rpcs=LIMIT, allow_http=True, http_port=0)
    port = http_port(server)
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with held_http(port, LIMIT):
            wait_for_active(server, LIMIT)
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(digits(), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "Concurrent RPC limit of 2 reached" in (info.value.details() or "")
            # The HTTP port's own next inference is refused too, probes are not.
            status, _, body = request(port, "POST", INFER, PIXELS)
            assert status == 429 and b"Concurrent RPC limit" in body
            assert_probes_answer(port, server.address)
        wait_for_active(server, 0)  # the held requests' slots are freed as they are dropped
        assert stub.ModelInfer(digits(), timeout=10).model_name == "digits_mlp"


def test_http_body_over_the_bytes_budget_is_refused(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    budget = 8192
    server = make_server(
        demo_repository, max_inflight_request_bytes=budget, allow_http=True, http_port=0
    )
    assert server.server is not None
    port = http_port(server)
    body = json.dumps(PIXELS).encode()
    with held_http(port, 1, content_length=budget - 100):
        wait_for_active(server, 1)
        assert server.server.request_bytes.held == budget - 100
        status, _, answer = request(port, "POST", INFER, body)
        assert status == 429, answer
        reason = json.loads(answer)["error"]
        assert f"limit of {budget} bytes of requests in flight" in reason
        assert "--max-inflight-request-bytes" in reason
        # A chunked body (no Content-Length) is charged once read.
        status, _, answer = chunked(port, body)
        assert status == 429 and json.loads(answer)["error"] == reason
        # One budget: a gRPC message that would go over it is refused the same way.
        with grpc.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(digits(), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert info.value.details() == reason
    wait_for_active(server, 0)
    assert server.server.request_bytes.held == 0
    assert request(port, "POST", INFER, body)[0] == 200
    status, _, answer = chunked(port, body)
    assert status == 200 and "outputs" in json.loads(answer)  # the handler gets the body read
    assert server.server.request_bytes.held == 0  # released when answered
