"""TensorRT and CUDA at run time: importing ``tensorrt`` and ``pycuda`` on
demand (with a message saying what is missing), the process's TensorRT
logger, and one GPU's CUDA context."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from inferd.engines.base import EngineError
from inferd.engines.messages import clean_message
from inferd.engines.tensorrt.plan import parse_version

log = logging.getLogger("inferd.engines.tensorrt")

MIN_TENSORRT = (10, 0)
INSTALL_HINT = "pip install 'inferd[gpu]' on a machine with an NVIDIA GPU and driver"


def import_tensorrt() -> Any:
    """The ``tensorrt`` module (10 or later), or an ``EngineError`` saying why not."""
    try:
        import tensorrt as trt
    except ImportError:
        raise EngineError(
            f"TensorRT is not installed on this server: tensorrt_plan models need the "
            f"'tensorrt' Python package ({INSTALL_HINT})"
        ) from None
    except Exception as exc:  # e.g. OSError: a TensorRT library is missing
        raise EngineError(f"TensorRT could not be imported: {clean_message(str(exc))}") from exc
    version = str(getattr(trt, "__version__", "0"))
    if parse_version(version)[:2] < MIN_TENSORRT:
        raise EngineError(
            f"TensorRT {version} is too old: inferd needs TensorRT "
            f"{'.'.join(map(str, MIN_TENSORRT))} or later (the name-based tensor API)"
        )
    return trt


def import_cuda() -> Any:
    """``pycuda.driver``, initialised, or an ``EngineError`` saying why not."""
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        missing = "pycuda is not installed" if exc.name and "pycuda" in exc.name else None
        reason = missing or f"pycuda could not be imported: {clean_message(str(exc))}"
        raise EngineError(f"{reason} ({INSTALL_HINT})") from None
    try:
        cuda.init()
    except Exception as exc:
        raise EngineError(
            f"CUDA could not be initialised (no GPU or no driver?): {clean_message(str(exc))}"
        ) from exc
    return cuda


class TrtLogger:
    """The process's one TensorRT logger (TensorRT keeps the first logger it
    is given for good). Messages go to Python logging; errors are also kept
    per thread so a failed call can report what TensorRT said."""

    _instances: dict[int, Any] = {}  # id(tensorrt module) -> logger
    _lock = threading.Lock()

    @classmethod
    def get(cls, trt: Any) -> Any:
        with cls._lock:
            found = cls._instances.get(id(trt))
            if found is None:
                found = cls._instances[id(trt)] = _make_logger(trt)
            return found


def _make_logger(trt: Any) -> Any:
    severity = trt.ILogger.Severity
    errors = (severity.INTERNAL_ERROR, severity.ERROR)

    class Logger(trt.ILogger):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.local = threading.local()

        def log(self, level: Any, message: str) -> None:
            if level in errors:
                self.errors().append(message)
                log.error("TensorRT: %s", message)
            elif level == severity.WARNING:
                log.warning("TensorRT: %s", message)
            elif level == severity.INFO:
                log.debug("TensorRT: %s", message)

        def errors(self) -> list[str]:
            if not hasattr(self.local, "errors"):
                self.local.errors = []
            found: list[str] = self.local.errors
            return found

        def take(self) -> str:
            """This thread's errors since the last take, joined."""
            found = self.errors()
            text = " ".join(found[-3:])
            found.clear()
            return text

    return Logger()


class CudaDevice:
    """One GPU's primary CUDA context, made current around every use (pycuda
    contexts are per thread; the scheduler calls from several threads)."""

    def __init__(self, cuda: Any, device_id: int) -> None:
        self._cuda = cuda
        count = int(cuda.Device.count())
        if count == 0:
            raise EngineError("no CUDA GPU is visible to this server")
        if not 0 <= device_id < count:
            raise EngineError(f"GPU {device_id} is not visible to this server (it sees {count})")
        self.id = device_id
        device = cuda.Device(device_id)
        self.name = str(device.name())
        major, minor = device.compute_capability()
        self.compute_capability = (int(major), int(minor))
        self._context: Any = device.retain_primary_context()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        self._context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def release(self) -> None:
        if self._context is not None:
            self._context.detach()
            self._context = None
