"""Health/Watch and reflection streams have their own budget (server.grpc.watch_budget):
hundreds of unauthenticated watchers leave inference and Health/Check answering."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ServerThread
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc

TOKEN = "watch-test-token-0123456789"
WATCHERS = 250
CONNECTIONS = 10
PER_CONNECTION = 4
TOTAL = 24


def digits() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="digits_mlp")
    msg.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    msg.raw_input_contents.append(bytes(256))
    return msg


def channel(address: str) -> grpc.Channel:
    # Its own TCP connection, so the per-connection cap is per channel here.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def open_watchers(stack: ExitStack, address: str) -> tuple[list[Any], list[grpc.RpcError]]:
    """WATCHERS Watch streams without credentials over CONNECTIONS connections;
    returns the streams that got their first status and the refusals."""
    channels = [stack.enter_context(channel(address)) for _ in range(CONNECTIONS)]
    calls = []
    for i in range(WATCHERS):
        stub = health_pb2_grpc.HealthStub(channels[i % CONNECTIONS])
        calls.append(stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=120))
        stack.callback(calls[-1].cancel)
    opened, refused = [], []
    for call in calls:
        try:
            next(call)
            opened.append(call)
        except grpc.RpcError as err:
            refused.append(err)
    return opened, refused


@pytest.fixture
def guarded(
    demo_repository: Path, tmp_path: Path, make_server: Callable[..., ServerThread]
) -> Iterator[ServerThread]:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({TOKEN: {"name": "app", "roles": ["infer"]}}))
    yield make_server(
        demo_repository,
        auth_tokens_file=tokens,
        max_concurrent_rpcs=200,
        max_watch_streams=TOTAL,
        max_watch_streams_per_connection=PER_CONNECTION,
    )


def test_watchers_leave_inference_and_health_checks_answering(guarded: ServerThread) -> None:
    with ExitStack() as stack:
        opened, refused = open_watchers(stack, guarded.address)
        # Capped in all and per connection, the rest refused at once with a reason.
        assert len(opened) == min(TOTAL, CONNECTIONS * PER_CONNECTION)
        assert len(refused) == WATCHERS - len(opened)
        assert {err.code() for err in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert all("health/reflection streams" in (err.details() or "") for err in refused)
        with channel(guarded.address) as fresh:
            reply = pb_grpc.GRPCInferenceServiceStub(fresh).ModelInfer(
                digits(), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=30
            )
            assert reply.model_name == "digits_mlp"
            check = health_pb2_grpc.HealthStub(fresh).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=30
            )
            assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_one_connection_cannot_take_the_whole_budget(guarded: ServerThread) -> None:
    with channel(guarded.address) as greedy, channel(guarded.address) as other:
        stub = health_pb2_grpc.HealthStub(greedy)
        request = health_pb2.HealthCheckRequest(service="")
        calls = []
        try:
            for _ in range(PER_CONNECTION):  # one after another: the last is the one over
                calls.append(stub.Watch(request, timeout=60))
                assert next(calls[-1]).status == health_pb2.HealthCheckResponse.SERVING
            calls.append(stub.Watch(request, timeout=60))
            with pytest.raises(grpc.RpcError) as info:
                next(calls[-1])
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "on this connection" in (info.value.details() or "")
            # Another connection still gets a watcher, and a closed one frees its slot.
            watch = health_pb2_grpc.HealthStub(other).Watch(request, timeout=60)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
        finally:
            for call in calls:
                call.cancel()
