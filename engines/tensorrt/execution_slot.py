"""One TensorRT execution context with its CUDA stream and its buffers, and
the binding of a call's tensors to them.

Each tensor has a device buffer and a page-locked host buffer of the same
capacity, grown (never shrunk) when a call needs more. Inputs go host ->
pinned -> device and outputs device -> pinned asynchronously on the slot's
stream; the caller synchronizes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferd.engines.base import EngineError
from inferd.engines.tensorrt.plan import volume


@dataclass
class DeviceBuffer:
    device: Any  # pycuda DeviceAllocation
    host: np.ndarray  # page-locked, flat uint8
    capacity: int

    def free(self) -> None:
        with contextlib.suppress(Exception):
            self.device.free()
        with contextlib.suppress(Exception):
            base = self.host.base
            if base is not None and hasattr(base, "free"):
                base.free()


class ExecutionSlot:
    """One execution context with its stream, profiles and buffers."""

    def __init__(self, index: int, context: Any, stream: Any, profiles: tuple[int, ...]) -> None:
        self.index = index
        self.context = context
        self.stream = stream
        self.profiles = profiles
        self.profile = -1
        self.buffers: dict[str, DeviceBuffer] = {}
        self.calls = 0

    def buffer(self, cuda: Any, name: str, nbytes: int) -> DeviceBuffer:
        """The tensor's buffers, grown to ``nbytes`` if needed (only between
        calls: the stream is idle)."""
        found = self.buffers.get(name)
        if found is not None and found.capacity >= nbytes:
            return found
        if found is not None:
            found.free()
            del self.buffers[name]
        capacity = max(nbytes, 256)
        host = cuda.pagelocked_empty(capacity, np.uint8)
        try:
            device = cuda.mem_alloc(capacity)
        except BaseException:
            host.base.free()
            raise
        made = DeviceBuffer(device, host, capacity)
        self.buffers[name] = made
        return made

    def select_profile(self, index: int) -> None:
        if self.profile == index:
            return
        if not self.context.set_optimization_profile_async(index, self.stream.handle):
            raise EngineError(f"TensorRT could not select optimization profile {index}")
        self.profile = index

    def bind(self, cuda: Any, nbytes: Mapping[str, int]) -> None:
        """Size every tensor's buffers and give TensorRT their addresses,
        before any copy is queued."""
        for name, size in nbytes.items():
            self.buffer(cuda, name, size)
        for name, buf in self.buffers.items():
            if not self.context.set_tensor_address(name, int(buf.device)):
                raise EngineError(f"TensorRT refused the buffer of tensor '{name}'")

    def copy_inputs(self, cuda: Any, arrays: Mapping[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            if array.nbytes:
                buf = self.buffers[name]
                staged = buf.host[: array.nbytes]
                np.copyto(staged.view(array.dtype).reshape(array.shape), array)
                cuda.memcpy_htod_async(buf.device, staged, self.stream)

    def copy_outputs(self, cuda: Any, nbytes: Mapping[str, int]) -> None:
        for name, size in nbytes.items():
            if size:
                buf = self.buffers[name]
                cuda.memcpy_dtoh_async(buf.host[:size], buf.device, self.stream)

    def output(self, name: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
        """An output copied by ``copy_outputs`` (after the stream synchronized)."""
        host = self.buffers[name].host[: volume(shape) * dtype.itemsize]
        # A copy: the pinned buffer is reused by this context's next call.
        return host.view(dtype).reshape(shape).copy()

    def free(self) -> None:
        for buf in self.buffers.values():
            buf.free()
        self.buffers.clear()
        self.context = None
        self.stream = None
