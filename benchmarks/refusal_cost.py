"""What a refusal costs the server, beside an answer and a bare gRPC call.

    python -m benchmarks.refusal_cost [--requests 2000] [--rounds 3] [--rows 8]

Server CPU time (``/proc``) per request, ``callers`` closed-loop callers on
``dense_reference``: requests answered (10 s deadline), requests refused
(a 1.5 ms deadline: refused as unable to finish, expired on arrival, or
ended by the client's own deadline), and the same answered requests on the
bare grpc.aio server (``benchmarks.bare_server``: no model, no inferd code),
whose cost is gRPC-Python's floor for one call. Rounds take turns.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import grpc.aio

from benchmarks.overload import request
from benchmarks.server_process import ServerProcess
from inferd.protos import grpc_service_pb2_grpc as pb_grpc

REFUSED_DEADLINE_S = 0.0015


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def burst(address: str, n: int, timeout: float, rows: int, callers: int) -> Counter[str]:
    codes: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        msg = request(rows)

        async def caller() -> None:
            for _ in range(n // callers):
                try:
                    await stub.ModelInfer(msg, timeout=timeout)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as err:
                    codes[err.code().name] += 1

        await asyncio.gather(*(caller() for _ in range(callers)))
    return codes


def per_request_us(pid: int, address: str, n: int, timeout: float, rows: int) -> str:
    start = cpu_seconds(pid)
    codes = asyncio.run(burst(address, n, timeout, rows, callers=4))
    return f"{(cpu_seconds(pid) - start) / n * 1e6:.0f} us {dict(codes)}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=8)
    opts = parser.parse_args(argv)
    from inferd.server.demo_models import build_demo_repository

    port = _free_port()
    bare = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bare_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="inferd-refusal-cost-") as tmp:
            repo = build_demo_repository(Path(tmp) / "models")
            with ServerProcess(repo) as server:
                time.sleep(1)  # the bare server is up by now too
                bare_address = f"127.0.0.1:{port}"
                asyncio.run(burst(server.address, 400, 10, opts.rows, 4))  # warm-up
                asyncio.run(burst(bare_address, 400, 10, opts.rows, 4))
                for i in range(opts.rounds):
                    n, rows = opts.requests, opts.rows
                    print(
                        i,
                        "inferd answered",
                        per_request_us(server.pid, server.address, n, 10, rows),
                    )
                    print(
                        i,
                        "inferd refused",
                        per_request_us(server.pid, server.address, n, REFUSED_DEADLINE_S, rows),
                    )
                    print(i, "bare answered", per_request_us(bare.pid, bare_address, n, 10, rows))
    finally:
        bare.kill()
        bare.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
