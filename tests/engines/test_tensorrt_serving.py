"""A tensorrt_plan model through the model manager and the batcher: the
batch sizes come from the plan's profiles, warmup runs each of them, and the
batcher dispatches nothing else (padding up to the next profile size).

TensorRT cannot run here, so ``fake_trt`` stands in for ``tensorrt`` and
``pycuda.driver`` (injected through ``sys.modules``; see its docstring).
This checks inferd's wiring, not TensorRT: ``tests/gpu`` serves a real plan.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_trt import make_plan, make_pycuda, make_tensorrt

from inferd.engines.tensorrt.plan import PlanInfo, sha256, write_sidecar
from inferd.engines.tensorrt.profiles import derive_profiles, replicate
from inferd.server.models import ModelManager
from inferd.server.repository import ModelRepository
from inferd.server.request import InferRequest


async def test_batcher_dispatches_only_plan_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trt = make_tensorrt()
    package, driver = make_pycuda()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)

    # Point profiles (build-engine --exact-profiles) for 1, 4 and 16, two contexts.
    batch_profiles = derive_profiles([1, 4, 16], exact=True)
    shapes = [{"x": [[p.min, 3], [p.opt, 3], [p.max, 3]]} for p in batch_profiles]
    data = make_plan(
        inputs=[("x", "FLOAT", [-1, 3])],
        outputs=[("y", "FLOAT", [-1, 3])],
        profiles=list(replicate(shapes, 2)),
    )
    version = tmp_path / "embed" / "1"
    version.mkdir(parents=True)
    (version / "model.plan").write_bytes(data)
    write_sidecar(
        version / "model.plan",
        PlanInfo("10.3.0", (8, 9), "Fake L4", "fp16", sha256(data), len(data), batch_profiles, 2),
    )
    (tmp_path / "embed" / "config.pbtxt").write_text(
        "max_batch_size: 16 dynamic_batching { } instance_group { count: 2 kind: KIND_GPU } "
        'parameters { key: "warmup_rounds" value: { string_value: "1" } }'
    )

    manager = ModelManager(ModelRepository(tmp_path))
    await manager.load_all()
    model = manager.resolve("embed")
    assert model.platform == "tensorrt_plan"
    assert model.engine.signature.batch_sizes == (1, 4, 16)
    assert model.scheduler.options.sizes == (1, 4, 16)
    assert model.engine.max_concurrency == 2
    contexts = model.engine._engine.contexts  # type: ignore[attr-defined]
    warmed = {shape[0] for c in contexts for shape in c.ran}
    assert warmed == {1, 4, 16}
    for c in contexts:
        c.ran.clear()

    rng = np.random.default_rng(0)
    rows = [int(r) for r in rng.integers(1, 6, size=40)]
    inputs = [rng.uniform(size=(r, 3)).astype(np.float32) for r in rows]
    results = await asyncio.gather(
        *(
            model.scheduler.submit(InferRequest(inputs={"x": x}, outputs=(), rows=len(x)))
            for x in inputs
        )
    )
    for x, out in zip(inputs, results, strict=True):
        np.testing.assert_array_equal(out["y"], x * 2)
    dispatched = [shape[0] for c in contexts for shape in c.ran]
    assert dispatched and set(dispatched) <= {1, 4, 16}
    assert sum(r.rows for r in model.scheduler.batches) == sum(rows)
    assert {r.size for r in model.scheduler.batches} <= {1, 4, 16}

    await manager.close()
    assert not driver.state.live  # type: ignore[attr-defined]
    assert driver.state.retained == 0  # type: ignore[attr-defined]
    assert driver.state.pushed == 0  # type: ignore[attr-defined]
