"""Server CPU per request under a closed loop: the request path's yardstick.

Shared by the benchmarks that compare servers (or settings) by the CPU time the
server process spends per answered request (user + system, from /proc), which
other load on a shared machine disturbs much less than throughput.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inferd.clients import AsyncInferenceClient, InferenceClient

INPUTS: dict[str, dict[str, np.ndarray]] = {
    "digits_mlp": {"pixels": np.ones((1, 64), np.float32)},
    "dense_reference": {"x": np.ones((1, 1024), np.float32)},
}


@dataclass
class Result:
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    spans: int = 0
    #: Server CPU seconds (user + system) during the measured window.
    cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_s / self.requests * 1e6 if self.requests else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3 if ordered else 0.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), 0 where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """``cpu_seconds`` summed over a process and its live descendants (a
    server made of several processes, such as Triton and its Python stubs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu_seconds(current)
        todo.extend(children.get(current, ()))
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], address: str, timeout_s: float = 60) -> None:
    """Return once the server at ``address`` is ready; raise if it exits or stalls."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with InferenceClient(address) as client:
                if client.is_server_ready(timeout=1):
                    return
        except Exception:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"server at {address} did not become ready")


async def closed_loop(
    address: str,
    model: str,
    concurrency: int,
    seconds: float,
    warmup: float,
    pid: int,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> Result:
    """``concurrency`` requests in flight for ``seconds`` after ``warmup``."""
    inputs = dict(INPUTS[model] if inputs is None else inputs)
    result = Result()
    async with AsyncInferenceClient(address) as client:
        end_warmup = time.perf_counter() + warmup
        while time.perf_counter() < end_warmup:
            await asyncio.gather(*(client.infer(model, inputs) for _ in range(concurrency)))
        cpu = cpu_seconds(pid)
        start = time.perf_counter()
        stop = start + seconds

        async def worker() -> None:
            while (now := time.perf_counter()) < stop:
                await client.infer(model, inputs)
                result.latencies.append(time.perf_counter() - now)
                result.requests += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
        result.cpu_s = cpu_seconds(pid) - cpu
    return result


async def stream_loop(
    address: str,
    model: str,
    concurrency: int,
    seconds: float,
    warmup: float,
    pid: int,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> Result:
    """One ModelStreamInfer stream with ``concurrency`` requests in flight
    for ``seconds`` after ``warmup`` (a reply lets the next request go)."""
    inputs = dict(INPUTS[model] if inputs is None else inputs)
    result = Result()
    permits = asyncio.Semaphore(concurrency)
    sent: dict[str, float] = {}
    state = {"measuring": False, "stop": time.perf_counter() + warmup + seconds}

    async def requests() -> AsyncIterator[tuple[str, dict[str, np.ndarray]]]:
        n = 0
        while time.perf_counter() < state["stop"]:
            await permits.acquire()
            n += 1
            sent[str(n)] = time.perf_counter()
            yield str(n), inputs

    async with AsyncInferenceClient(address) as client:
        start = time.perf_counter()
        cpu = cpu_seconds(pid)
        async for reply in client.stream_infer(model, requests()):
            permits.release()
            now = time.perf_counter()
            if not state["measuring"] and now - start >= warmup:
                state["measuring"] = True
                start, cpu = now, cpu_seconds(pid)
                continue
            if state["measuring"] and not isinstance(reply, Exception):
                result.latencies.append(now - sent.pop(reply.id, now))
                result.requests += 1
        result.seconds = time.perf_counter() - start
        result.cpu_s = cpu_seconds(pid) - cpu
    return result
