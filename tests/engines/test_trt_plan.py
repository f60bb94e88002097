"""Plan sidecar, compatibility checks and layout reading (no TensorRT needed).

``read_layout`` is given the minimal fake engine from ``fake_trt`` (there is
no TensorRT here to deserialize a real one; see that module's docstring).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fake_trt import FakeEngine, make_tensorrt

from inferd.engines import EngineError
from inferd.engines.tensorrt.plan import (
    PlanInfo,
    PlanLayout,
    TensorLayout,
    check_compatibility,
    check_digest,
    parse_version,
    read_layout,
    read_sidecar,
    sha256,
    sidecar_path,
)
from inferd.engines.tensorrt.profiles import BatchProfile

GOOD = {
    "format": 1,
    "tensorrt_version": "10.3.0",
    "compute_capability": [8, 9],
    "device_name": "NVIDIA L4",
    "precision": "fp16",
    "plan_sha256": "a" * 64,
    "plan_bytes": 10,
    "batch_profiles": [[1, 8, 8], [9, 32, 32]],
    "contexts": 2,
}


def test_sidecar_parses() -> None:
    info = PlanInfo.from_json(json.dumps(GOOD))
    assert info.compute_capability == (8, 9)
    assert info.batch_profiles == (BatchProfile(1, 8, 8), BatchProfile(9, 32, 32))
    assert info.contexts == 2 and info.onnx_sha256 == ""
    assert PlanInfo.from_json(info.to_json()) == info


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": True}, "'format' must be a positive integer"),
        ({"tensorrt_version": ""}, "'tensorrt_version' must be a non-empty string"),
        ({"tensorrt_version": "ten"}, "not a version number"),
        ({"compute_capability": "8.9"}, r"must be \[major, minor\]"),
        ({"compute_capability": [8, -1]}, r"must be \[major, minor\]"),
        ({"precision": "fp8"}, "'precision' must be one of fp32, fp16, int8"),
        ({"plan_sha256": "xyz"}, "not a SHA-256"),
        ({"plan_bytes": 0}, "'plan_bytes' must be a positive integer"),
        ({"batch_profiles": [[1, 8]]}, r"list of \[min, opt, max\]"),
        ({"batch_profiles": [[8, 1, 8]]}, "1 <= min <= opt <= max"),
        ({"contexts": 0}, "'contexts' must be a positive integer"),
    ],
)
def test_sidecar_field_errors(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PlanInfo.from_json(json.dumps({**GOOD, **change}))


def test_read_sidecar(tmp_path: Path) -> None:
    plan = tmp_path / "model.plan"
    assert sidecar_path(plan).name == "model.plan.json"
    assert read_sidecar(plan) is None  # plans from trtexec have none
    sidecar_path(plan).write_text(json.dumps(GOOD))
    assert read_sidecar(plan) == PlanInfo.from_json(json.dumps(GOOD))
    sidecar_path(plan).write_text(json.dumps({**GOOD, "plan_bytes": "ten"}))
    with pytest.raises(EngineError, match=r"sidecar model\.plan\.json is malformed") as info:
        read_sidecar(plan)
    assert str(tmp_path) not in str(info.value)
    sidecar_path(plan).write_bytes(b" " * (2 << 20))
    with pytest.raises(EngineError, match="too large for a sidecar"):
        read_sidecar(plan)


def test_check_digest() -> None:
    data = b"plan"
    info = PlanInfo("10.3.0", (8, 9), "L4", "fp32", sha256(data), len(data))
    check_digest(info, data)
    with pytest.raises(EngineError, match="does not match its sidecar"):
        check_digest(info, b"nalp")
    with pytest.raises(EngineError, match="does not match its sidecar"):
        check_digest(info, data + b"!")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.3.0.26", (10, 3, 0, 26)),
        ("8.6.1.post1", (8, 6, 1)),
        ("10.0.1b2", (10, 0, 1)),
        ("x", ()),
    ],
)
def test_parse_version(text: str, expected: tuple[int, ...]) -> None:
    assert parse_version(text) == expected


def test_check_compatibility() -> None:
    info = PlanInfo.from_json(json.dumps(GOOD))
    assert check_compatibility(info, "10.3.0", (8, 9), "NVIDIA L4") == []
    # The build number is not compared (Python packages report three components).
    assert check_compatibility(info, "10.3.0.26", (8, 9), "NVIDIA L4") == []
    warnings = check_compatibility(info, "10.3.0", (8, 9), "NVIDIA RTX 4090")
    assert len(warnings) == 1 and "built on a NVIDIA L4" in warnings[0]
    with pytest.raises(EngineError, match=r"built with TensorRT 10\.3\.0 but this server runs "
                       r"TensorRT 10\.4\.0"):  # fmt: skip
        check_compatibility(info, "10.4.0", (8, 9), "NVIDIA L4")
    with pytest.raises(EngineError, match=r"compute capability 8\.9 \(NVIDIA L4\) but GPU 1 "
                       r"\(NVIDIA A100\) has compute capability 8\.0"):  # fmt: skip
        check_compatibility(info, "10.3.0", (8, 0), "NVIDIA A100", device_id=1)


def _layout(inputs: list, outputs: list, profiles: list | None = None) -> PlanLayout:  # type: ignore[type-arg]
    trt = make_tensorrt()
    body = {"inputs": inputs, "outputs": outputs, "profiles": profiles or []}
    return read_layout(FakeEngine(trt, body), trt)


def test_read_layout_batched() -> None:
    layout = _layout(
        [["x", "FLOAT", [-1, 4]], ["mask", "BOOL", [-1, 4]]],
        [["y", "HALF", [-1, 4]]],
        [
            {"x": [[1, 4], [2, 4], [2, 4]], "mask": [[1, 4], [2, 4], [2, 4]]},
            {"x": [[3, 4], [8, 4], [8, 4]], "mask": [[3, 4], [8, 4], [8, 4]]},
        ]
        * 2,
    )
    assert layout.batched and layout.dynamic
    assert (layout.group_size, layout.replicas) == (2, 2)
    assert layout.group(1) == (2, 3)
    assert layout.batch_profiles() == (BatchProfile(1, 2, 2), BatchProfile(3, 8, 8))
    sig = layout.signature()
    assert sig.batch_sizes == tuple(range(1, 9))
    assert [t.dtype for t in sig.inputs] == [np.float32, np.bool_]
    assert sig.outputs[0].dtype == np.float16
    assert layout.dim_bounds() == {"x": ((1, 8), (4, 4)), "mask": ((1, 8), (4, 4))}
    assert layout.describe() == "batch profiles 1..2 (opt 2), 3..8 (opt 8)"


def test_batch_range_is_what_every_input_admits() -> None:
    layout = _layout(
        [["a", "FLOAT", [-1, 2]], ["b", "FLOAT", [-1, 2]]],
        [["y", "FLOAT", [-1, 2]]],
        [{"a": [[1, 2], [4, 2], [8, 2]], "b": [[2, 2], [4, 2], [6, 2]]}],
    )
    assert layout.batch_profiles() == (BatchProfile(2, 4, 6),)
    assert layout.signature().batch_sizes == (2, 3, 4, 5, 6)


@pytest.mark.parametrize(
    ("inputs", "outputs", "sizes"),
    [
        ([["x", "FLOAT", [8, 4]]], [["y", "FLOAT", [8, 2]]], (8,)),  # one fixed batch
        ([["x", "FLOAT", [8, 4]]], [["y", "FLOAT", [2]]], ()),  # no common first dim
        ([["x", "FLOAT", [3]]], [["y", "FLOAT", [3]]], (3,)),  # harmless: max_batch_size 0
    ],
)
def test_static_layouts(inputs: list, outputs: list, sizes: tuple[int, ...]) -> None:  # type: ignore[type-arg]
    layout = _layout(inputs, outputs)
    assert not layout.dynamic and layout.replicas == 0 and layout.group_size == 1
    assert layout.signature().batch_sizes == sizes
    assert layout.describe() == "static shapes"


def test_dynamic_but_not_batched() -> None:
    layout = _layout(
        [["ids", "INT32", [1, -1]]],
        [["y", "INT32", [1, -1]]],
        [{"ids": [[1, 1], [1, 64], [1, 128]]}],
    )
    assert layout.dynamic and not layout.batched
    assert layout.signature().batch_sizes == (1,)  # the common fixed first dimension
    assert layout.dim_bounds() == {"ids": ((1, 1), (1, 128))}


def test_layout_refusals() -> None:
    trt = make_tensorrt()
    with pytest.raises(EngineError, match="no inputs or no outputs"):
        read_layout(FakeEngine(trt, {"inputs": [], "outputs": [], "profiles": []}), trt)
    host = FakeEngine(
        trt, {"inputs": [["s", "INT32", [2]]], "outputs": [["y", "FLOAT", [2]]], "profiles": []}
    )
    host.get_tensor_location = lambda name: trt.TensorLocation.HOST  # type: ignore[method-assign]
    with pytest.raises(EngineError, match="tensor 's' is a shape tensor"):
        read_layout(host, trt)


def test_tensor_layout_spec() -> None:
    t = TensorLayout("x", np.dtype(np.float32), (-1, 3))
    assert t.dynamic and t.spec().shape == (-1, 3)
