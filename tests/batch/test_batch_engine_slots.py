"""A single-slot engine runs on the batch run's event loop; a model with
several instances keeps its engine threads, and both answer the same."""

from __future__ import annotations

import asyncio
import math
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from inferd.server.batch import BatchJob, run_batch
from inferd.server.batch.scoring import LocalScorer
from tests.batch.batch_data import digits_rows, write_parquet


def two_instances(demo_repository: Path, root: Path) -> Path:
    shutil.copytree(demo_repository / "digits_mlp", root / "digits_mlp")
    config = root / "digits_mlp" / "config.pbtxt"
    config.write_text(config.read_text().replace("count: 1", "count: 2"))
    return root


def inline_limit(repository: Path) -> tuple[float, int]:
    async def probe() -> tuple[float, int]:
        scorer = await LocalScorer.open(repository, "digits_mlp")
        try:
            return scorer.version.scheduler.execution.options.inline_max_s, scorer.concurrency
        finally:
            await scorer.close()

    return asyncio.run(probe())


def test_engine_slots_and_answers(demo_repository: Path, tmp_path: Path) -> None:
    twice = two_instances(demo_repository, tmp_path / "models")
    assert inline_limit(demo_repository) == (math.inf, 2)
    assert inline_limit(twice) == (0.0, 4)  # the configured default: off

    keys, pixels = digits_rows(500)
    source = str(write_parquet(tmp_path / "in.parquet", keys, pixels))
    tables = []
    for repo, out in ((demo_repository, "one"), (twice, "two")):
        job = BatchJob("digits_mlp", [source], tmp_path / out, repository=repo, key="id")
        assert asyncio.run(run_batch(job)).exit_code == 0
        tables.append(pq.read_table(sorted((tmp_path / out).glob("part-*.parquet"))))
    assert tables[0].equals(tables[1])
