"""Ensembles (``platform: "ensemble"``) of real ONNX models, from a repository
the test writes: a chain and a fan-out/fan-in DAG, called by stock
``tritonclient.grpc`` (in a child process: it registers the same protobuf
symbols as our protos) and by our client, checked against numpy."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from inferd.clients import InferenceClient, InferenceServerError
from inferd.server.request import InferRequest
from tests.conftest import ServerThread
from tests.ensemble_models import (
    chain_and_diamond,
    chain_reference,
    diamond_reference,
    step,
    write_ensemble,
)
from tests.server.http_helpers import request

X = np.arange(12, dtype=np.float32).reshape(3, 4) / 4

TRITONCLIENT = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient

client = grpcclient.InferenceServerClient(sys.argv[1])
x = np.arange(12, dtype=np.float32).reshape(3, 4) / 4
report = {}
for model in ("chain", "diamond"):
    inp = grpcclient.InferInput("x", [3, 4], "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("y")])
    meta = client.get_model_metadata(model, as_json=True)
    config = client.get_model_config(model, as_json=True)["config"]
    report[model] = {
        "y": result.as_numpy("y").tolist(),
        "platform": meta["platform"],
        "inputs": meta["inputs"],
        "outputs": meta["outputs"],
        "steps": [s["model_name"] for s in config["ensemble_scheduling"]["step"]],
        "ready": client.is_model_ready(model),
    }
stats = client.get_inference_statistics(as_json=True)["model_stats"]
report["stats"] = {s["name"]: s for s in stats}
print(json.dumps(report))
"""


@pytest.fixture
def server(tmp_path: Path, make_server: Callable[..., ServerThread]) -> ServerThread:
    return make_server(chain_and_diamond(tmp_path / "models"))


def _count(stats: dict[str, Any], field: str) -> int:
    return int(stats["inference_stats"][field].get("count", 0))


