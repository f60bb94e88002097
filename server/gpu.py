"""GPU utilization and memory through NVML, for metrics.

    from inferd.server.gpu import gpu_snapshot
    stats = gpu_snapshot()   # list[GpuStat], or None without NVML or a GPU

``pynvml`` (the ``nvidia-ml-py`` package) is imported on first use. Without
it, without an NVIDIA driver, or with no GPU, ``gpu_snapshot`` returns None;
the first failure is logged once at INFO and remembered, so calling it on
every metrics scrape costs nothing on CPU machines. A GPU whose query fails
(e.g. lost off the bus) is left out of the list.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("inferd.gpu")


@dataclass(frozen=True, slots=True)
class GpuStat:
    index: int
    name: str
    #: Percent of the last sample period a kernel was running (0..100).
    utilization_percent: float
    #: Percent of the period device memory was read or written (0..100).
    memory_utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int


class _Nvml:
    """NVML initialised once per process; ``None`` module when unavailable."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._module: Any = None
        self._tried = False

    def module(self) -> Any:
        with self._lock:
            if not self._tried:
                self._tried = True
                self._module = self._init()
            return self._module

    @staticmethod
    def _init() -> Any:
        try:
            import pynvml
        except ImportError:
            log.info("GPU metrics off: pynvml (nvidia-ml-py) is not installed")
            return None
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            log.info("GPU metrics off: NVML could not start (%s)", type(exc).__name__)
            return None
        return pynvml

    def reset(self) -> None:
        """Forget the outcome (tests)."""
        with self._lock:
            self._tried = False
            self._module = None


_NVML = _Nvml()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _memory(nvml: Any, handle: Any) -> Any:
    """NVML's memory info, ``used`` without the driver's reserved memory as
    ``nvidia-smi`` shows it (the v2 query; on an H200 v1's ``used`` read
    0.6 GiB more on an idle card). Drivers or bindings without v2: v1."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            return nvml.nvmlDeviceGetMemoryInfo(handle, version=version)
        except Exception as exc:  # NVMLError_FunctionNotFound / _NotSupported
            log.debug("NVML memory info v2 failed (%s); using v1", type(exc).__name__)
    return nvml.nvmlDeviceGetMemoryInfo(handle)


def gpu_snapshot() -> list[GpuStat] | None:
    """One reading per visible GPU, or None when NVML or a GPU is missing."""
    nvml = _NVML.module()
    if nvml is None:
        return None
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:
        log.debug("NVML device count failed: %s", type(exc).__name__)
        return None
    if count == 0:
        return None
    stats: list[GpuStat] = []
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            rates = nvml.nvmlDeviceGetUtilizationRates(handle)
            memory = _memory(nvml, handle)
            stats.append(
                GpuStat(
                    index=index,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    utilization_percent=float(rates.gpu),
                    memory_utilization_percent=float(rates.memory),
                    memory_used_bytes=int(memory.used),
                    memory_total_bytes=int(memory.total),
                )
            )
        except Exception as exc:
            log.debug("NVML query of GPU %d failed: %s", index, type(exc).__name__)
    return stats
