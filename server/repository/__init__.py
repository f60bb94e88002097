"""The model repository, in Triton's layout: discovery and parsing
(``source``), the version policy (``versions``), auto-complete and checks
against the engine (``completion``), engine settings from the config
(``engine_settings``). Nothing here loads a model or speaks gRPC.

Every ``RepositoryError`` message may be shown to a remote caller.
"""

from inferd.server.repository.completion import complete_config
from inferd.server.repository.engine_settings import (
    CPU_ACCELERATORS,
    CPU_PROVIDER,
    CUDA_PROVIDER,
    GPU_ACCELERATORS,
    OPENVINO_PROVIDER,
    TENSORRT_PROVIDER,
    engine_options,
)
from inferd.server.repository.errors import ModelNotFoundError, RepositoryError
from inferd.server.repository.fingerprint import tree_fingerprint
from inferd.server.repository.source import (
    BACKEND_PLATFORMS,
    CARD_FIELDS,
    CARD_FILENAME,
    CONFIG_FILENAME,
    ONNX_PLATFORM,
    PYTHON_PLATFORM,
    TENSORRT_PLATFORM,
    ModelRepository,
    ModelSource,
)

__all__ = [
    "BACKEND_PLATFORMS",
    "CARD_FIELDS",
    "CARD_FILENAME",
    "CONFIG_FILENAME",
    "CPU_ACCELERATORS",
    "CPU_PROVIDER",
    "CUDA_PROVIDER",
    "GPU_ACCELERATORS",
    "ONNX_PLATFORM",
    "OPENVINO_PROVIDER",
    "PYTHON_PLATFORM",
    "TENSORRT_PLATFORM",
    "TENSORRT_PROVIDER",
    "ModelNotFoundError",
    "ModelRepository",
    "ModelSource",
    "RepositoryError",
    "complete_config",
    "engine_options",
    "tree_fingerprint",
]