def test_stock_tritonclient_calls_ensembles(server: ServerThread) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", TRITONCLIENT, server.address],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    np.testing.assert_allclose(report["chain"]["y"], chain_reference(X), rtol=1e-6)
    np.testing.assert_allclose(report["diamond"]["y"], diamond_reference(X), rtol=1e-6)
    for model in ("chain", "diamond"):
        assert report[model]["platform"] == "ensemble"
        assert report[model]["ready"]
        assert report[model]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
        assert report[model]["outputs"] == [{"name": "y", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert report["diamond"]["steps"] == ["add2", "scale", "shift"]
    stats = report["stats"]
    # One request per ensemble; each composing model counts the steps it ran.
    assert _count(stats["chain"], "success") == 1
    assert _count(stats["diamond"], "success") == 1
    assert int(stats["chain"]["inference_count"]) == 3
    assert _count(stats["scale"], "success") == 2  # a step of both ensembles
    assert _count(stats["shift"], "success") == 2
    assert _count(stats["add2"], "success") == 1
    # The ensemble's queue and compute are its steps' summed (one count per request).
    assert _count(stats["chain"], "compute_infer") == 1
    assert int(stats["chain"]["inference_stats"]["compute_infer"]["ns"]) > 0


def test_our_client_calls_ensembles(server: ServerThread) -> None:
    with InferenceClient(server.address) as client:
        for _ in range(3):
            chain = client.infer("chain", {"x": X}, timeout=30)
            diamond = client.infer("diamond", {"x": X}, timeout=30)
            np.testing.assert_allclose(chain["y"], chain_reference(X), rtol=1e-6)
            np.testing.assert_allclose(diamond["y"], diamond_reference(X), rtol=1e-6)
        assert chain.model_name == "chain"
        assert chain.model_version == "1"
        one = client.infer("chain", {"x": X[:1]}, timeout=30)
        np.testing.assert_allclose(one["y"], chain_reference(X[:1]), rtol=1e-6)


# -- load-time validation ---------------------------------------------------------------

#: Broken ensemble -> (its steps, what the reason must say).
BROKEN = {
    "missing_model": (
        [step("nowhere", {"x": "x"}, {"y": "y"})],
        "step 1 (model 'nowhere'): no such model in the repository",
    ),
    "unproduced_tensor": (
        [step("scale", {"x": "ghost"}, {"y": "y"})],
        "step 1 (model 'scale') reads 'ghost', which is neither an ensemble input nor "
        "written by any step",
    ),
    "cycle": (
        [
            step("scale", {"x": "b"}, {"y": "a"}),
            step("shift", {"x": "a"}, {"y": "b"}),
            step("add2", {"a": "a", "b": "x"}, {"y": "y"}),
        ],
        "the steps form a cycle: step 1 (model 'scale'), step 2 (model 'shift'), "
        "step 3 (model 'add2')",
    ),
    "unknown_input": (
        [step("scale", {"pixels": "x"}, {"y": "y"})],
        "input_map names 'pixels', which is not an input of the model",
    ),
    "unset_input": (
        [step("add2", {"a": "x"}, {"y": "y"})],
        "input_map leaves the model's input(s) ['b'] unset",
    ),
    "unwritten_output": (
        [step("scale", {"x": "x"}, {"y": "other"})],
        "no step writes the ensemble output 'y'",
    ),
    "two_writers": (
        [step("scale", {"x": "x"}, {"y": "y"}), step("shift", {"x": "x"}, {"y": "y"})],
        "tensor 'y' is written by both step 1 (model 'scale') and step 2 (model 'shift')",
    ),
}


@pytest.fixture
def broken_repository(tmp_path: Path) -> Path:
    root = chain_and_diamond(tmp_path / "models")
    for name, (steps, _) in BROKEN.items():
        write_ensemble(root, name, steps)
    # Ensembles that call each other: neither can wait for the other.
    write_ensemble(root, "ping", [step("pong", {"x": "x"}, {"y": "y"})])
    write_ensemble(root, "pong", [step("ping", {"x": "x"}, {"y": "y"})])
    write_ensemble(root, "wrong_type", [step("scale", {"x": "x"}, {"y": "y"})], extra="")
    config = root / "wrong_type" / "config.pbtxt"
    config.write_text(config.read_text().replace("TYPE_FP32", "TYPE_INT32", 1))
    return root


def test_broken_ensembles_fail_their_load_with_the_reason_and_the_rest_serve(
    broken_repository: Path,
    make_server: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(broken_repository)
    with InferenceClient(server.address) as client:
        rows = {row["name"]: row for row in client.repository_index()}
        for name, (_, reason) in BROKEN.items():
            assert rows[name]["state"] == "UNAVAILABLE", name
            assert reason in rows[name]["reason"], (name, rows[name]["reason"])
            assert not client.is_model_ready(name)
        # Each finds the other loading (or failed): neither waits for the other.
        for name, other in (("ping", "pong"), ("pong", "ping")):
            assert rows[name]["state"] == "UNAVAILABLE"
            assert f"step 1 (model '{other}'): model '{other}' is " in rows[name]["reason"]
        assert (
            "ensemble input 'x' is INT32 but its input 'x' is FP32" in rows["wrong_type"]["reason"]
        )
        # Every other model serves.
        np.testing.assert_allclose(
            client.infer("chain", {"x": X}, timeout=30)["y"], chain_reference(X), rtol=1e-6
        )
        np.testing.assert_allclose(
            client.infer("diamond", {"x": X}, timeout=30)["y"], diamond_reference(X), rtol=1e-6
        )
    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "inferd.models")
    assert "reads 'ghost'" in logged


# -- runtime: spans, deadlines, failing steps ---------------------------------------------


def test_one_span_per_step_under_the_request_span_with_the_remaining_deadline(
    tmp_path: Path, make_server: Callable[..., ServerThread], make_tracing: Callable[..., Any]
) -> None:
    tracing, exporter = make_tracing()
    server = make_server(chain_and_diamond(tmp_path / "models"), tracing=tracing)
    with InferenceClient(server.address) as client:
        client.infer("diamond", {"x": X}, timeout=30)
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name.endswith("/ModelInfer")]
    steps = [s for s in spans if s.name == "inferd.ensemble_step"]
    assert len(steps) == 3
    root_id = root.get_span_context().span_id
    assert all(s.parent is not None and s.parent.span_id == root_id for s in steps)
    by_model = {dict(s.attributes or {})["inferd.model.name"]: s for s in steps}
    assert sorted(by_model) == ["add2", "scale", "shift"]
    budget = dict(root.attributes or {})["inferd.deadline.remaining_ms"]
    for span in steps:
        attributes = dict(span.attributes or {})
        assert attributes["inferd.ensemble.name"] == "diamond"
        # Each step gets what is left of the caller's 30 s, never more.
        assert 0 < attributes["inferd.deadline.remaining_ms"] <= budget
        # The composing model's own batch span hangs under the step's span.
        kids = [s.name for s in spans if s.parent and s.parent.span_id == span.context.span_id]
        assert "queue" in kids
    # add2 starts only after both of its producers answered.
    add2 = by_model["add2"]
    assert add2.start_time >= max(by_model["scale"].end_time, by_model["shift"].end_time)


def test_a_failing_step_fails_the_request_naming_the_step(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(
        chain_and_diamond(tmp_path / "models"), model_control_mode="explicit", load_models=("*",)
    )
    with InferenceClient(server.address) as client:
        client.unload_model("shift", timeout=30)
        with pytest.raises(InferenceServerError) as info:
            client.infer("chain", {"x": X}, timeout=30)
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert "ensemble 'chain' step 2 (model 'shift')" in info.value.details
        # The ensemble stays loaded (Triton's default without unload_dependents).
        assert client.is_model_ready("chain")
        client.load_model("shift", timeout=30)
        np.testing.assert_allclose(
            client.infer("chain", {"x": X}, timeout=30)["y"], chain_reference(X), rtol=1e-6
        )


def test_an_expired_budget_is_deadline_exceeded(server: ServerThread) -> None:
    with InferenceClient(server.address) as client:
        with pytest.raises(InferenceServerError) as info:
            client.infer("diamond", {"x": X}, parameters={"timeout": 1}, timeout=30)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_loading_an_ensemble_loads_its_steps_and_http_serves_it(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(
        chain_and_diamond(tmp_path / "models"),
        model_control_mode="explicit",
        load_models=("chain",),
        allow_http=True,
        http_port=0,
    )
    with InferenceClient(server.address) as client:
        ready = {row["name"] for row in client.repository_index(ready=True)}
    assert ready == {"chain", "scale", "shift"}  # as Triton: its steps came with it
    assert server.server is not None
    body = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 4], "data": X.ravel().tolist()}]
    }
    status, _, reply = request(server.server.http_port, "POST", "/v2/models/chain/infer", body)
    assert status == 200, reply
    (output,) = json.loads(reply)["outputs"]
    np.testing.assert_allclose(
        np.array(output["data"], np.float32).reshape(3, 4), chain_reference(X), rtol=1e-6
    )


