"""Offline answers are the online ones: bit for bit at the same batch size
(against a real server's gRPC answers), within float tolerance across batch
sizes, and the same through ``--url`` (streaming to the server)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lifecycle_models import plus

from inferd.clients.sync import InferenceClient
from inferd.server.batch import BatchError, BatchJob, run_batch
from inferd.server.batch.errors import EXIT_SCORING, ScoringError
from tests.batch.batch_data import digits_rows, write_parquet
from tests.conftest import ServerThread

ROWS = 200


def batch_outputs(job: BatchJob) -> pa.Table:
    assert asyncio.run(run_batch(job)).exit_code == 0
    return pq.read_table(sorted(job.output.glob("part-*.parquet")))


def column(table: pa.Table, name: str) -> np.ndarray:
    values = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(values.type):
        return values.flatten().to_numpy().reshape(len(values), -1)
    return values.to_numpy().reshape(len(values), -1)


def online(address: str, model: str, inputs: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """The server's answers to requests of ``batch`` rows, one after another."""
    answers: dict[str, list[np.ndarray]] = {}
    name = "pixels" if model == "digits_mlp" else "x"
    with InferenceClient(address) as client:
        for start in range(0, len(inputs), batch):
            result = client.infer(model, {name: inputs[start : start + batch]})
            for out, array in result.items():
                answers.setdefault(out, []).append(np.asarray(array).reshape(len(array), -1))
    return {out: np.concatenate(parts) for out, parts in answers.items()}


def model_rows(model: str) -> np.ndarray:
    if model == "digits_mlp":
        return digits_rows(ROWS)[1]
    return np.random.default_rng(2).uniform(-1, 1, size=(ROWS, 1024)).astype(np.float32)


@pytest.mark.parametrize("model", ["digits_mlp", "dense_reference"])
def test_offline_equals_online_bit_for_bit(
    model: str, demo_repository: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    rows = model_rows(model)
    name = "pixels" if model == "digits_mlp" else "x"
    keys = np.arange(ROWS)
    source = write_parquet(tmp_path / "in.parquet", keys, rows, column=name)
    offline = batch_outputs(
        BatchJob(model, [str(source)], tmp_path / "out", repository=demo_repository, key="id")
    )
    assert column(offline, "id").ravel().tolist() == keys.tolist()
    # The batch run's chunks are the model's max_batch_size; so are these requests.
    max_batch = {"digits_mlp": 64, "dense_reference": 32}[model]
    expected = online(demo_server.address, model, rows, max_batch)
    for out, array in expected.items():
        got = column(offline, out)
        assert got.dtype == array.dtype
        assert got.tobytes() == array.tobytes(), out
    # Another batch size: the same answers within float tolerance.
    small = batch_outputs(
        BatchJob(model, [str(source)], tmp_path / "small", repository=demo_repository, key="id",
                 batch_size=7)
    )  # fmt: skip
    for out, array in expected.items():
        np.testing.assert_allclose(column(small, out), array, rtol=1e-5, atol=1e-6)


def test_url_scores_on_the_server_with_the_same_bytes(
    demo_repository: Path, demo_server: ServerThread, tmp_path: Path
) -> None:
    keys, pixels = digits_rows(ROWS)
    source = str(write_parquet(tmp_path / "in.parquet", keys, pixels))
    local = batch_outputs(
        BatchJob("digits_mlp", [source], tmp_path / "local", repository=demo_repository, key="id")
    )
    remote_job = BatchJob(
        "digits_mlp", [source], tmp_path / "remote", url=demo_server.address, key="id",
        part_rows=64,
    )  # fmt: skip
    remote = batch_outputs(remote_job)
    assert remote.equals(local)
    manifest = (tmp_path / "remote" / "manifest.json").read_text()
    assert '"version": "1"' in manifest and "training_commit" in manifest


RESHAPED_CONFIG = """
name: "reshaped"
platform: "onnxruntime_onnx"
max_batch_size: 8
input { name: "x" data_type: TYPE_FP32 dims: [ 1, 2 ] reshape { shape: [ 2 ] } }
output { name: "y" data_type: TYPE_FP32 dims: [ 2 ] }
"""


def test_url_sends_the_configs_dims_when_the_server_reshapes(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """The server applies a config's ``reshape`` to what arrives, so the
    rows go out as ``dims`` say ([1, 2] here), not as the model sees them."""
    root = tmp_path / "models"
    plus(root / "reshaped" / "1" / "model.onnx", 1)
    (root / "reshaped" / "config.pbtxt").write_text(RESHAPED_CONFIG)
    server = make_server(root)
    x = np.random.default_rng(3).uniform(-1, 1, size=(20, 2)).astype(np.float32)
    source = str(write_parquet(tmp_path / "in.parquet", np.arange(20), x, column="x"))
    remote = batch_outputs(
        BatchJob("reshaped", [source], tmp_path / "out", url=server.address, key="id")
    )
    np.testing.assert_allclose(column(remote, "y"), x + 1, rtol=1e-6)


def test_url_names_what_the_server_refused(demo_server: ServerThread, tmp_path: Path) -> None:
    keys, pixels = digits_rows(3)
    source = str(write_parquet(tmp_path / "in.parquet", keys, pixels))
    job = BatchJob("no_such_model", [source], tmp_path / "out", url=demo_server.address)
    with pytest.raises(BatchError, match="no_such_model"):
        asyncio.run(run_batch(job))


def test_an_unreachable_server_is_a_retryable_failure(tmp_path: Path) -> None:
    """Exit 4, not 2: a Job's retry (deploy/k8s/batch) may find the server up."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    keys, pixels = digits_rows(3)
    source = str(write_parquet(tmp_path / "in.parquet", keys, pixels))
    job = BatchJob("digits_mlp", [source], tmp_path / "out", url=f"127.0.0.1:{port}")
    with pytest.raises(ScoringError, match="UNAVAILABLE") as caught:
        asyncio.run(run_batch(job))
    assert caught.value.exit_code == EXIT_SCORING
