"""An engine that fails on valid rows ends the run with exit code 4 and a
one-line error naming the model and the failure (no traceback); the parts
written before stay, and the same command, once the engine works again,
resumes: it skips them and writes the rest."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_models import pipeline_repository
from python_models import write_python_model

from inferd.server.batch import BatchJob, run_batch
from inferd.server.batch.errors import EXIT_SCORING, ScoringError
from tests.batch.test_batch_cli import inferd_batch

#: ``flaky``: y = 2 * x; while ``failing`` exists in its directory, a batch
#: with a negative x raises (an engine fault, not a bad row: the rows fit).
FLAKY_CONFIG = """
name: "flaky"
backend: "python"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
dynamic_batching { }
"""

FLAKY_MODEL = """
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.failing = Path(args["model_repository"]) / "failing"

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            if self.failing.exists() and (x < 0).any():
                raise RuntimeError("device lost")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x * 2)]))
        return responses
"""

ROWS, PART_ROWS = 40, 10


def write_rows(path: Path) -> np.ndarray:
    """Positive rows, but negative ones in the last part only."""
    x = np.random.default_rng(3).uniform(1, 2, size=(ROWS, 2)).astype(np.float32)
    x[-PART_ROWS:] *= -1
    column = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 2)
    pq.write_table(pa.table({"id": np.arange(ROWS), "x": column}), path)
    return x


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_python_model(root, "flaky", FLAKY_CONFIG, FLAKY_MODEL)
    (root / "flaky" / "failing").write_text("")
    return root


def test_an_engine_failure_exits_4_and_the_rerun_resumes(repository: Path, tmp_path: Path) -> None:
    x = write_rows(tmp_path / "in.parquet")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    args = (
        "flaky", "--model-repository", str(repository), "--input", str(tmp_path / "in.parquet"),
        "--output", str(out), "--key", "id", "--part-rows", str(PART_ROWS),
        "--summary", str(summary),
    )  # fmt: skip
    failed = inferd_batch(*args)
    assert failed.returncode == 4, failed.stderr[-2000:]
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model 'flaky' failed:"), last
    assert "RuntimeError: device lost" in last
    assert "Traceback" not in failed.stderr and str(repository) not in last
    assert json.loads(summary.read_text()) == {"exit_code": 4, "message": last[len("error: ") :]}

    # Parts are written in order: the three before the failing one are kept,
    # recorded in the manifest; nothing of the failing part is left.
    written = sorted(p.name for p in out.glob("part-*.parquet"))
    assert written == [f"part-00000-{p:06d}.parquet" for p in range(3)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["parts"]) == [name.removesuffix(".parquet") for name in written]
    assert not list(out.glob(".tmp-*"))
    kept = {name: (out / name).read_bytes() for name in written}

    # The engine works again: the same job skips the written parts.
    (repository / "flaky" / "failing").unlink()
    job = BatchJob("flaky", [str(tmp_path / "in.parquet")], out, repository=repository,
                   key="id", part_rows=PART_ROWS)  # fmt: skip
    resumed = asyncio.run(run_batch(job))
    assert resumed.exit_code == 0 and resumed.parts_skipped == 3
    assert resumed.totals == {"rows": ROWS, "scored": ROWS, "errors": 0, "parts": 4}
    assert {name: (out / name).read_bytes() for name in written} == kept
    table = pq.read_table(sorted(out.glob("part-*.parquet")))
    assert table.column("id").to_pylist() == list(range(ROWS))
    y = table.column("y").combine_chunks().flatten().to_numpy().reshape(ROWS, 2)
    assert y.tobytes() == (x * 2).tobytes()


def test_a_failing_ensemble_step_is_named(tmp_path: Path) -> None:
    """NaN fits the signature (the model does not refuse it) but the
    ensemble's Python ``label`` step raises on it: exit 4, naming the step."""
    repository = pipeline_repository(tmp_path / "models")
    raw = np.random.default_rng(4).uniform(-1, 1, size=(12, 4)).astype(np.float32)
    raw[5, 2] = np.nan
    column = pa.FixedSizeListArray.from_arrays(pa.array(raw.ravel()), 4)
    pq.write_table(pa.table({"RAW": column}), tmp_path / "in.parquet")
    job = BatchJob("pipeline", [str(tmp_path / "in.parquet")], tmp_path / "out",
                   repository=repository)  # fmt: skip
    with pytest.raises(ScoringError) as caught:
        asyncio.run(run_batch(job))
    assert caught.value.exit_code == EXIT_SCORING
    message = str(caught.value)
    assert message.startswith("model 'pipeline' failed:"), message
    assert "step 3 (model 'label')" in message and "ValueError" in message
    assert "Traceback" not in message and str(tmp_path) not in message
    assert not list((tmp_path / "out").glob("part-*"))
