"""OnnxEngine's GPU provider handling, on a CPU-only onnxruntime.

What runs for real here: provider options and shape profiles built from the
config and the model, fallback to CPU with logged reasons, and the IO-binding
call path (bound to the CPU device: the same onnxruntime calls as on CUDA,
only the device name differs). What cannot run here: a session really on
CUDA or TensorRT (``tests/gpu`` covers that where onnxruntime-gpu and a GPU
are present).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from inferd.engines.base import BYTES_DTYPE, EngineOptions, Signature, TensorSpec
from inferd.engines.onnx import (
    OnnxEngine,
    _run_bound,
    binding_target,
    provider_specs,
    trt_profile_options,
)
from inferd.server.demo_models import dense_reference_model

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
GPU_AVAILABLE = CUDA in ort.get_available_providers()


@pytest.fixture
def dense(tmp_path: Path) -> Path:
    path = tmp_path / "dense" / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(dense_reference_model((16, 32, 8)), path)
    return path


def test_provider_specs_carry_device_and_config_options(dense: Path) -> None:
    options = EngineOptions(
        providers=(TRT, CUDA, CPU),
        provider_options=(
            (CUDA, (("gpu_mem_limit", "1073741824"),)),
            (TRT, (("trt_fp16_enable", "True"),)),
        ),
        device_id=1,
        max_batch_size=32,
    )
    specs = provider_specs([TRT, CUDA, CPU], options, dense)
    assert specs == [
        (
            TRT,
            {
                "device_id": "1",
                "trt_fp16_enable": "True",
                # One profile for the scheduler's batch sizes, from the graph's inputs.
                "trt_profile_min_shapes": "x:1x16",
                "trt_profile_opt_shapes": "x:32x16",
                "trt_profile_max_shapes": "x:32x16",
            },
        ),
        (CUDA, {"device_id": "1", "gpu_mem_limit": "1073741824"}),
        CPU,
    ]


def test_provider_specs_keep_explicit_profiles_and_skip_unknown_batch(dense: Path) -> None:
    explicit = EngineOptions(
        provider_options=((TRT, (("trt_profile_min_shapes", "x:4x16"),)),), max_batch_size=8
    )
    assert provider_specs([TRT], explicit, dense) == [
        (TRT, {"device_id": "0", "trt_profile_min_shapes": "x:4x16"})
    ]
    assert provider_specs([TRT, CPU], EngineOptions(), dense) == [(TRT, {"device_id": "0"}), CPU]
    assert provider_specs([CPU], EngineOptions(max_batch_size=8), dense) == [CPU]
    # An unreadable model leaves the profile to the provider (the session reports the file).
    assert provider_specs([TRT], EngineOptions(max_batch_size=8), dense.parent / "nope.onnx") == [
        (TRT, {"device_id": "0"})
    ]


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ([], {}),
        ([("x", (4, 16))], {}),  # nothing dynamic
        (
            [("a", (-1, 3, 8)), ("b", (-1,)), ("table", (5, 5))],
            {
                "trt_profile_min_shapes": "a:1x3x8,b:1",
                "trt_profile_opt_shapes": "a:64x3x8,b:64",
                "trt_profile_max_shapes": "a:64x3x8,b:64",
            },
        ),
        ([("tokens", (-1, -1))], {}),  # a dynamic sequence length: unknown range
        ([("x", (1, -1))], {}),  # dynamic but not a batch dimension
    ],
)
def test_trt_profile_options(
    inputs: list[tuple[str, tuple[int, ...]]], expected: dict[str, str]
) -> None:
    assert trt_profile_options(inputs, 64) == expected
    assert trt_profile_options(inputs, 0) == {}


def _sig(*dtypes: np.dtype) -> Signature:  # type: ignore[type-arg]
    return Signature(tuple(TensorSpec(f"t{i}", d, (-1,)) for i, d in enumerate(dtypes)), ())


def test_binding_target_only_on_gpu_providers() -> None:
    f32 = np.dtype(np.float32)
    assert binding_target([CPU], _sig(f32), 0) is None
    assert binding_target([CUDA, CPU], _sig(f32), 2) == ("cuda", 2)
    assert binding_target([TRT, CUDA, CPU], _sig(f32), 0) == ("cuda", 0)
    # String tensors cannot live on the GPU: plain run().
    assert binding_target([CUDA, CPU], _sig(f32, BYTES_DTYPE), 0) is None


def test_io_binding_path_matches_run(dense: Path) -> None:
    """The bound call path through real onnxruntime, bound to the CPU device."""
    session = ort.InferenceSession(str(dense), providers=[CPU])
    x = np.random.default_rng(0).uniform(size=(5, 16)).astype(np.float32)
    expected = session.run(["y"], {"x": x})[0]
    (got,) = _run_bound(session, ["y"], {"x": x}, ("cpu", 0), ort.RunOptions())
    np.testing.assert_array_equal(got, expected)


def test_engine_routes_calls_through_binding_when_bound(dense: Path) -> None:
    engine = OnnxEngine(dense, EngineOptions())
    assert not engine.io_binding
    x = np.ones((3, 16), np.float32)
    expected = engine.infer({"x": x})["y"]
    engine._binding = ("cpu", 0)  # what a CUDA session sets, with the CPU device
    assert engine.io_binding
    np.testing.assert_array_equal(engine.infer({"x": x})["y"], expected)
    assert engine.infer({"x": x}, []) == {}


@pytest.mark.skipif(GPU_AVAILABLE, reason="onnxruntime has the CUDA provider here")
def test_gpu_accelerators_fall_back_to_cpu_with_reasons(
    dense: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="inferd.engines.onnx")
    options = EngineOptions(providers=(TRT, CUDA, CPU), max_batch_size=8)
    engine = OnnxEngine(dense, options)
    assert engine.providers == [CPU]
    assert not engine.io_binding
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert TRT in messages[0] and CUDA in messages[1]
    assert all("not available in this onnxruntime build" in m for m in messages)


@pytest.mark.skipif(GPU_AVAILABLE, reason="onnxruntime has the CUDA provider here")
def test_listed_provider_that_cannot_start_falls_back_with_reason(
    dense: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """onnxruntime-gpu on a machine without a usable GPU lists CUDA but cannot
    start it; simulated by listing it in a CPU build (onnxruntime then warns
    and runs on CPU, as it does when CUDA fails to initialise)."""
    caplog.set_level(logging.WARNING, logger="inferd.engines.onnx")
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        engine = OnnxEngine(dense, EngineOptions(providers=(CUDA, CPU), device_id=0))
    assert engine.providers == [CPU]
    assert not engine.io_binding
    (record,) = caplog.records
    assert "CUDAExecutionProvider could not be initialised; running on CPUExecutionProvider" in (
        record.getMessage()
    )
    x = np.ones((2, 16), np.float32)
    assert engine.infer({"x": x})["y"].shape == (2, 8)
