"""Python models written for Triton's Python backend, loaded from a
repository the test writes, called by stock ``tritonclient.grpc`` (in a
child process, see tritonclient_calls.py) and by our client; answers equal a
numpy reference (tests/python_models.py)."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ServerThread
from python_models import pre_reference, python_repository

from inferd.clients import InferenceClient

CALLS = Path(__file__).with_name("tritonclient_calls.py")
RAW = np.array(
    [[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [0.5, -2.0, 7.0, 1.0]], dtype=np.float32
)
X = np.array([[1.0, 2.0], [3.0, -4.0]], dtype=np.float32)
NOT_FOUND = 2  # pb_utils.TritonError.NOT_FOUND


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from inferd.server.app import ServerConfig

    root = python_repository(tmp_path_factory.mktemp("python") / "models")
    thread = ServerThread(ServerConfig(model_repository=root, grpc_port=0)).start()
    yield thread
    thread.stop()


def run_calls(address: str, calls: list[dict[str, Any]]) -> list[Any]:
    if importlib.util.find_spec("tritonclient") is None:
        pytest.skip("tritonclient is not installed (pip install '.[test]')")
    proc = subprocess.run(
        [sys.executable, str(CALLS)],
        input=json.dumps({"url": address, "calls": calls}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    answers: list[Any] = json.loads(proc.stdout)
    return answers


def fp32(name: str, array: np.ndarray) -> dict[str, Any]:
    return {
        name: {
            "data": array.ravel().tolist(),
            "dtype": "float32",
            "shape": list(array.shape),
            "datatype": "FP32",
        }
    }


def test_preprocessing_model_answers_tritonclient_as_numpy_does(server: ServerThread) -> None:
    score, label = pre_reference(RAW)
    (answer,) = run_calls(
        server.address, [{"kind": "infer", "model": "pre", "inputs": fp32("RAW", RAW)}]
    )
    outputs = answer["outputs"]
    assert outputs["SCORE"]["datatype"] == "FP32"
    assert outputs["SCORE"]["shape"] == [3, 1]
    np.testing.assert_allclose(outputs["SCORE"]["data"], score.ravel(), rtol=1e-5)
    assert outputs["LABEL"]["datatype"] == "BYTES"
    assert outputs["LABEL"]["data"] == [v.decode() for v in label.ravel()]


def test_preprocessing_model_answers_our_client_as_numpy_does(server: ServerThread) -> None:
    score, label = pre_reference(RAW)
    with InferenceClient(server.address) as client:
        result = client.infer("pre", {"RAW": RAW}, timeout=30)
        only_label = client.infer("pre", {"RAW": RAW}, outputs=["LABEL"], timeout=30)
    np.testing.assert_allclose(result["SCORE"], score, rtol=1e-5)
    assert result["LABEL"].tolist() == label.tolist()
    assert only_label["LABEL"].tolist() == label.tolist()
    with pytest.raises(KeyError):
        only_label["SCORE"]


@pytest.mark.parametrize("model", ["bls", "bls_async"])
def test_bls_model_calls_another_model_for_tritonclient(server: ServerThread, model: str) -> None:
    (answer,) = run_calls(
        server.address, [{"kind": "infer", "model": model, "inputs": fp32("x", X)}]
    )
    np.testing.assert_allclose(answer["outputs"]["z"]["data"], ((X + 1) * 2).ravel())
    assert answer["outputs"]["missing_code"]["data"] == [NOT_FOUND, NOT_FOUND]


@pytest.mark.parametrize("model", ["bls", "bls_async"])
def test_bls_model_calls_another_model_for_our_client(server: ServerThread, model: str) -> None:
    with InferenceClient(server.address) as client:
        result = client.infer(model, {"x": X}, timeout=30)
    np.testing.assert_allclose(result["z"], (X + 1) * 2)
    assert result["missing_code"].ravel().tolist() == [NOT_FOUND, NOT_FOUND]


def test_concurrent_requests_are_batched_into_one_execute(server: ServerThread) -> None:
    """Dynamic batching applies: concurrent requests share execute calls, and
    each still gets its own rows back."""
    rows = [RAW[i : i + 1] for i in range(3)] * 8
    with InferenceClient(server.address) as client:

        def call(raw: np.ndarray) -> Any:
            return client.infer("pre", {"RAW": raw}, timeout=30)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(call, rows))
    for raw, result in zip(rows, results, strict=True):
        np.testing.assert_allclose(result["SCORE"], pre_reference(raw)[0], rtol=1e-5)


def test_large_tensors_cross_through_shared_memory_and_leave_none_behind(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 MB each way: above SHM_MIN_BYTES, so both directions use segments."""
    from inferd.server.python_backend import transport

    sent: list[str] = []
    received: list[str] = []
    pack_one, unpack_one = transport.Transport.pack_one, transport.unpack_one

    def spy_pack(self: transport.Transport, array: np.ndarray) -> transport.Wire:
        wire = pack_one(self, array)
        sent.append(wire[0])
        return wire

    def spy_unpack(wire: transport.Wire) -> np.ndarray:
        received.append(wire[0])
        return unpack_one(wire)

    monkeypatch.setattr(transport.Transport, "pack_one", spy_pack)
    monkeypatch.setattr(transport, "unpack_one", spy_unpack)
    x = np.random.default_rng(3).standard_normal(250_000).astype(np.float32)
    assert x.nbytes > transport.SHM_MIN_BYTES
    with InferenceClient(server.address) as client:
        result = client.infer("echo", {"x": x}, timeout=60)
    np.testing.assert_array_equal(result["y"], x * 2)
    assert sent == ["shm"]  # the request's input, to the model process
    assert received == ["shm"]  # the model's output, back
    leftovers = [
        n for n in os.listdir(transport.SHM_DIR) if n.startswith(f"inferd-py-{os.getpid()}-")
    ]
    assert leftovers == []


def test_config_reads_as_tritons_for_a_python_model(server: ServerThread) -> None:
    (config,) = run_calls(server.address, [{"kind": "model_config", "model": "pre"}])
    assert config["backend"] == "python"
    assert config.get("platform", "") == ""  # Triton sets no platform for Python models
    assert config["default_model_filename"] == "model.py"
    assert [o["name"] for o in config["output"]] == ["SCORE", "LABEL"]
