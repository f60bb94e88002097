"""inferd's NVML gauges on a real GPU, against nvidia-smi and a known allocation.

A served repository with ``--metrics-port``; this test process holds a known
amount of device memory and keeps the GPU busy, and the scraped
``inferd_gpu_*`` series must follow. Skipped (with the reason) where NVML finds
no GPU, or where neither pycuda (the ``gpu`` extra) nor PyTorch can hold
device memory. No fakes: CPU machines cover the mapping with a fake ``pynvml``
in ``tests/server/test_gpu.py``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gpu_env import cuda_context
from metrics_scrape import scrape

from inferd.server import gpu


def _nvml_reason() -> str | None:
    gpu._NVML.reset()
    stats = gpu.gpu_snapshot()
    gpu._NVML.reset()
    return "NVML sees no GPU here (or nvidia-ml-py is missing)" if not stats else None


def _holder_reason() -> str | None:
    if importlib.util.find_spec("pycuda") or importlib.util.find_spec("torch"):
        return None
    return "neither pycuda nor PyTorch is installed to hold device memory"


_REASON = _nvml_reason() or _holder_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=f"{_REASON}")]

GIB = 1 << 30
HOLD = 8 * GIB


@dataclass(frozen=True)
class Reading:
    used: float  # bytes, summed over the GPUs
    total: float
    utilization: float  # the busiest GPU, 0..1
    names: tuple[str, ...]


def _read(port: int) -> Reading:
    samples = [s for f in scrape(port) for s in f.samples]

    def by_gpu(name: str) -> dict[str, float]:
        return {s.labels["gpu"]: s.value for s in samples if s.name == name}

    used, total = by_gpu("inferd_gpu_memory_used_bytes"), by_gpu("inferd_gpu_memory_total_bytes")
    assert used and used.keys() == total.keys(), "no inferd_gpu_* series in the scrape"
    names = tuple(s.labels["name"] for s in samples if s.name == "inferd_gpu_memory_total_bytes")
    return Reading(
        sum(used.values()),
        sum(total.values()),
        max(by_gpu("inferd_gpu_utilization_ratio").values()),
        names,
    )


def _nvidia_smi() -> tuple[float, float] | None:
    """(used, total) bytes over all GPUs as nvidia-smi reports them."""
    if shutil.which("nvidia-smi") is None:
        return None
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    rows = [[float(v) * (1 << 20) for v in line.split(",")] for line in out.splitlines() if line]
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


@contextlib.contextmanager
def _pycuda_device() -> Iterator[tuple[Callable[[int], None], Callable[[], None]]]:
    with cuda_context(0) as cuda:
        blocks: list[Any] = []

        def hold(nbytes: int) -> None:
            blocks.append((cuda.mem_alloc(nbytes), nbytes))

        def work() -> None:  # a memset over the held blocks: device kernels
            for block, nbytes in blocks:
                cuda.memset_d32(block, 0x3F800000, nbytes // 4)

        try:
            yield hold, work
        finally:
            for block, _ in blocks:
                block.free()


@contextlib.contextmanager
def _torch_device() -> Iterator[tuple[Callable[[int], None], Callable[[], None]]]:
    import torch

    torch.zeros(1, device="cuda:0")  # the context, before the idle reading
    torch.cuda.synchronize()
    blocks: list[Any] = []
    a = torch.randn(4096, 4096, device="cuda:0")

    def hold(nbytes: int) -> None:
        blocks.append(torch.empty(nbytes, dtype=torch.uint8, device="cuda:0"))
        torch.cuda.synchronize()

    def work() -> None:
        for _ in range(20):
            a.copy_(torch.tanh(a @ a))
        torch.cuda.synchronize()

    try:
        yield hold, work
    finally:
        blocks.clear()
        torch.cuda.empty_cache()


def _device() -> contextlib.AbstractContextManager[
    tuple[Callable[[int], None], Callable[[], None]]
]:
    """(hold(nbytes), work()) on GPU 0: pycuda (the ``gpu`` extra), else PyTorch."""
    return _pycuda_device() if importlib.util.find_spec("pycuda") else _torch_device()


def test_gpu_gauges_follow_held_memory_and_load(
    demo_repository: Path, make_server: Callable[..., Any]
) -> None:
    server = make_server(demo_repository, metrics_port=0)
    port = server.server.metrics_port
    with _device() as (hold, work):
        idle = _read(port)
        smi = _nvidia_smi()
        assert idle.total > 0 and all(idle.names)
        if smi is not None:  # same units and devices as the operator's tool
            assert abs(idle.total - smi[1]) <= 0.01 * smi[1]
            assert abs(idle.used - smi[0]) <= 64 * (1 << 20)  # both without reserved memory

        hold(HOLD)
        held = _read(port)
        # The allocation shows up, in bytes (allocators round up a little).
        assert HOLD - 64 * (1 << 20) <= held.used - idle.used <= HOLD + 512 * (1 << 20)
        assert held.total == idle.total

        # Utilization is NVML's share of the last sample period (1/6 to 1 s)
        # with a kernel running: read it while the GPU is kept busy.
        busiest, deadline = 0.0, time.monotonic() + 5.0
        while time.monotonic() < deadline and busiest < 0.5:
            for _ in range(10):
                work()
            busiest = max(busiest, _read(port).utilization)
        assert busiest >= 0.5, f"utilization read {busiest:.2f} while the GPU was busy"
    time.sleep(0.5)
    after = _read(port)
    print(  # the figures for a GPU run's notes (pytest -s)
        f"{idle.names}: total {idle.total / GIB:.1f} GiB; used idle {idle.used / GIB:.3f}, "
        f"holding {HOLD / GIB:.0f} GiB {held.used / GIB:.3f}, after {after.used / GIB:.3f} GiB; "
        f"nvidia-smi used/total {smi and [round(v / GIB, 3) for v in smi]}; "
        f"busiest utilization {busiest:.2f}"
    )
    assert after.used <= held.used - HOLD + 512 * (1 << 20)  # freed memory is seen freed
