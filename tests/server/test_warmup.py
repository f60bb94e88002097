"""Warmup runs every dispatchable batch size on the real engine before READY."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from inferd.server.errors import Unavailable
from inferd.server.models import ModelManager
from inferd.server.repository import ModelRepository


async def test_demo_models_are_warmed_at_every_batch_size(demo_repository: Path) -> None:
    manager = ModelManager(ModelRepository(demo_repository))
    await manager.load("digits_mlp")
    version = manager.resolve("digits_mlp")
    sched = version.scheduler
    assert sched.options.policy == "adaptive"
    assert sched.latency.sizes == list(range(1, 65))  # max_batch_size 64
    assert all(sched.latency.mean(s) > 0 for s in (1, 32, 64))
    await manager.close()


def _fixed_batch_model(path: Path, batch: int | str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "fixed", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


async def test_a_model_that_cannot_run_its_batch_sizes_never_reports_ready(
    tmp_path: Path,
) -> None:
    # The graph only runs batches of exactly 8, but the config lets the
    # scheduler pick 1..8: warmup catches it before any caller does.
    _fixed_batch_model(tmp_path / "fixed" / "1" / "model.onnx", 8)
    (tmp_path / "fixed" / "config.pbtxt").write_text(
        'name: "fixed"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\ndynamic_batching { }\n'
    )
    _fixed_batch_model(tmp_path / "ok" / "1" / "model.onnx", "batch")
    manager = ModelManager(ModelRepository(tmp_path))
    await manager.load_all()
    assert not manager.is_ready("fixed")
    assert manager.is_ready("ok")  # one bad model leaves the others serving
    with pytest.raises(Unavailable):
        manager.resolve("fixed")
    reasons = [r for n, _, s, r in manager.index() if n == "fixed" and s == "UNAVAILABLE"]
    assert reasons and str(tmp_path) not in reasons[0]
    await manager.close()
