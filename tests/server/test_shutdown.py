"""SIGTERM in the middle of a load run: health goes NOT_SERVING, new work is
refused with UNAVAILABLE, every admitted request gets its answer, exit 0.

The server runs as ``inferd serve`` in a child process. Callers keep sending
until the port closes. The check that nothing admitted is lost: the number of
OK answers the callers received equals the number of requests the server says
it admitted (its "drained: N ... admitted" log line); every other call was
refused with UNAVAILABLE (by the draining server, or by the closed port), or,
for a call that hits a connection in the very instant the transport stops,
cancelled by gRPC itself before reaching any handler (never admitted).
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections import Counter
from pathlib import Path

import grpc
import grpc.aio
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.server_process import ServerProcess
from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc


def request(model: str) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model)
    if model == "dense_reference":
        msg.inputs.add(name="x", datatype="FP32", shape=[8, 1024])
        msg.raw_input_contents.append(np.ones((8, 1024), np.float32).tobytes())
    else:
        msg.inputs.add(name="pixels", datatype="FP32", shape=[4, 64])
        msg.raw_input_contents.append(np.ones((4, 64), np.float32).tobytes())
    return msg


def kind(code: grpc.StatusCode, details: str) -> str:
    if code == grpc.StatusCode.OK:
        return "ok"
    if code == grpc.StatusCode.UNAVAILABLE and "shutting down" in details:
        return "refused-draining"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "refused-transport"  # port closed / connection going away: never admitted
    if code == grpc.StatusCode.CANCELLED and details == "CANCELLED":
        # gRPC's own answer to a call that reaches a connection in the instant
        # the server stops (before any handler): at most about one per
        # connection. Whether it was admitted is settled by ok == admitted.
        return "cut-by-transport"
    return f"other:{code.name}:{details[:80]}"


async def load(
    address: str,
    callers: int,
    stop_after: float,
    health_log: list[int],
    models: tuple[str, ...] = ("dense_reference", "digits_mlp"),
) -> tuple[Counter[str], int, float]:
    """Closed-loop callers until each has seen the port closed for 0.5 s
    (or ``stop_after`` s). Returns outcome kinds, calls sent, SIGTERM time."""
    outcomes: Counter[str] = Counter()
    sent = 0
    t0 = time.monotonic()

    async def caller(i: int) -> None:
        nonlocal sent
        # Each caller its own connection, as independent clients would have.
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            msg = request(models[i % len(models)])
            closed_since: float | None = None
            while time.monotonic() - t0 < stop_after:
                sent += 1
                try:
                    await stub.ModelInfer(msg, timeout=30)
                    code, details = grpc.StatusCode.OK, ""
                except grpc.aio.AioRpcError as err:
                    code, details = err.code(), err.details() or ""
                k = kind(code, details)
                outcomes[k] += 1
                if k == "refused-transport":
                    closed_since = closed_since or time.monotonic()
                    if time.monotonic() - closed_since > 0.5:
                        return
                    await asyncio.sleep(0.01)

    async def watcher() -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                async for reply in stub.Watch(
                    health_pb2.HealthCheckRequest(service=""), timeout=60
                ):
                    health_log.append(int(reply.status))
            except grpc.aio.AioRpcError:
                pass  # the server went away

    watch = asyncio.create_task(watcher())
    await asyncio.gather(*(caller(i) for i in range(callers)))
    watch.cancel()
    return outcomes, sent, t0


def test_sigterm_under_load_loses_nothing_admitted(demo_repository: Path) -> None:
    server = ServerProcess(demo_repository, "--grace-s", "20").start()
    health_log: list[int] = []
    try:

        async def run() -> tuple[Counter[str], int]:
            task = asyncio.create_task(load(server.address, 12, 60, health_log))
            await asyncio.sleep(2.0)  # load is running
            server.signal(signal.SIGTERM)
            outcomes, sent, _ = await task
            return outcomes, sent

        outcomes, sent = asyncio.run(run())
        code = server.wait(60)
    finally:
        server.kill()
    log = "\n".join(server.lines)
    assert code == 0, log[-3000:]
    match = re.search(
        r"drained: (\d+) inference request\(s\) admitted since start, all answered", log
    )
    assert match, log[-3000:]
    admitted = int(match.group(1))
    others = {k: v for k, v in outcomes.items() if k.startswith("other")}
    assert not others, others
    assert outcomes["cut-by-transport"] == 0, outcomes
    assert sum(outcomes.values()) == sent
    # Every admitted request was answered OK, and only those were.
    assert outcomes["ok"] == admitted, (outcomes, admitted)
    assert outcomes["ok"] > 50
    assert outcomes["refused-draining"] + outcomes["refused-transport"] > 0
    # Health went NOT_SERVING before the port closed.
    SERVING = health_pb2.HealthCheckResponse.SERVING
    NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
    assert health_log[:1] == [SERVING] and NOT_SERVING in health_log
    assert "shutting down: draining" in log


def test_sigterm_under_unary_load_cancels_no_call(demo_repository: Path) -> None:
    """32 closed-loop callers on dense_reference (8 rows): every call is
    answered OK or refused UNAVAILABLE with a reason; gRPC cancels none of
    them at the transport's close."""
    server = ServerProcess(demo_repository, "--grace-s", "20").start()
    try:

        async def run() -> Counter[str]:
            task = asyncio.create_task(load(server.address, 32, 60, [], ("dense_reference",)))
            await asyncio.sleep(2.0)
            server.signal(signal.SIGTERM)
            outcomes, _, _ = await task
            return outcomes

        outcomes = asyncio.run(run())
        code = server.wait(60)
    finally:
        server.kill()
    log = "\n".join(server.lines)
    assert code == 0, log[-3000:]
    assert outcomes["ok"] > 50, outcomes
    assert outcomes["refused-draining"] > 0, outcomes
    assert outcomes["cut-by-transport"] == 0, outcomes
    assert set(outcomes) <= {"ok", "refused-draining", "refused-transport"}, outcomes
