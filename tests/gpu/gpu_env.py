"""Where the GPU tests can run: TensorRT, pycuda, onnxruntime-gpu, a GPU.

The GPU tests are marked ``gpu`` and skip with the reason elsewhere:

    python -m pytest -m gpu -rs        # run them (and print skip reasons)

(No conftest.py here on purpose: other test modules import the root
conftest by its module name, which a second conftest would shadow.)
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest


@functools.cache
def cuda_driver() -> tuple[Any, str | None]:
    """(``pycuda.driver`` initialised, None) or (None, why not)."""
    if importlib.util.find_spec("pycuda") is None:
        return None, "pycuda is not installed (pip install 'inferd[gpu]')"
    try:
        import pycuda.driver as cuda

        cuda.init()
        count = cuda.Device.count()
    except Exception as exc:  # no driver, no device
        return None, f"CUDA could not be initialised: {type(exc).__name__}: {exc}"
    if count == 0:
        return None, "no CUDA GPU is visible"
    return cuda, None


@functools.cache
def tensorrt_gpu_reason() -> str | None:
    """None when TensorRT plans can be built and run here, else why not."""
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt is not installed (pip install 'inferd[gpu]' on a GPU machine)"
    return cuda_driver()[1]


@functools.cache
def onnxruntime_cuda_reason() -> str | None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)"
    return cuda_driver()[1]


@contextlib.contextmanager
def cuda_context(device: int = 0) -> Iterator[Any]:
    """The device's primary context, current in this thread."""
    cuda, reason = cuda_driver()
    assert cuda is not None, reason
    context = cuda.Device(device).retain_primary_context()
    context.push()
    try:
        yield cuda
    finally:
        cuda.Context.pop()
        context.detach()


def device_memory_used(device: int = 0) -> int:
    with cuda_context(device) as cuda:
        free, total = cuda.mem_get_info()
    return int(total - free)


def requires_cuda() -> pytest.MarkDecorator:
    reason = cuda_driver()[1]
    return pytest.mark.skipif(
        reason is not None, reason=f"needs pycuda and an NVIDIA GPU: {reason}"
    )


def requires_tensorrt_gpu() -> pytest.MarkDecorator:
    reason = tensorrt_gpu_reason()
    return pytest.mark.skipif(
        reason is not None, reason=f"needs TensorRT and an NVIDIA GPU: {reason}"
    )


def requires_onnxruntime_cuda() -> pytest.MarkDecorator:
    reason = onnxruntime_cuda_reason()
    return pytest.mark.skipif(
        reason is not None, reason=f"needs onnxruntime-gpu and an NVIDIA GPU: {reason}"
    )
