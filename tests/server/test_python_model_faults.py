"""Faults of Python models stay with their request, their batch or their
model: exceptions and wrong outputs are INTERNAL naming what was wrong, a
model.py that cannot load fails only its own load, and a model process
killed mid-batch fails that batch UNAVAILABLE, reports not-ready, restarts
and serves again while the other models never fail (tests/python_models.py
holds the models)."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ServerThread
from lifecycle_models import wait_for
from python_models import pre_reference, python_repository, write_python_model

from inferd.clients import InferenceClient, InferenceServerError

X = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)


def faulty_inputs(mode: int, x: np.ndarray = X) -> dict[str, np.ndarray]:
    return {"x": x, "mode": np.full((x.shape[0], 1), mode, dtype=np.int32)}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return python_repository(tmp_path / "models")


@pytest.fixture
def server(make_server: Callable[..., ServerThread], repository: Path) -> ServerThread:
    return make_server(repository, health_probe_interval_s=0.2)


@pytest.fixture
def client(server: ServerThread) -> Iterator[InferenceClient]:
    with InferenceClient(server.address) as c:
        yield c


def test_exception_in_execute_is_internal_with_its_message(client: InferenceClient) -> None:
    before = client.infer("faulty", faulty_inputs(0), timeout=30)["pid"]
    with pytest.raises(InferenceServerError) as info:
        client.infer("faulty", faulty_inputs(1), timeout=30)
    assert info.value.code.name == "INTERNAL"
    assert "ValueError: cannot score" in info.value.details
    assert "/srv/secret" not in info.value.details
    assert "Traceback" not in info.value.details
    # The model keeps serving, from the same process.
    after = client.infer("faulty", faulty_inputs(0), timeout=30)
    np.testing.assert_array_equal(after["y"], X)
    assert after["pid"].tolist() == before.tolist()


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (2, "output 'nope' is not declared"),
        (3, "output 'y' has datatype FP64, but the config declares FP32"),
        (4, "output 'y' has shape [2, 1]"),
        (5, "output 'y' is missing"),
    ],
)
def test_wrong_output_is_internal_naming_it(
    client: InferenceClient, mode: int, expected: str
) -> None:
    with pytest.raises(InferenceServerError) as info:
        client.infer("faulty", faulty_inputs(mode), timeout=30)
    assert info.value.code.name == "INTERNAL"
    assert expected in info.value.details


def test_requests_of_one_batch_reach_execute_together_and_fail_alone(
    client: InferenceClient,
) -> None:
    """While a slow execute runs, queued requests form one batch: execute
    gets them all, and the one whose response carries a TritonError fails
    with its code while the others get their rows."""
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        slow = pool.submit(client.infer, "faulty", faulty_inputs(7), timeout=30)
        time.sleep(0.3)
        rows = [X[i : i + 1] * (k + 1) for k in range(2) for i in range(2)]
        good = [pool.submit(client.infer, "faulty", faulty_inputs(0, r), timeout=30) for r in rows]
        refused = pool.submit(client.infer, "faulty", faulty_inputs(6), timeout=30)
        slow.result()
        answers = [f.result() for f in good]
        with pytest.raises(InferenceServerError) as info:
            refused.result()
    assert info.value.code.name == "INVALID_ARGUMENT"
    assert info.value.details == "mode 6 is refused"
    for row, answer in zip(rows, answers, strict=True):
        np.testing.assert_array_equal(answer["y"], row)
    assert max(int(a["requests"][0, 0]) for a in answers) > 1


BROKEN_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 2 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 2 ] }} ]
"""
BROKEN_IMPORT = "import no_such_module_here\n"
BROKEN_INIT = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("cannot open /opt/weights/missing.bin")
"""


def test_model_py_that_cannot_load_fails_only_its_own_load(
    make_server: Callable[..., ServerThread], repository: Path
) -> None:
    write_python_model(
        repository, "no_import", BROKEN_CONFIG.format(name="no_import"), BROKEN_IMPORT
    )
    write_python_model(repository, "no_init", BROKEN_CONFIG.format(name="no_init"), BROKEN_INIT)
    server = make_server(repository)
    with InferenceClient(server.address) as client:
        index = {m["name"]: m for m in client.repository_index()}
        np.testing.assert_array_equal(client.infer("plus", {"x": X}, timeout=30)["y"], X + 1)
        assert client.is_model_ready("pre")
    assert index["no_import"]["state"] == "UNAVAILABLE"
    assert "model.py failed to import" in index["no_import"]["reason"]
    assert "No module named 'no_such_module_here'" in index["no_import"]["reason"]
    assert index["no_init"]["state"] == "UNAVAILABLE"
    assert "initialize failed: RuntimeError: cannot open <path>" in index["no_init"]["reason"]


def test_finalize_runs_on_unload(server: ServerThread, repository: Path) -> None:
    assert server.server is not None
    server.call(server.server.models.unload("faulty"))
    assert (repository / "faulty" / "finalized").read_text() == "yes"


def test_killed_model_process_fails_its_batch_and_restarts(
    server: ServerThread, client: InferenceClient, repository: Path
) -> None:
    first_pid = int(client.infer("faulty", faulty_inputs(0), timeout=30)["pid"][0, 0])
    stop = threading.Event()
    others: dict[str, Any] = {"ok": 0, "errors": []}

    def other_models() -> None:
        raw = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
        with InferenceClient(server.address) as own:
            while not stop.is_set():
                try:
                    np.testing.assert_array_equal(
                        own.infer("plus", {"x": X}, timeout=30)["y"], X + 1
                    )
                    score = own.infer("pre", {"RAW": raw}, timeout=30)["SCORE"]
                    np.testing.assert_allclose(score, pre_reference(raw)[0], rtol=1e-5)
                    others["ok"] += 1
                except Exception as exc:  # any failure of another model fails the test
                    others["errors"].append(repr(exc))

    marker = repository / "faulty" / "executing"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        traffic = pool.submit(other_models)
        batch = pool.submit(client.infer, "faulty", faulty_inputs(9), timeout=60)
        wait_for(marker.exists, timeout=30)
        os.kill(int(marker.read_text()), signal.SIGKILL)
        with pytest.raises(InferenceServerError) as info:
            batch.result()
        ready_right_after = client.is_model_ready("faulty")
        wait_for(lambda: client.is_model_ready("faulty"), timeout=60)
        answer = client.infer("faulty", faulty_inputs(0), timeout=30)
        time.sleep(0.5)  # the other models keep being called after the restart too
        stop.set()
        traffic.result()
    assert info.value.code.name == "UNAVAILABLE"
    assert "exited (killed by SIGKILL)" in info.value.details
    assert not ready_right_after
    np.testing.assert_array_equal(answer["y"], X)
    assert int(answer["pid"][0, 0]) != first_pid
    assert others["errors"] == []
    assert others["ok"] > 0
