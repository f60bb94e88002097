"""Ensembles (``platform: "ensemble"``) of real ONNX models, from a repository
the test writes: a chain and a fan-out/fan-in DAG, called by stock
``tritonclient.grpc`` (in a child process: it registers the same protobuf
symbols as our protos) and by our client, checked against numpy."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferd.clients import InferenceClient
from tests.conftest import ServerThread
from tests.ensemble_models import chain_and_diamond, chain_reference, diamond_reference

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
