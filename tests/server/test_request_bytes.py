"""Request bodies cannot fill the server's memory: callers without
credentials are refused before their message is read (server.auth), and the
bytes of requests in flight have a server-wide budget (server.request_bytes)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from conftest import ServerThread

from benchmarks.server_process import ServerProcess
from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc

MiB = 1 << 20
CALLERS = 24
BUDGET = 128 * MiB
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
#: How long SlowInference holds each request: the callers arrive well within it.
HOLD_S = 3.0


def big_request(size: int) -> bytes:
    """A serialized ModelInferRequest of about ``size`` bytes (FP32 digits pixels)."""
    msg = pb.ModelInferRequest(model_name="digits_mlp")
    rows = size // 256
    msg.inputs.add(name="pixels", datatype="FP32", shape=[rows, 64])
    msg.raw_input_contents.append(bytes(rows * 256))
    return msg.SerializeToString()


def peak_rss_reset(pid: int) -> None:
    """Start a new high-water mark of the process's resident memory (Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")


def rss_and_peak(pid: int) -> tuple[int, int]:
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


async def flood(address: str, payload: bytes) -> list[str]:
    """CALLERS concurrent ModelInfer calls with ``payload`` and no credentials,
    each on its own connection; their status codes and details."""
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", -1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(CALLERS)]
    await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), 30)

    async def one(channel: grpc.aio.Channel) -> str:
        call = channel.unary_unary(MODEL_INFER)  # bytes in, bytes out
        try:
            await call(payload, timeout=60)
        except grpc.aio.AioRpcError as err:
            return f"{err.code().name}: {err.details()}"
        return "OK"

    try:
        return list(await asyncio.gather(*(one(c) for c in channels)))
    finally:
        await asyncio.gather(*(c.close() for c in channels))


def test_requests_without_credentials_are_not_read(demo_repository: Path, tmp_path: Path) -> None:
    """24 concurrent 60 MB messages without a token: refused from their
    metadata, so the server's resident memory grows by less than the budget
    (on main it grew by about 3 GB: each was received and parsed first)."""
    tokens = tmp_path / "tokens.json"
    holder = {"name": "a", "roles": ["infer"]}
    tokens.write_text(json.dumps({"flood-test-token-0123456789": holder}))
    server = ServerProcess(
        demo_repository,
        "--auth-tokens-file",
        str(tokens),
        "--max-inflight-request-bytes",
        str(BUDGET),
        "--no-allow-http",
    ).start()
    try:
        payload = big_request(60 * MiB)
        before, _ = rss_and_peak(server.pid)
        peak_rss_reset(server.pid)
        outcomes = asyncio.run(flood(server.address, payload))
        _, peak = rss_and_peak(server.pid)
    finally:
        server.kill()
    assert {o.split(":")[0] for o in outcomes} == {"UNAUTHENTICATED"}, outcomes
    assert peak - before < BUDGET, f"resident memory grew by {(peak - before) / MiB:.0f} MiB"


class SlowInference(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Each ModelInfer holds its request (and its bytes) for a while before running."""

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if details.method != MODEL_INFER:
            return handler
        inner = handler.unary_unary

        async def slow(request: Any, context: Any) -> Any:
            await asyncio.sleep(HOLD_S)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            slow, handler.request_deserializer, handler.response_serializer
        )


def test_requests_over_the_bytes_budget_are_refused(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    payload = big_request(MiB)
    server = make_server(
        demo_repository, [SlowInference()], max_inflight_request_bytes=3 * len(payload)
    )
    assert server.server is not None
    outcomes = asyncio.run(flood(server.address, payload))
    refused = [o for o in outcomes if o.startswith("RESOURCE_EXHAUSTED")]
    assert refused, outcomes
    assert all("--max-inflight-request-bytes" in o for o in refused), refused
    # The others were read and decoded (too many rows for digits_mlp).
    assert {o.split(":")[0] for o in outcomes} <= {"RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"}
    assert len(refused) < CALLERS
    deadline = time.monotonic() + 10
    while server.server.request_bytes.held and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.server.request_bytes.held == 0  # every call's bytes released
    with grpc.insecure_channel(server.address) as channel:
        small = pb.ModelInferRequest(model_name="digits_mlp")
        small.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
        small.raw_input_contents.append(bytes(256))
        reply = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(small, timeout=30)
        assert reply.model_name == "digits_mlp"


@pytest.mark.parametrize("size", [10, 64 * MiB])
def test_budget_default_follows_the_message_limit(demo_repository: Path, size: int) -> None:
    from inferd.server.app import ServerConfig

    config = ServerConfig(model_repository=demo_repository, max_message_bytes=size)
    assert config.inflight_request_bytes == 4 * size
