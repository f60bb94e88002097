"""What real clients see when the server advertises few streams per connection.

    python -m benchmarks.stream_limit_clients [--limits 16 32 64 256] [--calls 64 300 900]
        [--clients grpc-aio grpc-sync triton ours-aio ours-sync] [--seconds 3]
        [--perf-analyzer 64 320] [--server-arg=--no-refuse-unreleased-streams]

For each limit (``--max-concurrent-streams``) a child ``inferd serve`` on the
demo repository; for each client kind and number of calls, that many
closed-loop callers on ONE new channel (each sends its next ``digits_mlp``
request, one row, when the last is answered) for ``seconds``: plain grpcio
(asyncio tasks, or threads), tritonclient.grpc (threads), inferd's own
clients; then perf_analyzer at each ``--perf-analyzer`` concurrency. Reported:
OK answers per second, failures by status and message, and how many of them
were sent in the channel's first 100 ms (before the server's SETTINGS can
have arrived). One row per run as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np

from benchmarks.server_process import ServerProcess

MODEL = "digits_mlp"
PIXELS = np.zeros((1, 64), dtype=np.float32)
FIRST_S = 0.1
CALL_TIMEOUT_S = 30.0

#: (seconds since the channel opened when sent, "OK" or "CODE: details").
Sink = list[tuple[float, str]]


def _request() -> Any:
    from inferd.protos import grpc_service_pb2 as pb

    msg = pb.ModelInferRequest(model_name=MODEL)
    msg.inputs.add(name="pixels", datatype="FP32", shape=list(PIXELS.shape))
    msg.raw_input_contents.append(PIXELS.tobytes())
    return msg


def _failure(err: BaseException) -> str:
    code = getattr(err, "code", None)
    details = getattr(err, "details", None)
    if callable(code):
        text = details() if callable(details) else str(details)
        return f"{code().name}: {(text or '')[:70]}"
    if code is not None:  # InferenceServerError: attributes
        return f"{getattr(code, 'name', code)}: {str(details)[:70]}"
    return f"{type(err).__name__}: {str(err)[:70]}"


async def _aio_loop(calls: int, seconds: float, send: Callable[[], Any], sink: Sink) -> None:
    t0 = time.perf_counter()
    end = t0 + seconds

    async def caller() -> None:
        while (start := time.perf_counter()) < end:
            try:
                await send()
                sink.append((start - t0, "OK"))
            except Exception as err:  # every failure is counted by its kind
                sink.append((start - t0, _failure(err)))

    await asyncio.gather(*(caller() for _ in range(calls)))


def _thread_loop(calls: int, seconds: float, send: Callable[[], Any], sink: Sink) -> None:
    t0 = time.perf_counter()
    end = t0 + seconds
    lock = threading.Lock()

    def caller() -> None:
        while (start := time.perf_counter()) < end:
            try:
                send()
                outcome = "OK"
            except Exception as err:  # every failure is counted by its kind
                outcome = _failure(err)
            with lock:
                sink.append((start - t0, outcome))

    with ThreadPoolExecutor(calls) as pool:
        for future in [pool.submit(caller) for _ in range(calls)]:
            future.result()


def run_client(kind: str, address: str, calls: int, seconds: float) -> Sink:
    sink: Sink = []
    if kind.startswith("grpc-"):
        from inferd.protos import grpc_service_pb2_grpc as pb_grpc

        msg = _request()
    if kind == "grpc-aio":

        async def plain_aio() -> None:
            async with grpc.aio.insecure_channel(address) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                await _aio_loop(
                    calls, seconds, lambda: stub.ModelInfer(msg, timeout=CALL_TIMEOUT_S), sink
                )

        asyncio.run(plain_aio())
    elif kind == "grpc-sync":
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            _thread_loop(calls, seconds, lambda: stub.ModelInfer(msg, timeout=CALL_TIMEOUT_S), sink)
    elif kind == "triton":
        import tritonclient.grpc as tc

        client = tc.InferenceServerClient(address)
        data = tc.InferInput("pixels", list(PIXELS.shape), "FP32")
        data.set_data_from_numpy(PIXELS)
        _thread_loop(
            calls, seconds, lambda: client.infer(MODEL, [data], client_timeout=CALL_TIMEOUT_S), sink
        )
        client.close()
    elif kind == "ours-aio":
        from inferd.clients import AsyncInferenceClient

        async def ours_aio() -> None:
            async with AsyncInferenceClient(address) as client:
                await _aio_loop(
                    calls,
                    seconds,
                    lambda: client.infer(MODEL, {"pixels": PIXELS}, timeout=CALL_TIMEOUT_S),
                    sink,
                )

        asyncio.run(ours_aio())
    elif kind == "ours-sync":
        from inferd.clients import InferenceClient

        with InferenceClient(address) as client:
            _thread_loop(
                calls,
                seconds,
                lambda: client.infer(MODEL, {"pixels": PIXELS}, timeout=CALL_TIMEOUT_S),
                sink,
            )
    else:
        raise ValueError(f"unknown client kind {kind!r}")
    return sink


def summary(sink: Sink, seconds: float) -> dict[str, Any]:
    failures = Counter(o for _, o in sink if o != "OK")
    return {
        "ok_per_s": round(sum(1 for _, o in sink if o == "OK") / seconds, 1),
        "sent": len(sink),
        "failed": sum(failures.values()),
        "failed_in_first_100ms": sum(1 for t, o in sink if o != "OK" and t < FIRST_S),
        "failures": dict(failures.most_common(4)),
    }


def run_client_process(kind: str, address: str, calls: int, seconds: float) -> dict[str, Any]:
    """``run_client`` in a child process: tritonclient's protos and inferd's
    share file names, so they cannot be imported into one process."""
    cmd = [sys.executable, "-m", "benchmarks.stream_limit_clients", "--one-client", kind,
           address, str(calls), str(seconds)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=True)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def run_perf_analyzer(address: str, concurrency: int, seconds: float) -> dict[str, Any]:
    binary = shutil.which("perf_analyzer") or str(Path(sys.executable).parent / "perf_analyzer")
    cmd = [binary, "-i", "grpc", "-u", address, "-m", MODEL,
           "--concurrency-range", str(concurrency),
           "--measurement-interval", str(int(seconds * 1000)), "--stability-percentage", "999",
           "--max-trials", "3"]  # fmt: skip
    # The binary links libcudart.so.12, which pip's nvidia-cuda-runtime-cu12 provides.
    venv_lib = Path(sys.executable).parent.parent / "lib"
    cudart = [str(p) for p in venv_lib.glob("python3*/site-packages/nvidia/cuda_runtime/lib")]
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join([*cudart, os.environ.get("LD_LIBRARY_PATH", "")]),
    }
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env=env)
    out = done.stdout + done.stderr
    rates = re.findall(r"[Tt]hroughput: ([\d.]+) infer/sec", out)
    errors = [line.strip() for line in out.splitlines() if "rror" in line or "ailed" in line]
    return {
        "ok_per_s": float(rates[-1]) if rates else None,
        "exit": done.returncode,
        "errors": errors[:4],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limits", type=int, nargs="+", default=[16, 32, 64, 256])
    parser.add_argument("--calls", type=int, nargs="+", default=[64, 300, 900])
    parser.add_argument(
        "--clients",
        nargs="+",
        default=["grpc-aio", "grpc-sync", "triton", "ours-aio", "ours-sync"],
    )
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--perf-analyzer", type=int, nargs="*", default=[64, 320])
    parser.add_argument("--no-clients", action="store_true", help="perf_analyzer only")
    parser.add_argument("--server-arg", action="append", default=[], help="passed to serve")
    parser.add_argument("--one-client", nargs=4, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.one_client:
        kind, address, calls, seconds = opts.one_client
        sink = run_client(kind, address, int(calls), float(seconds))
        print(json.dumps(summary(sink, float(seconds))))
        return 0
    from inferd.server.demo_models import build_demo_repository

    with tempfile.TemporaryDirectory(prefix="inferd-stream-limit-") as tmp:
        repo = build_demo_repository(Path(tmp) / "demo")
        for limit in opts.limits:
            args = ("--max-concurrent-streams", str(limit))
            with ServerProcess(repo, *args, *opts.server_arg) as server:
                base = {"limit": limit, "server_args": opts.server_arg}
                for calls in [] if opts.no_clients else opts.calls:
                    for kind in opts.clients:
                        row = {**base, "client": kind, "calls": calls}
                        row |= run_client_process(kind, server.address, calls, opts.seconds)
                        row |= {"load": os.getloadavg()[0]}
                        print(json.dumps(row), flush=True)
                for concurrency in opts.perf_analyzer:
                    row = {**base, "client": "perf_analyzer", "calls": concurrency}
                    row |= run_perf_analyzer(server.address, concurrency, opts.seconds)
                    print(json.dumps(row | {"load": os.getloadavg()[0]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
