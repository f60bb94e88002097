"""The helper that runs a Python model without a server
(``inferd.server.python_backend.testing``), on the models of
tests/python_models.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from python_models import pre_reference, python_repository

from inferd.server.python_backend import pb_utils
from inferd.server.python_backend.testing import load_model

RAW = np.array([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]], dtype=np.float32)
X = np.array([[1.0, 2.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return python_repository(tmp_path_factory.mktemp("helper") / "models")


def _faulty(mode: int) -> dict[str, np.ndarray]:
    return {"x": X, "mode": np.full((1, 1), mode, dtype=np.int32)}


def test_execute_answers_as_the_numpy_reference(repository: Path) -> None:
    score, label = pre_reference(RAW)
    with load_model(repository / "pre") as model:
        outputs = model.execute({"RAW": RAW})
        only = model.execute({"RAW": RAW}, outputs=["LABEL"])
    np.testing.assert_allclose(outputs["SCORE"], score, rtol=1e-5)
    assert outputs["LABEL"].tolist() == label.tolist()
    assert list(only) == ["LABEL"]


def test_execute_batch_runs_one_execute_with_every_request(repository: Path) -> None:
    with load_model(repository / "faulty") as model:
        answers = model.execute_batch([_faulty(0), _faulty(6), _faulty(0)])
    first, refused, third = answers
    assert isinstance(first, dict) and isinstance(third, dict)
    assert first["requests"][0, 0] == 3
    np.testing.assert_array_equal(third["y"], X)
    assert isinstance(refused, pb_utils.TritonError)
    assert refused.code() == pb_utils.TritonError.INVALID_ARG


def test_wrong_outputs_fail_as_on_the_server(repository: Path) -> None:
    with load_model(repository / "faulty") as model:
        with pytest.raises(pb_utils.TritonError, match="output 'y' has datatype FP64"):
            model.execute(_faulty(3))
        with pytest.raises(pb_utils.TritonError, match="output 'nope' is not declared"):
            model.execute(_faulty(2))
        with pytest.raises(ValueError, match="cannot score"):
            model.execute(_faulty(1))  # the exception itself, for debugging


@pytest.mark.parametrize("name", ["bls", "bls_async"])
def test_bls_calls_reach_the_given_stand_ins(repository: Path, name: str) -> None:
    seen: list[np.ndarray] = []

    def plus(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(inputs["x"])
        return {"y": inputs["x"] + 1}

    with load_model(repository / name, models={"plus": plus}) as model:
        outputs = model.execute({"x": X})
    np.testing.assert_array_equal(outputs["z"], (X + 1) * 2)
    assert outputs["missing_code"][0, 0] == pb_utils.TritonError.NOT_FOUND
    np.testing.assert_array_equal(seen[0], X)


def test_close_runs_finalize(repository: Path) -> None:
    model = load_model(repository / "faulty")
    model.execute(_faulty(0))
    model.close()
    assert (repository / "faulty" / "finalized").read_text() == "yes"