async def test_a_drain_lets_an_admitted_ensemble_request_finish_its_steps(
    tmp_path: Path,
) -> None:
    from inferd.server.dataplane import DataPlane
    from inferd.server.errors import Unavailable
    from inferd.server.models import ModelManager
    from inferd.server.repository import ModelRepository

    models = ModelManager(ModelRepository(chain_and_diamond(tmp_path / "models")))
    await models.load("chain")
    plane = DataPlane(models)
    scale = models.resolve("scale")
    entered, release = asyncio.Event(), asyncio.Event()
    original = scale.scheduler.submit

    async def held(request: InferRequest) -> dict[str, np.ndarray]:
        entered.set()
        await release.wait()
        return await original(request)

    scale.scheduler.submit = held  # type: ignore[method-assign]

    def decode(io: Any) -> InferRequest:
        return InferRequest({"x": X}, (), 3)

    try:
        running = asyncio.create_task(plane.infer("chain", "", decode))
        await entered.wait()
        drained = asyncio.create_task(plane.drain(30))
        await asyncio.sleep(0)
        with pytest.raises(Unavailable, match="shutting down"):  # new work is refused...
            await plane.infer("chain", "", decode)
        release.set()  # ...but step 2 of the admitted request is not
        answer = await running
        np.testing.assert_allclose(answer.outputs["y"], chain_reference(X), rtol=1e-6)
        assert await drained
    finally:
        await models.close()


# -- the repository's view of an ensemble ---------------------------------------------------


def test_an_ensemble_version_is_a_directory_and_has_no_backend(tmp_path: Path) -> None:
    from inferd.server.repository import ModelRepository, RepositoryError

    root = chain_and_diamond(tmp_path / "models")
    (root / "chain" / "2").mkdir()
    (root / "chain" / "config.pbtxt").write_text(
        (root / "chain" / "config.pbtxt").read_text() + "version_policy { all {} }\n"
    )
    source = ModelRepository(root).source("chain")
    assert source.platform == "ensemble"
    assert sorted(source.versions) == [1, 2]  # empty version directories are versions
    assert source.config.backend == "" and source.config.default_model_filename == ""
    (root / "chain" / "config.pbtxt").write_text(
        (root / "chain" / "config.pbtxt").read_text() + 'backend: "onnxruntime"\n'
    )
    with pytest.raises(RepositoryError, match="an ensemble has no backend"):
        ModelRepository(root).source("chain")
