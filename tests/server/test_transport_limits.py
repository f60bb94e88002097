"""Connection-level limits over real gRPC: streams per connection, concurrent
RPCs, keepalive (ping flood) enforcement. Message, metadata and
decompressed sizes are rows of test_abuse_table.py."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ServerThread

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.server.app import ServerConfig


def digits() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="digits_mlp")
    msg.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    msg.raw_input_contents.append(bytes(256))
    return msg


def channel(address: str, *options: tuple[str, Any]) -> grpc.Channel:
    # A private subchannel pool: its own TCP connection, not one shared with
    # other channels to the same address.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1), *options])


@contextmanager
def open_stream(ch: grpc.Channel) -> Iterator[Any]:
    """A ModelStreamInfer call held open (one request answered) until exit."""
    feed: queue.Queue[pb.ModelInferRequest | None] = queue.Queue()

    def requests() -> Iterator[pb.ModelInferRequest]:
        while (item := feed.get()) is not None:
            yield item

    call = pb_grpc.GRPCInferenceServiceStub(ch).ModelStreamInfer(requests(), timeout=60)
    feed.put(digits())
    assert next(call).error_message == ""
    try:
        yield call
    finally:
        feed.put(None)
        call.cancel()


def test_streams_per_connection_are_limited(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository, max_concurrent_streams=1)
    with channel(server.address) as busy, channel(server.address) as other:
        with open_stream(busy):
            # The one stream this connection may have is taken: the call waits
            # for it (client side) and runs out of time.
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GRPCInferenceServiceStub(busy).ModelInfer(digits(), timeout=1)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # Another connection is not affected.
            pb_grpc.GRPCInferenceServiceStub(other).ModelInfer(digits(), timeout=10)
        pb_grpc.GRPCInferenceServiceStub(busy).ModelInfer(digits(), timeout=10)


def plain_grpcio_failures(address: str, callers: int = 300, calls_each: int = 3) -> list[str]:
    """``callers`` closed-loop callers on ONE plain grpc.aio channel, no
    limit of their own: the failures, as "CODE: details"."""

    async def main() -> list[str]:
        failures: list[str] = []
        async with grpc.aio.insecure_channel(address) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)

            async def caller() -> None:
                for _ in range(calls_each):
                    try:
                        await stub.ModelInfer(digits(), timeout=120)
                    except grpc.aio.AioRpcError as err:
                        failures.append(f"{err.code().name}: {err.details()}")

            await asyncio.gather(*(caller() for _ in range(callers)))
        return failures

    return asyncio.run(main())


def test_plain_grpcio_calls_over_the_stream_limit_wait_in_the_client(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    # The defaults: 300 calls at once on one channel, far over the streams a
    # connection may carry; gRPC's client queues the rest, none fails.
    server = make_server(demo_repository)
    failures = plain_grpcio_failures(server.address)
    assert failures == [], f"{len(failures)} failed, first: {failures[:1]}"


def test_refusing_unreleased_streams_fails_plain_grpcio_calls(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    # gRPC's overload protection counts calls answered but not yet released;
    # the client already counts their streams free, so some of its calls are
    # refused (REFUSED_STREAM) and a plain grpcio caller sees them fail.
    server = make_server(demo_repository, max_concurrent_streams=16, refuse_unreleased_streams=True)
    failures = plain_grpcio_failures(server.address)
    assert failures, "no stream refused"
    assert all(f.startswith("UNAVAILABLE") and "error code 7" in f for f in failures), failures[:3]


def test_concurrent_rpcs_over_the_limit_get_resource_exhausted(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository, max_concurrent_rpcs=2)
    with channel(server.address) as a, channel(server.address) as b, channel(server.address) as c:
        with open_stream(a), open_stream(b):
            with pytest.raises(grpc.RpcError) as info:
                pb_grpc.GRPCInferenceServiceStub(c).ModelInfer(digits(), timeout=10)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "Concurrent RPC limit" in (info.value.details() or "")
        deadline = time.monotonic() + 10
        while True:  # the two streams' slots free as their cancellations land
            try:
                pb_grpc.GRPCInferenceServiceStub(c).ModelInfer(digits(), timeout=10)
                break
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline
                time.sleep(0.05)


def test_ping_flood_gets_the_connection_closed(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    # gRPC's C core client pings at most about once a second whatever it is
    # asked, so the server's minimum must be above that to see a violation.
    server = make_server(demo_repository, min_client_ping_interval_s=2.0, max_ping_strikes=1)
    abusive = channel(
        server.address,
        ("grpc.keepalive_time_ms", 50),
        ("grpc.keepalive_timeout_ms", 1000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    )
    start = time.monotonic()
    with abusive, pytest.raises(grpc.RpcError) as info, open_stream(abusive) as call:
        for _ in call:  # the stream idles while the client pings as fast as it can
            pass
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "ping" in (info.value.details() or "").lower()
    assert time.monotonic() - start < 30
    with channel(server.address) as polite:  # the server itself is fine
        pb_grpc.GRPCInferenceServiceStub(polite).ModelInfer(digits(), timeout=10)


def test_grpc_options_carry_every_limit(demo_repository: Path) -> None:
    config = ServerConfig(
        model_repository=demo_repository,
        max_message_bytes=1000,
        max_send_message_bytes=2000,
        max_metadata_bytes=3000,
        max_concurrent_streams=7,
        keepalive_time_s=11,
        keepalive_timeout_s=12,
        min_client_ping_interval_s=13,
        max_ping_strikes=4,
    )
    options = dict(config.grpc_options())
    assert options["grpc.max_receive_message_length"] == 1000
    assert options["grpc.max_send_message_length"] == 2000
    assert options["grpc.max_metadata_size"] == 3000
    assert options["grpc.absolute_max_metadata_size"] == 3000
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.http.overload_protection"] == 0
    assert options["grpc.keepalive_time_ms"] == 11_000
    assert options["grpc.keepalive_timeout_ms"] == 12_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 13_000
    assert options["grpc.http2.max_ping_strikes"] == 4
    # Send limit defaults to the receive limit.
    same = dict(ServerConfig(model_repository=demo_repository).grpc_options())
    assert same["grpc.max_send_message_length"] == same["grpc.max_receive_message_length"]
