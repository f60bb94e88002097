"""Engine settings from a model's config, as Triton's onnxruntime backend
reads them: instance groups, thread pools, execution accelerators and their
parameters, the GPU."""

from __future__ import annotations

import re
from collections.abc import Sequence

from inferd.engines.base import EngineOptions
from inferd.protos import model_config_pb2
from inferd.server.repository.errors import RepositoryError
from inferd.server.repository.errors import quote as _quote

TENSORRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
OPENVINO_PROVIDER = "OpenVINOExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

#: ``config.optimization.execution_accelerators`` names -> onnxruntime providers.
GPU_ACCELERATORS = {"tensorrt": TENSORRT_PROVIDER, "cuda": CUDA_PROVIDER}
CPU_ACCELERATORS = {"openvino": OPENVINO_PROVIDER}

_THREAD_COUNT = re.compile(r"[0-9]{1,6}", re.ASCII)


def engine_options(
    config: model_config_pb2.ModelConfig, *, default_max_batch_size: int = 0
) -> EngineOptions:
    """Engine settings from the config, as Triton's onnxruntime backend reads
    them: instance counts, thread-pool parameters, execution accelerators
    (with their parameters), the GPU, and the largest batch the scheduler
    will dispatch (``default_max_batch_size`` when the config leaves it to
    auto-complete)."""
    name = config.name or "<unnamed>"
    concurrency = 0
    for group in config.instance_group:
        if group.count < 0:
            raise RepositoryError(f"model '{name}': instance_group count must not be negative")
        concurrency += group.count or 1  # Triton's default count is 1
    providers = _providers(config)
    max_batch = config.max_batch_size
    if max_batch <= 0 and not config.input and not config.output:
        max_batch = default_max_batch_size  # auto-complete will pick it
    return EngineOptions(
        concurrency=max(concurrency, 1),
        intra_op_threads=_thread_count(config, "intra_op_thread_count"),
        inter_op_threads=_thread_count(config, "inter_op_thread_count"),
        providers=providers,
        provider_options=_provider_options(config, providers),
        device_id=_device_id(config),
        max_batch_size=max(0, max_batch),
    )


def _thread_count(config: model_config_pb2.ModelConfig, key: str) -> int:
    if key not in config.parameters:
        return 0
    value = config.parameters[key].string_value.strip()
    if not _THREAD_COUNT.fullmatch(value):
        raise RepositoryError(
            f"model '{config.name or '<unnamed>'}': parameter '{key}' must be a "
            f"non-negative integer, not {_quote(value)}"
        )
    return int(value)


def _providers(config: model_config_pb2.ModelConfig) -> tuple[str, ...]:
    name = config.name or "<unnamed>"
    kinds = {group.kind for group in config.instance_group}
    gpu_kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    cpu_kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    # As in Triton, GPU accelerators do not apply to CPU-only instances.
    cpu_only = bool(kinds) and kinds == {cpu_kind}
    accelerators = config.optimization.execution_accelerators
    gpu: set[str] = set()
    for accelerator in accelerators.gpu_execution_accelerator:
        provider = GPU_ACCELERATORS.get(accelerator.name)
        if provider is None:
            raise RepositoryError(
                f"model '{name}': unknown GPU execution accelerator '{accelerator.name}'"
            )
        gpu.add(provider)
    providers: list[str] = []
    if not cpu_only:
        # TensorRT first, then CUDA for the nodes TensorRT cannot take; any
        # GPU accelerator or a KIND_GPU group means CUDA.
        if TENSORRT_PROVIDER in gpu:
            providers.append(TENSORRT_PROVIDER)
        if gpu or gpu_kind in kinds:
            providers.append(CUDA_PROVIDER)
    for accelerator in accelerators.cpu_execution_accelerator:
        provider = CPU_ACCELERATORS.get(accelerator.name)
        if provider is None:
            raise RepositoryError(
                f"model '{name}': unknown CPU execution accelerator '{accelerator.name}'"
            )
        providers.append(provider)
    providers.append(CPU_PROVIDER)
    return tuple(dict.fromkeys(providers))  # drop repeats, keep order


# --- accelerator parameters ---------------------------------------------------------------

_TRUE = ("true", "1", "on", "yes")
_FALSE = ("false", "0", "off", "no")
_PRECISIONS = ("FP32", "FP16", "INT8")
_INTEGER = re.compile(r"[0-9]{1,19}", re.ASCII)


def _bool_param(where: str, key: str, value: str) -> str:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return "True"
    if lowered in _FALSE:
        return "False"
    raise RepositoryError(f"{where}: parameter '{key}' must be true or false, not {_quote(value)}")


def _int_param(where: str, key: str, value: str, low: int = 0) -> str:
    text = value.strip()
    if not _INTEGER.fullmatch(text) or int(text) < low:
        raise RepositoryError(
            f"{where}: parameter '{key}' must be an integer >= {low}, not {_quote(value)}"
        )
    return str(int(text))


