"""TensorRTEngine on a machine without a GPU.

The first group runs the real code with no fakes: plan-file handling and
sidecar checks happen before TensorRT is imported, and a missing TensorRT is
itself a tested outcome.

The second group injects ``tests/engines/fake_trt.py`` as the ``tensorrt``
and ``pycuda.driver`` modules through ``sys.modules``. That is done ONLY
because TensorRT cannot run here; the fakes are minimal (the calls inferd
makes, plus TensorRT's profile-per-context rule asserted) and prove nothing
about TensorRT itself: ``tests/gpu/test_tensorrt_gpu.py`` does that on a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from fake_trt import make_plan, make_pycuda, make_tensorrt

from inferd.engines import EngineError, EngineInputError, EngineOptions, load_engine
from inferd.engines.tensorrt import TensorRTEngine
from inferd.engines.tensorrt.plan import PlanInfo, sha256, sidecar_path, write_sidecar
from inferd.engines.tensorrt.profiles import BatchProfile

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _plan(tmp_path: Path, data: bytes = b"not really a plan") -> Path:
    path = tmp_path / "models" / "m" / "1" / "model.plan"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _info(data: bytes, **changes: object) -> PlanInfo:
    values: dict[str, object] = {
        "tensorrt_version": "10.3.0",
        "compute_capability": (8, 9),
        "device_name": "Fake L4",
        "precision": "fp16",
        "plan_sha256": sha256(data),
        "plan_bytes": len(data),
        "batch_profiles": (BatchProfile(1, 8, 8),),
    }
    values.update(changes)
    return PlanInfo(**values)  # type: ignore[arg-type]


def _no_paths(message: str, tmp_path: Path) -> None:
    assert str(tmp_path) not in message
    assert "/srv/" not in message and "/opt/" not in message
    assert "model.plan" not in message or "model.plan.json" in message


# --------------------------------------------------------------------------- no fakes


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("missing", "does not exist or is not a file"),
        ("directory", "does not exist or is not a file"),
        ("empty", "the plan file is empty"),
    ],
)
def test_unusable_plan_file(tmp_path: Path, setup: str, reason: str) -> None:
    path = tmp_path / "m" / "1" / "model.plan"
    path.parent.mkdir(parents=True)
    if setup == "directory":
        path.mkdir()
    elif setup == "empty":
        path.write_bytes(b"")
    with pytest.raises(EngineError, match=reason) as info:
        TensorRTEngine(path, EngineOptions())
    assert str(info.value).startswith("TensorRT plan could not be loaded")
    _no_paths(str(info.value), tmp_path)


@pytest.mark.parametrize(
    ("sidecar", "reason"),
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "does not hold a JSON object"),
        ('{"format": 99}', "format 99, newer than this server"),
        ('{"format": 1, "tensorrt_version": "10.3.0"}', "'compute_capability'"),
        (b"\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_corrupt_sidecar_is_refused_before_tensorrt(
    tmp_path: Path, sidecar: str | bytes, reason: str
) -> None:
    path = _plan(tmp_path)
    target = sidecar_path(path)
    if isinstance(sidecar, bytes):
        target.write_bytes(sidecar)
    else:
        target.write_text(sidecar)
    with pytest.raises(EngineError, match=reason) as info:
        TensorRTEngine(path, EngineOptions())
    message = str(info.value)
    assert "model.plan.json" in message and "inferd build-engine" in message
    _no_paths(message, tmp_path)


def test_plan_that_does_not_match_its_sidecar_is_refused(tmp_path: Path) -> None:
    path = _plan(tmp_path, b"the plan the sidecar describes")
    write_sidecar(path, _info(b"the plan the sidecar describes"))
    path.write_bytes(b"a different plan, copied over it")
    with pytest.raises(EngineError, match="does not match its sidecar") as info:
        TensorRTEngine(path, EngineOptions())
    _no_paths(str(info.value), tmp_path)


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here")
def test_without_tensorrt_the_plan_fails_to_load_saying_so(tmp_path: Path) -> None:
    path = _plan(tmp_path)
    with pytest.raises(EngineError, match="TensorRT is not installed") as info:
        load_engine("tensorrt_plan", path, EngineOptions())
    assert "inferd[gpu]" in str(info.value)
    _no_paths(str(info.value), tmp_path)


def test_registry_routes_plans_to_tensorrt(tmp_path: Path) -> None:
    # Both Triton spellings reach TensorRTEngine (its file check answers).
    for platform in ("tensorrt_plan", "tensorrt"):
        with pytest.raises(EngineError, match="TensorRT plan could not be loaded"):
            load_engine(platform, tmp_path / "absent.plan")


# --------------------------------------------------------------------------- fakes


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ModuleType]]:
    """Fake ``tensorrt`` and ``pycuda.driver`` in sys.modules (see the module docstring)."""
    trt = make_tensorrt()
    package, driver = make_pycuda()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    yield trt, driver
    state = driver.state  # type: ignore[attr-defined]
    assert state.pushed == 0, "every CUDA context push is popped"


BATCHED = dict(
    inputs=[("x", "FLOAT", [-1, 4])],
    outputs=[("y", "FLOAT", [-1, 4])],
)


def _profiles(
    ranges: list[tuple[int, int, int]], contexts: int = 1
) -> list[dict[str, list[list[int]]]]:
    one = [{"x": [[lo, 4], [opt, 4], [hi, 4]]} for lo, opt, hi in ranges]
    return one * contexts


def test_deserialize_failure_reports_tensorrt_reason_scrubbed(
    tmp_path: Path, fakes: tuple[ModuleType, ModuleType], caplog: pytest.LogCaptureFixture
) -> None:
    path = _plan(tmp_path, b"garbage that is not a plan")
    with pytest.raises(EngineError, match="magic tag does not match") as info:
        TensorRTEngine(path, EngineOptions())
    message = str(info.value)
    _no_paths(message, tmp_path)
    assert "runtime.cpp" not in message
    assert fakes[1].state.retained == 0  # type: ignore[attr-defined]


def test_sidecar_version_mismatch_is_refused_before_deserializing(
    tmp_path: Path, fakes: tuple[ModuleType, ModuleType]
) -> None:
    trt, driver = fakes
    data = make_plan(**BATCHED, profiles=_profiles([(1, 8, 8)]))
    path = _plan(tmp_path, data)
    write_sidecar(path, _info(data, tensorrt_version="10.0.1"))
    with pytest.raises(EngineError, match=r"built with TensorRT 10\.0\.1 but this server runs "
                       r"TensorRT 10\.3\.0; rebuild"):  # fmt: skip
        TensorRTEngine(path, EngineOptions())
    assert trt.Runtime.deserialized == 0  # type: ignore[attr-defined]
    assert driver.state.retained == 0  # type: ignore[attr-defined]


def test_sidecar_gpu_mismatch_is_refused(
    tmp_path: Path, fakes: tuple[ModuleType, ModuleType]
) -> None:
    data = make_plan(**BATCHED, profiles=_profiles([(1, 8, 8)]))
    path = _plan(tmp_path, data)
    write_sidecar(path, _info(data, compute_capability=(9, 0), device_name="NVIDIA H100"))
    with pytest.raises(EngineError) as info:
        TensorRTEngine(path, EngineOptions())
    assert str(info.value) == (
        "TensorRT plan could not be loaded: it was built for a GPU of compute capability 9.0 "
        "(NVIDIA H100) but GPU 0 (Fake L4) has compute capability 8.9; rebuild it with "
        "'inferd build-engine' on this machine"
    )


def test_old_tensorrt_and_missing_gpu_are_clear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _plan(tmp_path, make_plan(**BATCHED, profiles=_profiles([(1, 8, 8)])))
    package, driver = make_pycuda(gpus=0)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt("8.6.1"))
    with pytest.raises(EngineError, match=r"TensorRT 8\.6\.1 is too old: inferd needs TensorRT 10"):
        TensorRTEngine(path, EngineOptions())
    monkeypatch.setitem(sys.modules, "tensorrt", make_tensorrt())
    with pytest.raises(EngineError, match="no CUDA GPU is visible"):
        TensorRTEngine(path, EngineOptions())
    package, driver = make_pycuda(gpus=1)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    with pytest.raises(EngineError, match=r"GPU 3 is not visible to this server \(it sees 1\)"):
        TensorRTEngine(path, EngineOptions(device_id=3))


def test_signature_and_batch_sizes_come_from_the_profiles(
    tmp_path: Path, fakes: tuple[ModuleType, ModuleType]
) -> None:
    data = make_plan(**BATCHED, profiles=_profiles([(1, 2, 2), (3, 8, 8), (16, 16, 16)]))
    path = _plan(tmp_path, data)
    write_sidecar(path, _info(data))
    with TensorRTEngine(path, EngineOptions()) as engine:
        sig = engine.signature
        assert [(t.name, t.dtype, t.shape) for t in sig.inputs] == [("x", np.float32, (-1, 4))]
        assert [(t.name, t.shape) for t in sig.outputs] == [("y", (-1, 4))]
        assert sig.batch_sizes == (1, 2, 3, 4, 5, 6, 7, 8, 16)
        assert engine.max_concurrency == 1
        for batch in (1, 5, 16):
            x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4)
            np.testing.assert_array_equal(engine.infer({"x": x})["y"], x * 2)
        with pytest.raises(EngineError, match=r"batch size 12 is outside the plan's optimization "
                           r"profiles \(1\.\.2, 3\.\.8, 16\.\.16\)"):  # fmt: skip
            engine.infer({"x": np.zeros((12, 4), np.float32)})


def test_contexts_are_capped_by_profile_copies_and_never_share_a_profile(
    tmp_path: Path, fakes: tuple[ModuleType, ModuleType], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="inferd.engines.tensorrt")
    data = make_plan(**BATCHED, profiles=_profiles([(1, 4, 4), (5, 16, 16)], contexts=2))
    path = _plan(tmp_path, data)
    engine = TensorRTEngine(path, EngineOptions(concurrency=3))
    assert engine.max_concurrency == 2
    assert "--contexts 3" in caplog.text
    assert engine.layout.group_size == 2 and engine.layout.replicas == 2
    assert engine.signature.batch_sizes == tuple(range(1, 17))
    start = threading.Barrier(4)

    def call(i: int) -> bool:
        start.wait()
        ok = True
        for j in range(25):
            batch = 1 + (i * 7 + j) % 16
            x = np.full((batch, 4), i + j, np.float32)
            ok &= bool(np.array_equal(engine.infer({"x": x})["y"], x * 2))
        return ok

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(call, range(4)))
    assert sum(engine.slot_calls) == 100
    assert all(calls > 0 for calls in engine.slot_calls), "both contexts ran batches"
    # Each context switched only among its own copy of the profiles.
    contexts = engine._engine.contexts
    assert [c.profiles_used for c in contexts] == [{0, 1}, {2, 3}]
    driver = fakes[1]
    assert driver.state.live  # type: ignore[attr-defined]
    engine.close()
    engine.close()
    assert not driver.state.live, "close frees every device buffer"  # type: ignore[attr-defined]
    assert driver.state.retained == 0  # type: ignore[attr-defined]
    with pytest.raises(EngineError, match="unloaded"):
        engine.infer({"x": np.zeros((1, 4), np.float32)})


def test_static_plan_runs_one_size_on_many_contexts(
    tmp_path: Path, fakes: tuple[ModuleType, ModuleType]
) -> None:
    data = make_plan(inputs=[("x", "FLOAT", [8, 4])], outputs=[("y", "FLOAT", [8, 4])])
    path = _plan(tmp_path, data)
    with TensorRTEngine(path, EngineOptions(concurrency=3)) as engine:
        assert engine.max_concurrency == 3  # no profiles to share
        assert engine.signature.batch_sizes == (8,)
        x = np.ones((8, 4), np.float32)
        np.testing.assert_array_equal(engine.infer({"x": x})["y"], x * 2)
        with pytest.raises(EngineError, match=r"shape \[4, 4\], expected \[8, 4\]"):
            engine.infer({"x": np.ones((4, 4), np.float32)})


def test_input_errors(tmp_path: Path, fakes: tuple[ModuleType, ModuleType]) -> None:
    data = make_plan(
        inputs=[("x", "FLOAT", [-1, -1])],
        outputs=[("y", "FLOAT", [-1, -1])],
        profiles=[{"x": [[1, 2], [4, 8], [8, 16]]}],
    )
    with TensorRTEngine(_plan(tmp_path, data), EngineOptions()) as engine:
        with pytest.raises(EngineError, match="unknown input 'z'"):
            engine.infer({"x": np.zeros((1, 4), np.float32), "z": np.zeros(1)})
        with pytest.raises(EngineError, match="missing input 'x'"):
            engine.infer({})
        with pytest.raises(EngineError, match="dtype float64, expected float32"):
            engine.infer({"x": np.zeros((1, 4))})
        with pytest.raises(EngineError, match="unknown output 'nope'"):
            engine.infer({"x": np.zeros((1, 4), np.float32)}, ["nope"])
        # Per-request check: a dimension outside every profile is the caller's fault.
        with pytest.raises(EngineInputError, match=r"dimension 1 is 32; this TensorRT plan runs "
                           r"2\.\.16"):  # fmt: skip
            engine.check_request({"x": np.zeros((1, 32), np.float32)})
        engine.check_request({"x": np.zeros((3, 16), np.float32)})
        # Byte-swapped input of the right type is accepted.
        x = np.arange(8, dtype=">f4").reshape(2, 4)
        np.testing.assert_array_equal(engine.infer({"x": x})["y"], x.astype(np.float32) * 2)
        # Buffers grow when a call needs more than the profile maxima at load.
        assert engine.infer({"x": np.ones((8, 16), np.float32)})["y"].shape == (8, 16)


def test_tensor_types_the_protocol_cannot_carry_are_refused(
    tmp_path: Path, fakes: tuple[ModuleType, ModuleType]
) -> None:
    data = make_plan(inputs=[("x", "FP8", [1, 4])], outputs=[("y", "FP8", [1, 4])])
    with pytest.raises(EngineError, match="tensor 'x' has type FP8"):
        TensorRTEngine(_plan(tmp_path, data), EngineOptions())
    assert fakes[1].state.retained == 0  # type: ignore[attr-defined]


def test_sidecar_written_by_build_engine_round_trips(tmp_path: Path) -> None:
    data = b"plan bytes"
    info = _info(data, batch_profiles=(BatchProfile(1, 2, 2), BatchProfile(3, 8, 8)), contexts=2)
    path = _plan(tmp_path, data)
    written = write_sidecar(path, info)
    assert written.name == "model.plan.json"
    assert PlanInfo.from_json(written.read_text()) == info
    assert json.loads(written.read_text())["builder"] == "inferd build-engine"
