"""Python models as ensemble steps and behind the response cache: an
exception in a Python step fails that ensemble request INTERNAL naming the
step while the server keeps serving, and a cache hit on a Python model never
reaches its ``execute`` (tests/pipeline_models.py holds the models)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from conftest import ServerThread
from pipeline_models import TALLY_CONFIG, TALLY_MODEL, pipeline_reference, pipeline_repository
from python_models import write_python_model

from inferd.clients import InferenceClient, InferenceServerError

RAW = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
X = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)


def _stats(client: InferenceClient, model: str) -> dict[str, Any]:
    (stats,) = client.model_statistics(model)["model_stats"]
    return stats


def _count(stats: dict[str, Any], field: str) -> int:
    return int(stats["inference_stats"][field].get("count", 0))


def test_python_step_that_raises_fails_the_ensemble_naming_the_step(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(pipeline_repository(tmp_path / "models"))
    nan = RAW.copy()
    nan[0, 1] = np.nan  # standardize and scale pass NaN on; label raises on it
    with InferenceClient(server.address) as client:
        good = client.infer("pipeline", {"RAW": RAW}, timeout=30)
        try:
            client.infer("pipeline", {"RAW": nan}, timeout=30)
        except InferenceServerError as exc:
            failure = exc
        else:
            raise AssertionError("a NaN row must fail the label step")
        assert failure.code.name == "INTERNAL"
        assert "ensemble 'pipeline' step 3 (model 'label')" in failure.details
        assert "ValueError: cannot label a non-finite score" in failure.details
        assert "Traceback" not in failure.details
        assert str(tmp_path) not in failure.details
        # The ensemble, its steps and the server keep serving.
        assert client.is_model_ready("pipeline")
        assert client.is_model_ready("label")
        again = client.infer("pipeline", {"RAW": RAW}, timeout=30)
        label = _stats(client, "label")
        pipeline = _stats(client, "pipeline")
    score, labels = pipeline_reference(RAW)
    for answer in (good, again):
        np.testing.assert_allclose(answer["SCORE"], score, rtol=1e-5)
        assert answer["LABEL"].tolist() == labels.tolist()
    # The failure counts against the failing step and the ensemble, once each.
    assert _count(label, "fail") == 1 and _count(label, "success") == 2
    assert _count(pipeline, "fail") == 1 and _count(pipeline, "success") == 2


def test_a_cache_hit_on_a_python_model_skips_execute(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    root = tmp_path / "models"
    write_python_model(root, "tally", TALLY_CONFIG, TALLY_MODEL)
    executions = root / "tally" / "executions"
    server = make_server(root, response_cache_bytes=1 << 20)
    with InferenceClient(server.address) as client:
        first = client.infer("tally", {"x": X}, timeout=30)
        second = client.infer("tally", {"x": X}, timeout=30)
        assert executions.read_text().splitlines() == ["executed"]
        other = client.infer("tally", {"x": X + 1}, timeout=30)
        stats = _stats(client, "tally")
    np.testing.assert_array_equal(first["y"], X * 2)
    # The hit answers what the first execute answered (its call count too)...
    np.testing.assert_array_equal(second["y"], X * 2)
    np.testing.assert_array_equal(second["calls"], first["calls"])
    assert first["calls"].ravel().tolist() == [1, 1]
    # ...and the next miss is execute's second request.
    np.testing.assert_array_equal(other["y"], (X + 1) * 2)
    assert other["calls"].ravel().tolist() == [2, 2]
    assert executions.read_text().splitlines() == ["executed", "executed"]
    assert _count(stats, "cache_hit") == 1
    assert _count(stats, "cache_miss") == 2
    assert int(stats["execution_count"]) == 2


def test_without_the_cache_every_request_reaches_execute(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    """The same model on a server without a cache: the hit above is the cache's doing."""
    root = tmp_path / "models"
    write_python_model(root, "tally", TALLY_CONFIG, TALLY_MODEL)
    server = make_server(root)
    with InferenceClient(server.address) as client:
        first = client.infer("tally", {"x": X}, timeout=30)
        second = client.infer("tally", {"x": X}, timeout=30)
    assert (first["calls"].ravel().tolist(), second["calls"].ravel().tolist()) == ([1, 1], [2, 2])
    assert (root / "tally" / "executions").read_text().splitlines() == ["executed"] * 2
