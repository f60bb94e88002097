"""``server.gpu.gpu_snapshot``: NVML readings, None without NVML or a GPU.

The first test calls the real ``pynvml`` (installed by the test extra) and
checks whatever this machine has. The others inject a minimal fake
``pynvml`` through ``sys.modules``, only because no GPU (and no NVIDIA
driver) is available where this suite runs: they check the mapping from
NVML's answers to ``GpuStat`` and the failure handling.
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Iterator

import pytest

from inferd.server import gpu
from inferd.server.gpu import GpuStat, gpu_snapshot


@pytest.fixture(autouse=True)
def fresh_nvml() -> Iterator[None]:
    gpu._NVML.reset()
    yield
    gpu._NVML.reset()


def test_real_nvml_on_this_machine(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="inferd.gpu")
    stats = gpu_snapshot()
    if stats is None:
        # No pynvml, no driver, or no GPU: said once, then answered from memory.
        assert "GPU metrics off" in caplog.text or not caplog.records
        caplog.clear()
        assert gpu_snapshot() is None
        assert not caplog.records
    else:  # a GPU machine
        assert all(isinstance(s, GpuStat) and s.memory_total_bytes > 0 for s in stats)


class _NvmlError(Exception):
    pass


RESERVED = 512 << 20  # the driver's reserved memory, in v1's "used" only


def _fake_nvml(
    count: int = 2, broken: int | None = None, init_fails: bool = False, v2: str = "absent"
) -> types.ModuleType:
    """``v2``: "absent" (old bindings), "works", or "fails" (old driver)."""
    nvml = types.ModuleType("pynvml")
    calls = {"init": 0}

    def init() -> None:
        calls["init"] += 1
        if init_fails:
            raise _NvmlError("driver not loaded")

    def handle(index: int) -> int:
        if index == broken:
            raise _NvmlError("GPU is lost")
        return index

    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: count  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA L4" if h == 0 else "NVIDIA H100"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=37 + h, memory=12)  # type: ignore[attr-defined]

    def memory_info(h: int, version: int | None = None) -> types.SimpleNamespace:
        if version is None:  # v1: "used" counts the reserved memory
            return types.SimpleNamespace(used=((h + 1) << 30) + RESERVED, total=24 << 30)
        assert version == 0x02000028
        if v2 == "fails":
            raise _NvmlError("Function Not Found")
        return types.SimpleNamespace(used=(h + 1) << 30, total=24 << 30, reserved=RESERVED)

    nvml.nvmlDeviceGetMemoryInfo = memory_info  # type: ignore[attr-defined]
    if v2 != "absent":
        nvml.nvmlMemory_v2 = 0x02000028  # type: ignore[attr-defined]
    nvml.calls = calls  # type: ignore[attr-defined]
    return nvml


@pytest.mark.parametrize(
    ("v2", "reserved_in_used"), [("works", 0), ("fails", RESERVED), ("absent", RESERVED)]
)
def test_readings_map_to_gpu_stats(
    monkeypatch: pytest.MonkeyPatch, v2: str, reserved_in_used: int
) -> None:
    """Memory used as nvidia-smi shows it (without the reserved memory: the
    v2 query) where the bindings and driver have v2; v1 elsewhere."""
    nvml = _fake_nvml(v2=v2)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert gpu_snapshot() == [
        GpuStat(0, "NVIDIA L4", 37.0, 12.0, (1 << 30) + reserved_in_used, 24 << 30),
        GpuStat(1, "NVIDIA H100", 38.0, 12.0, (2 << 30) + reserved_in_used, 24 << 30),
    ]
    gpu_snapshot()
    assert nvml.calls["init"] == 1  # type: ignore[attr-defined]


def test_a_failing_gpu_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(count=2, broken=0))
    stats = gpu_snapshot()
    assert stats is not None and [s.index for s in stats] == [1]


def test_no_gpu_or_no_driver_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(count=0))
    assert gpu_snapshot() is None
    gpu._NVML.reset()
    failing = _fake_nvml(init_fails=True)
    monkeypatch.setitem(sys.modules, "pynvml", failing)
    assert gpu_snapshot() is None
    assert gpu_snapshot() is None
    assert failing.calls["init"] == 1  # type: ignore[attr-defined]  # remembered


def test_without_pynvml_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert gpu_snapshot() is None
