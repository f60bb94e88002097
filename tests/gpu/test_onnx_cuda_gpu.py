"""onnxruntime on CUDA and TensorRT execution providers, on a GPU.

Skipped (with the reason) without onnxruntime-gpu and a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from gpu_env import requires_onnxruntime_cuda

from inferd.engines import EngineOptions
from inferd.engines.onnx import OnnxEngine
from inferd.server.demo_models import dense_reference_model

pytestmark = [pytest.mark.gpu, requires_onnxruntime_cuda()]

CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ort") / "model.onnx"
    onnx.save(dense_reference_model((256, 512, 64)), path)
    return path


def _compare(engine: OnnxEngine, model: Path, rtol: float) -> None:
    reference = ort.InferenceSession(str(model), providers=[CPU])
    for rows in (1, 5, 32):
        x = np.random.default_rng(rows).uniform(size=(rows, 256)).astype(np.float32)
        want = reference.run(["y"], {"x": x})[0]
        got = engine.infer({"x": x})["y"]
        assert np.max(np.abs(got - want)) <= rtol * np.max(np.abs(want))


def test_cuda_provider_runs_with_io_binding(model: Path) -> None:
    engine = OnnxEngine(model, EngineOptions(providers=(CUDA, CPU), max_batch_size=32))
    assert engine.providers[0] == CUDA
    assert engine.io_binding
    _compare(engine, model, 1e-3)  # cuBLAS may use TF32 on Ampere and later
    engine.close()


def test_tensorrt_provider_with_the_scheduler_profile(model: Path) -> None:
    if TRT not in ort.get_available_providers():
        pytest.skip("this onnxruntime build has no TensorrtExecutionProvider")
    options = EngineOptions(
        providers=(TRT, CUDA, CPU),
        provider_options=((TRT, (("trt_fp16_enable", "False"),)),),
        max_batch_size=32,
    )
    engine = OnnxEngine(model, options)
    if engine.providers[0] != TRT:
        pytest.skip(f"the TensorRT provider did not start here (running on {engine.providers})")
    assert engine.io_binding
    _compare(engine, model, 1e-3)
    engine.close()
