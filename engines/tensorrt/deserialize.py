"""From a plan file to a deserialized TensorRT engine: reading the bytes,
TensorRT's header check, and deserialization with TensorRT's own reason when
it fails. Every failure is an ``EngineError`` with ``PLAN_ERROR`` first."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inferd.engines.base import EngineError
from inferd.engines.tensorrt.plan import PLAN_ERROR


def read_plan(path: Path) -> bytes:
    if not path.is_file():
        raise EngineError(f"{PLAN_ERROR}: the plan file does not exist or is not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EngineError(
            f"{PLAN_ERROR}: the plan file cannot be read: {exc.strerror or 'I/O error'}"
        ) from None
    if not data:
        raise EngineError(f"{PLAN_ERROR}: the plan file is empty")
    return data


def check_validity(trt: Any, runtime: Any, data: bytes) -> None:
    """TensorRT's header check, on releases that have it."""
    check = getattr(runtime, "get_engine_validity", None)
    validity = getattr(trt, "EngineValidity", None)
    if check is None or validity is None:
        return
    try:
        result, diagnostics = check(data)
    except Exception:  # the check is advisory; deserialization decides
        return
    if result != validity.INVALID:
        return
    reasons = []
    flags = getattr(trt, "EngineInvalidityDiagnostics", None)
    for name, member in getattr(flags, "__members__", {}).items():
        with contextlib.suppress(Exception):
            if int(diagnostics) & int(member):
                reasons.append(name.lower().replace("_", " "))
    detail = ", ".join(reasons) or "TensorRT rejected its header"
    raise EngineError(f"{PLAN_ERROR}: the plan is not valid here ({detail}); rebuild it")


def deserialize(runtime: Any, logger: Any, data: bytes, clean: Callable[[str], str]) -> Any:
    """The engine, or an ``EngineError`` with what TensorRT logged (``clean``
    scrubs paths from it)."""
    logger.take()
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except Exception as exc:
        said = logger.take() or str(exc)
        raise EngineError(f"{PLAN_ERROR}: {clean(said)}") from exc
    if engine is None:
        said = logger.take()
        reason = (
            clean(said)
            if said
            else "TensorRT could not deserialize it (a corrupt file, or a plan built by "
            "another TensorRT version or for another GPU)"
        )
        raise EngineError(f"{PLAN_ERROR}: {reason}")
    return engine
