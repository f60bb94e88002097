"""Batch mode on a Python-backend model and on ensembles (ONNX steps, and
Python steps around an ONNX one): the rows ``inferd batch`` writes are the
answers a real server gives for the same rows, bit for bit, BYTES outputs
included (models from tests/python_models.py, tests/pipeline_models.py and
tests/ensemble_models.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ensemble_models import chain_reference, step, write_ensemble, write_model
from pipeline_models import pipeline_reference, pipeline_repository
from python_models import PRE_CONFIG, PRE_MODEL, pre_reference, write_python_model

from inferd.clients.sync import InferenceClient
from inferd.server.batch import BatchJob, run_batch
from inferd.server.settings import ServerConfig
from tests.conftest import ServerThread

ROWS = 61  # not a multiple of the models' max_batch_size (8): the last chunk is short
MAX_BATCH = 8
#: model -> its input
MODELS = {"pre": "RAW", "pipeline": "RAW", "chain": "x"}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = pipeline_repository(tmp_path_factory.mktemp("models"))  # scale, standardize, label
    write_python_model(root, "pre", PRE_CONFIG, PRE_MODEL)
    write_model(root, "shift")
    steps = [step("scale", {"x": "x"}, {"y": "scaled"}), step("shift", {"x": "scaled"}, {"y": "y"})]
    write_ensemble(root, "chain", steps)
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerThread]:
    config = ServerConfig(model_repository=repository, grpc_port=0)
    thread = ServerThread(config).start()
    yield thread
    thread.stop()


def online(address: str, model: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The server's answers to requests of ``MAX_BATCH`` rows, one after another."""
    answers: dict[str, list[np.ndarray]] = {}
    with InferenceClient(address) as client:
        for start in range(0, len(rows), MAX_BATCH):
            result = client.infer(model, {MODELS[model]: rows[start : start + MAX_BATCH]})
            for out, array in result.items():
                answers.setdefault(out, []).append(np.asarray(array))
    return {out: np.concatenate(parts) for out, parts in answers.items()}


def reference(model: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """What the model computes, in numpy (so agreement is not two equal bugs)."""
    if model == "chain":
        return {"y": chain_reference(rows)}
    score, label = (pre_reference if model == "pre" else pipeline_reference)(rows)
    return {"SCORE": score, "LABEL": label}


@pytest.mark.parametrize("model", list(MODELS))
def test_batch_equals_the_servers_answers(
    model: str, repository: Path, server: ServerThread, tmp_path: Path
) -> None:
    rows = np.random.default_rng(5).uniform(-3, 3, size=(ROWS, 4)).astype(np.float32)
    keys = np.array([f"r{i}" for i in range(ROWS)])
    column = pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel()), 4)
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": keys, MODELS[model]: column}), source, row_group_size=17)
    job = BatchJob(model, [str(source)], tmp_path / "out", repository=repository, key="id",
                   part_rows=25)  # fmt: skip
    summary = asyncio.run(run_batch(job))
    assert summary.exit_code == 0 and summary.totals["scored"] == ROWS
    offline = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet")))
    assert offline.column("id").to_pylist() == keys.tolist()

    expected = online(server.address, model, rows)
    assert set(expected) == set(offline.column_names) - {"id"}
    for out, want in expected.items():
        values = offline.column(out).combine_chunks()
        if pa.types.is_binary(values.type):  # BYTES: one value per row
            assert values.to_pylist() == want.ravel().tolist(), out
            assert values.to_pylist() == reference(model, rows)[out].ravel().tolist(), out
            continue
        got = values.flatten() if pa.types.is_fixed_size_list(values.type) else values
        got_array = got.to_numpy().reshape(want.shape)
        assert got_array.dtype == want.dtype
        assert got_array.tobytes() == want.tobytes(), out
        np.testing.assert_allclose(got_array, reference(model, rows)[out], rtol=1e-5, atol=1e-5)