def _choice_param(where: str, key: str, value: str, choices: Sequence[str]) -> str:
    for choice in choices:
        if value.strip().upper() == choice.upper():
            return choice
    listed = ", ".join(choices)
    raise RepositoryError(
        f"{where}: parameter '{key}' must be one of {listed}, not {_quote(value)}"
    )


def _tensorrt_parameters(where: str, parameters: dict[str, str]) -> dict[str, str]:
    """Triton's onnxruntime-backend TensorRT accelerator parameters -> the
    onnxruntime TensorRT execution provider's options."""
    out: dict[str, str] = {}
    for key, value in sorted(parameters.items()):
        if key == "precision_mode":
            precision = _choice_param(where, key, value, _PRECISIONS)
            # INT8 also enables FP16 for the layers INT8 cannot take. It needs
            # a QDQ (explicitly quantized) model or a calibration table in the
            # engine cache directory.
            out["trt_fp16_enable"] = "True" if precision != "FP32" else "False"
            out["trt_int8_enable"] = "True" if precision == "INT8" else "False"
        elif key == "max_workspace_size_bytes":
            out["trt_max_workspace_size"] = _int_param(where, key, value, 1)
        elif key in ("trt_max_partition_iterations", "trt_min_subgraph_size"):
            out[key] = _int_param(where, key, value, 1)
        elif key in ("trt_engine_cache_enable", "trt_timing_cache_enable"):
            out[key] = _bool_param(where, key, value)
        elif key == "trt_engine_cache_path":
            if not value.strip() or "\0" in value:
                raise RepositoryError(f"{where}: parameter '{key}' must name a directory")
            out[key] = value.strip()
        else:
            raise RepositoryError(
                f"{where}: unknown parameter {_quote(key)} (known: precision_mode, "
                "max_workspace_size_bytes, trt_max_partition_iterations, trt_min_subgraph_size, "
                "trt_engine_cache_enable, trt_engine_cache_path, trt_timing_cache_enable)"
            )
    if out.get("trt_engine_cache_enable") == "True" and "trt_engine_cache_path" not in out:
        # onnxruntime would otherwise write engines into the working directory.
        raise RepositoryError(
            f"{where}: trt_engine_cache_enable needs trt_engine_cache_path (a writable directory)"
        )
    return out


def _cuda_parameters(where: str, parameters: dict[str, str]) -> dict[str, str]:
    """onnxruntime CUDA execution provider options, passed through checked."""
    out: dict[str, str] = {}
    for key, value in sorted(parameters.items()):
        if key == "gpu_mem_limit":
            out[key] = _int_param(where, key, value, 1)
        elif key == "cudnn_conv_algo_search":
            out[key] = _choice_param(where, key, value, ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"))
        elif key == "arena_extend_strategy":
            out[key] = _choice_param(where, key, value, ("kNextPowerOfTwo", "kSameAsRequested"))
        elif key == "cudnn_conv_use_max_workspace":
            out[key] = "1" if _bool_param(where, key, value) == "True" else "0"
        else:
            raise RepositoryError(
                f"{where}: unknown parameter {_quote(key)} (known: gpu_mem_limit, "
                "cudnn_conv_algo_search, arena_extend_strategy, cudnn_conv_use_max_workspace)"
            )
    return out


def _provider_options(
    config: model_config_pb2.ModelConfig, providers: Sequence[str]
) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """Per-provider options from the accelerators' ``parameters`` maps, for
    the providers that will actually be asked for."""
    name = config.name or "<unnamed>"
    options: dict[str, dict[str, str]] = {}
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        where = f"model '{name}', GPU execution accelerator '{accelerator.name}'"
        parameters = dict(accelerator.parameters)
        if accelerator.name == "tensorrt":
            parsed = _tensorrt_parameters(where, parameters)
        elif accelerator.name == "cuda":
            parsed = _cuda_parameters(where, parameters)
        else:  # unknown names were refused by _providers
            continue
        provider = GPU_ACCELERATORS[accelerator.name]
        if provider in providers:
            options.setdefault(provider, {}).update(parsed)
    for accelerator in config.optimization.execution_accelerators.cpu_execution_accelerator:
        if accelerator.parameters:
            raise RepositoryError(
                f"model '{name}', CPU execution accelerator '{accelerator.name}': "
                "parameters are not supported"
            )
    return tuple(
        (provider, tuple(sorted(values.items())))
        for provider, values in sorted(options.items())
        if values
    )


def _device_id(config: model_config_pb2.ModelConfig) -> int:
    """The GPU named by ``instance_group.gpus`` (0 when none is named). One
    engine runs on one GPU, so groups naming several GPUs are refused."""
    name = config.name or "<unnamed>"
    gpus: set[int] = set()
    for group in config.instance_group:
        for gpu in group.gpus:
            if gpu < 0:
                raise RepositoryError(f"model '{name}': instance_group gpus must not be negative")
            gpus.add(gpu)
    if len(gpus) > 1:
        listed = ", ".join(str(g) for g in sorted(gpus))
        raise RepositoryError(
            f"model '{name}': instance groups on several GPUs ({listed}) are not supported; "
            "name one GPU in instance_group gpus (run one server per GPU)"
        )
    return gpus.pop() if gpus else 0
