"""A Python model's outputs must have the request's rows only when its config
batches (``max_batch_size`` > 0): an unbatched model whose dims start with
-1 may answer any number of rows, on the server and in the test helper."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import ServerThread
from python_models import write_python_model

from inferd.clients import InferenceClient, InferenceServerError
from inferd.server.python_backend import pb_utils
from inferd.server.python_backend.testing import load_model

CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "x" data_type: TYPE_FP32 dims: {dims} }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: {dims} }} ]
"""

#: Answers the first row only, whatever the request's rows.
FIRST_ROW_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("y", pb_utils.get_input_tensor_by_name(r, "x").as_numpy()[:1])]
            )
            for r in requests
        ]
"""

X = np.arange(12, dtype=np.float32).reshape(3, 4)


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for name, max_batch_size, dims in (("unbatched", 0, "[ -1, 4 ]"), ("batched", 8, "[ 4 ]")):
        config = CONFIG.format(name=name, max_batch_size=max_batch_size, dims=dims)
        write_python_model(root, name, config, FIRST_ROW_MODEL)
    return root


def test_unbatched_model_may_answer_other_rows_than_it_was_given(
    make_server: Callable[..., ServerThread], repository: Path
) -> None:
    server = make_server(repository)
    with InferenceClient(server.address) as client:
        answer = client.infer("unbatched", {"x": X}, timeout=30)
        np.testing.assert_array_equal(answer["y"], X[:1])
        with pytest.raises(InferenceServerError) as info:
            client.infer("batched", {"x": X}, timeout=30)
    assert info.value.code.name == "INTERNAL"
    assert "output 'y' has 1 rows for a request of 3" in info.value.details


def test_the_helper_checks_rows_as_the_server_does(repository: Path) -> None:
    with load_model(repository / "unbatched") as model:
        np.testing.assert_array_equal(model.execute({"x": X})["y"], X[:1])
    with (
        load_model(repository / "batched") as model,
        pytest.raises(pb_utils.TritonError, match="has 1 rows for a request of 3"),
    ):
        model.execute({"x": X})
