"""GPU settings read from config.pbtxt: accelerator parameters (precision
mode and friends), the GPU to run on, the batch hint; and a tensorrt_plan
model found, configured and failing to load cleanly on a machine without
TensorRT."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from google.protobuf import text_format

from inferd.engines import EngineOptions
from inferd.protos import model_config_pb2
from inferd.server.models import ModelManager
from inferd.server.repository import (
    TENSORRT_PLATFORM,
    ModelRepository,
    RepositoryError,
    engine_options,
)

TRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def config_of(text: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse('name: "m" ' + text, config)
    return config


def accelerator(name: str, **parameters: str) -> str:
    params = " ".join(f'parameters {{ key: "{k}" value: "{v}" }}' for k, v in parameters.items())
    return (
        "optimization { execution_accelerators { gpu_execution_accelerator "
        f'{{ name: "{name}" {params} }} }} }}'
    )


def test_tensorrt_accelerator_parameters() -> None:
    text = "instance_group { kind: KIND_GPU gpus: [1] count: 2 } " + accelerator(
        "tensorrt",
        precision_mode="fp16",
        max_workspace_size_bytes="1073741824",
        trt_min_subgraph_size="3",
        trt_engine_cache_enable="true",
        trt_engine_cache_path="/var/cache/inferd-trt",
    )
    options = engine_options(config_of(text))
    assert options.providers == (TRT, CUDA, CPU)
    assert options.concurrency == 2 and options.device_id == 1
    assert options.options_for(TRT) == {
        "trt_fp16_enable": "True",
        "trt_int8_enable": "False",
        "trt_max_workspace_size": "1073741824",
        "trt_min_subgraph_size": "3",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": "/var/cache/inferd-trt",
    }
    assert options.options_for(CUDA) == {}


@pytest.mark.parametrize(
    ("precision", "fp16", "int8"),
    [("FP32", "False", "False"), ("FP16", "True", "False"), ("int8", "True", "True")],
)
def test_precision_mode(precision: str, fp16: str, int8: str) -> None:
    options = engine_options(config_of(accelerator("tensorrt", precision_mode=precision)))
    assert options.options_for(TRT) == {"trt_fp16_enable": fp16, "trt_int8_enable": int8}


def test_cuda_accelerator_parameters() -> None:
    options = engine_options(
        config_of(
            accelerator(
                "cuda",
                gpu_mem_limit="2147483648",
                cudnn_conv_algo_search="heuristic",
                cudnn_conv_use_max_workspace="false",
            )
        )
    )
    assert options.providers == (CUDA, CPU)
    assert options.options_for(CUDA) == {
        "gpu_mem_limit": "2147483648",
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "0",
    }


def test_parameters_of_providers_not_used_are_dropped() -> None:
    # KIND_CPU instances take no GPU accelerator (Triton), nor its parameters.
    text = "instance_group { kind: KIND_CPU } " + accelerator("tensorrt", precision_mode="FP16")
    assert engine_options(config_of(text)) == EngineOptions(providers=(CPU,))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            accelerator("tensorrt", precision_mode="FP8"),
            "'precision_mode' must be one of FP32, FP16, INT8",
        ),
        (
            accelerator("tensorrt", max_workspace_size_bytes="1GB"),
            "'max_workspace_size_bytes' must be an integer >= 1",
        ),
        (accelerator("tensorrt", trt_engine_cache_enable="maybe"), "must be true or false"),
        (accelerator("tensorrt", trt_engine_cache_enable="1"), "needs trt_engine_cache_path"),
        (accelerator("tensorrt", fp16="1"), r"unknown parameter 'fp16' \(known: precision_mode"),
        (accelerator("cuda", gpu_mem_limit="-5"), "'gpu_mem_limit' must be an integer >= 1"),
        (accelerator("cuda", arena="x"), "unknown parameter 'arena'"),
        (
            'optimization { execution_accelerators { cpu_execution_accelerator { name: "openvino" '
            'parameters { key: "device_type" value: "CPU_FP32" } } } }',
            "parameters are not supported",
        ),
        (
            "instance_group [ { kind: KIND_GPU gpus: [0] }, { kind: KIND_GPU gpus: [1] } ]",
            r"several GPUs \(0, 1\)",
        ),
        ("instance_group { kind: KIND_GPU gpus: [-1] }", "gpus must not be negative"),
    ],
)
def test_bad_gpu_settings_name_the_model_and_key(text: str, message: str) -> None:
    with pytest.raises(RepositoryError, match=message) as info:
        engine_options(config_of(text))
    assert "model 'm'" in str(info.value)


def test_batch_hint_for_engines() -> None:
    assert engine_options(config_of("max_batch_size: 16")).max_batch_size == 16
    # No config tensors: auto-complete will choose the default.
    assert engine_options(config_of(""), default_max_batch_size=64).max_batch_size == 64
    # Configured tensors without batching: no batch dimension at all.
    text = 'input { name: "x" data_type: TYPE_FP32 dims: [3] }'
    assert engine_options(config_of(text), default_max_batch_size=64).max_batch_size == 0


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt installed")
async def test_plan_model_without_tensorrt_is_unavailable_with_reason(tmp_path: Path) -> None:
    """A model.plan is found as tensorrt_plan, its GPU config parses, and the
    load fails with the engine's reason (no paths) while the server keeps
    the other models."""
    model = tmp_path / "resnet_trt"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.plan").write_bytes(b"plan bytes")
    (model / "config.pbtxt").write_text(
        "max_batch_size: 8 instance_group { kind: KIND_GPU count: 2 gpus: [0] }"
    )
    source = ModelRepository(tmp_path).source("resnet_trt")
    assert source.platform == TENSORRT_PLATFORM
    manager = ModelManager(ModelRepository(tmp_path))
    await manager.load_all()
    ((name, version, state, reason),) = manager.index()
    assert (name, version, state) == ("resnet_trt", "1", "UNAVAILABLE")
    assert "TensorRT is not installed" in reason
    assert str(tmp_path) not in reason
