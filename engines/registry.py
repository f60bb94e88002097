"""Pick the engine for a model file by its platform or backend name."""

from __future__ import annotations

from pathlib import Path

from inferd.engines.base import Engine, EngineError, EngineOptions

#: Triton platform/backend names -> default model file name.
MODEL_FILENAMES = {
    "onnxruntime_onnx": "model.onnx",
    "onnxruntime": "model.onnx",
    "tensorrt_plan": "model.plan",
    "tensorrt": "model.plan",
    # Python models load through inferd.server.python_backend, not load_engine.
    "python": "model.py",
}


def load_engine(platform: str, path: Path, options: EngineOptions | None = None) -> Engine:
    """Load ``path`` with the engine for ``platform`` (a Triton platform or
    backend name)."""
    if platform in ("onnxruntime_onnx", "onnxruntime"):
        from inferd.engines.onnx import OnnxEngine

        return OnnxEngine(path, options or EngineOptions())
    if platform in ("tensorrt_plan", "tensorrt"):
        # Imports tensorrt/pycuda only when a plan is loaded.
        from inferd.engines.tensorrt import TensorRTEngine

        return TensorRTEngine(path, options or EngineOptions())
    raise EngineError(f"platform '{platform}' is not supported by this server")
