"""Ray Data's map_batches drives InferdPredictor on a local Ray instance,
with the answers ``inferd batch`` writes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferd.server.batch import BatchJob, run_batch
from inferd.server.batch.ray_predictor import InferdPredictor
from tests.batch.batch_data import digits_rows, write_parquet

ray = pytest.importorskip("ray")

# Ray's own deprecations (of its settings, not of anything called here).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def test_map_batches_scores_like_inferd_batch(
    local_ray: None, demo_repository: Path, tmp_path: Path
) -> None:
    keys, pixels = digits_rows(300)
    source = write_parquet(tmp_path / "in.parquet", keys, pixels)
    bad = pa.table({"id": ["bad-short"], "pixels": pa.array([[1.0] * 63], pa.list_(pa.float32()))})
    pq.write_table(bad, tmp_path / "bad.parquet")
    ds = ray.data.read_parquet([str(source), str(tmp_path / "bad.parquet")])
    scored = ds.map_batches(
        InferdPredictor,
        fn_constructor_kwargs={
            "model_repository": str(demo_repository),
            "model": "digits_mlp",
            "key": "id",
        },
        batch_format="pyarrow",
        batch_size=128,
        concurrency=1,
    ).to_arrow_refs()
    table = pa.concat_tables(ray.get(scored))
    assert table.column_names == ["id", "probabilities", "label", "error"]
    by_key = {k: i for i, k in enumerate(table.column("id").to_pylist())}
    assert len(by_key) == 301

    bad_row = table.slice(by_key["bad-short"], 1).to_pylist()[0]
    assert bad_row["label"] is None and "63 values" in bad_row["error"]

    job = BatchJob("digits_mlp", [str(source)], tmp_path / "out", repository=demo_repository,
                   key="id")  # fmt: skip
    assert asyncio.run(run_batch(job)).exit_code == 0
    expected = pq.read_table(sorted((tmp_path / "out").glob("part-*.parquet")))
    rows = table.take(pa.array([by_key[k] for k in keys.tolist()]))
    assert rows.column("error").null_count == 300
    # Ray cuts its own batches; within one engine batch size the bytes may
    # differ in the last bits, so compare within float tolerance.
    got = np.stack(rows.column("probabilities").to_numpy(zero_copy_only=False))
    want = np.stack(expected.column("probabilities").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert rows.column("label").to_pylist() == expected.column("label").to_pylist()


def test_numpy_batches_are_accepted(demo_repository: Path) -> None:
    """batch_format="numpy": a dict of arrays, the tensor column 2-D."""
    keys, pixels = digits_rows(10)
    predictor = InferdPredictor(demo_repository, "digits_mlp", key="id")
    try:
        out = predictor({"id": keys, "pixels": pixels})
    finally:
        predictor.close()
    assert out.column("id").to_pylist() == keys.tolist()
    assert out.column("error").null_count == 10
