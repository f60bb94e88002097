"""TensorRTEngine's CUDA side on a real GPU: pycuda buffers, streams, contexts.

TensorRT itself is not on the GPU machines this project is lent, and cannot be
brought there (``test_tensorrt_gpu.py`` holds the tests that need it). So the
``tensorrt`` module here is the CPU tests' stand-in
(``tests/engines/fake_trt.py``, whose network computes y = 2x, here reading
and writing real device memory), while everything CUDA is real: the primary
context made current around each call, page-locked host buffers, device
allocations, asynchronous copies on each execution context's own stream,
contexts running at once from several threads, and every allocation freed on
unload. Skipped without pycuda and a GPU.
"""

from __future__ import annotations

import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpu_env import cuda_driver, device_memory_used, requires_cuda

from inferd.engines import EngineOptions
from inferd.engines.tensorrt import TensorRTEngine

# The stand-in lives beside the CPU tests; pytest puts that folder on sys.path
# only when it collects tests there.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "engines"))
from fake_trt import make_plan, make_tensorrt

pytestmark = [pytest.mark.gpu, requires_cuda()]

MIB = 1 << 20
WIDTH = 1 << 16  # 256 KiB a float32 row: 16 MiB a tensor at 64 rows


class DeviceMemory:
    """The stand-in network's view of real device memory. It reads its inputs
    once the copies queued before it have landed (the whole context is
    synchronised) and writes its outputs with pycuda's synchronous copies, on
    the legacy default stream, which the engine's (blocking) streams wait for
    before the output copies queued after it."""

    def __init__(self, cuda: Any) -> None:
        self.cuda = cuda

    def read(self, address: int, nbytes: int) -> bytes:
        self.cuda.Context.synchronize()
        host = np.empty(nbytes, np.uint8)
        self.cuda.memcpy_dtoh(host, address)
        return host.tobytes()

    def write(self, address: int, data: bytes) -> None:
        self.cuda.memcpy_htod(address, np.frombuffer(data, np.uint8))


def test_contexts_run_at_once_on_real_cuda_buffers_and_unload_frees_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cuda, _ = cuda_driver()
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt(memory=DeviceMemory(cuda)))
    profiles = [{"x": [[1, WIDTH], [16, WIDTH], [16, WIDTH]]},
                {"x": [[17, WIDTH], [64, WIDTH], [64, WIDTH]]}]  # fmt: skip
    path = tmp_path / "m" / "1" / "model.plan"
    path.parent.mkdir(parents=True)
    path.write_bytes(
        make_plan(
            inputs=[("x", "FLOAT", [-1, WIDTH])],
            outputs=[("y", "FLOAT", [-1, WIDTH])],
            profiles=profiles * 2,  # one copy per execution context
        )
    )
    before = device_memory_used()
    engine = TensorRTEngine(path, EngineOptions(concurrency=2))
    loaded = device_memory_used()
    assert engine.max_concurrency == 2
    # x and y at the profiles' largest batch, on each context: 64 MiB.
    assert loaded - before >= 64 * MIB - 4 * MIB, (before, loaded)

    start = threading.Barrier(4)

    def call(i: int) -> bool:
        start.wait()
        ok = True
        for j in range(8):
            batch = (1, 5, 16, 17, 40, 64)[(i + j) % 6]
            x = np.random.default_rng(i * 100 + j).standard_normal((batch, WIDTH), np.float32)
            ok &= bool(np.array_equal(engine.infer({"x": x})["y"], x * 2))
        return ok

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(call, range(4)))
    calls = engine.slot_calls
    assert sum(calls) == 32
    assert all(n > 0 for n in calls), "both contexts ran batches"
    engine.close()
    after = device_memory_used()
    print(f"device memory used: {before / MIB:.0f} MiB before load, {loaded / MIB:.0f} loaded, "
          f"{after / MIB:.0f} after unload; calls per context {calls}")  # fmt: skip
    assert after <= before + 4 * MIB, "unload frees every device buffer"
