"""Inference engines. Public API: ``Engine``, ``Signature``, ``TensorSpec``,
``EngineError``, ``load_engine``."""

from inferd.engines.base import (
    BYTES_DTYPE,
    Engine,
    EngineError,
    EngineInputError,
    EngineOptions,
    EngineRequestError,
    RequestCall,
    RequestResult,
    Signature,
    TensorSpec,
)
from inferd.engines.registry import load_engine

__all__ = [
    "BYTES_DTYPE",
    "Engine",
    "EngineError",
    "EngineInputError",
    "EngineOptions",
    "EngineRequestError",
    "RequestCall",
    "RequestResult",
    "Signature",
    "TensorSpec",
    "load_engine",
]
