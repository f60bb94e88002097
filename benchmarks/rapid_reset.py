"""HTTP/2 rapid reset against ``inferd serve``, with and without gRPC's
overload protection (``--refuse-unreleased-streams``).

    python -m benchmarks.rapid_reset [--seconds 4] [--rounds 2]

One connection opens ``dense_reference`` calls 64 at a time and cancels them
at once, as fast as it can; on another connection 8 closed-loop callers
measure what is left for them. Reported per run: calls reset, the callers'
OK answers and latency, server CPU seconds and RSS before and 3 s after.
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from benchmarks.overload import MODEL, request
from benchmarks.server_process import ServerProcess
from inferd.protos import grpc_service_pb2_grpc as pb_grpc

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    kb = Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0]
    return round(int(kb) / 1024, 1)


async def _reset(address: str, end: float, sent: list[int]) -> None:
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        msg = request(8, MODEL)
        while time.perf_counter() < end:
            calls = [stub.ModelInfer(msg, timeout=30) for _ in range(64)]
            await asyncio.sleep(0)  # let the HEADERS go out
            for call in calls:
                call.cancel()
            sent[0] += len(calls)
            await asyncio.sleep(0)


async def _measure(address: str, end: float, seconds: list[float], failed: list[str]) -> None:
    async with grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        msg = request(8, MODEL)

        async def caller() -> None:
            while (start := time.perf_counter()) < end:
                try:
                    await stub.ModelInfer(msg, timeout=10)
                    seconds.append(time.perf_counter() - start)
                except grpc.aio.AioRpcError as err:
                    failed.append(err.code().name)

        await asyncio.gather(*(caller() for _ in range(8)))


async def one_run(address: str, pid: int, duration: float) -> dict[str, Any]:
    end = time.perf_counter() + duration
    sent: list[int] = [0]
    seconds: list[float] = []
    failed: list[str] = []
    rss_before, cpu_before = _rss_mb(pid), _cpu_s(pid)
    await asyncio.gather(_reset(address, end, sent), _measure(address, end, seconds, failed))
    await asyncio.sleep(3.0)
    seconds.sort()
    return {
        "reset_calls": sent[0],
        "caller_ok": len(seconds),
        "caller_p50_ms": round(seconds[len(seconds) // 2] * 1e3, 1) if seconds else None,
        "caller_failed": len(failed),
        "server_cpu_s": round(_cpu_s(pid) - cpu_before, 2),
        "rss_mb": [rss_before, _rss_mb(pid)],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args(argv)
    from inferd.server.demo_models import build_demo_repository

    with tempfile.TemporaryDirectory(prefix="inferd-rapid-reset-") as tmp:
        repo = build_demo_repository(Path(tmp) / "demo")
        for round_ in range(opts.rounds):
            for protection in ("true", "false"):
                with ServerProcess(repo, "--refuse-unreleased-streams", protection) as server:
                    row = asyncio.run(one_run(server.address, server.pid, opts.seconds))
                row = {"round": round_, "refuse_unreleased_streams": protection, **row}
                print(json.dumps(row | {"load": os.getloadavg()[0]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
