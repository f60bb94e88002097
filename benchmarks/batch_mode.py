"""Batch mode against the raw engine, side by side in one process.

For each model: the raw engine (``benchmarks.raw_engine``: back-to-back
``infer`` calls, no server) at every batch size up to the model's
``max_batch_size``, and ``inferd batch``'s runner on a Parquet file of
random rows: read, convert, score through the data plane and scheduler,
write Parquet parts and the manifest. Rounds alternate between the two so
both see the same load on a shared host; each keeps its best round.
Batch-mode rows/s is the runner's own figure: rows over the scoring wall
time, reading and writing included, the model load not.

    python -m benchmarks.batch_mode --model-repository R [--model dense_reference digits_mlp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.raw_engine import load_engine, measure_engine
from inferd.server.batch import BatchJob, run_batch


@dataclass(frozen=True)
class Comparison:
    model: str
    rows: int
    raw_best_batch: int
    raw_rows_per_s: float
    batch_rows_per_s: float

    @property
    def ratio(self) -> float:
        return self.batch_rows_per_s / self.raw_rows_per_s if self.raw_rows_per_s else 0.0


def write_rows(repository: Path, model: str, rows: int, path: Path) -> int:
    """A Parquet file of ``rows`` random rows for every input; its max_batch_size."""
    engine = load_engine(repository, model)
    try:
        rng = np.random.default_rng(0)
        columns: dict[str, pa.Array] = {"id": pa.array(np.arange(rows))}
        for spec in engine.signature.inputs:
            width = int(np.prod([d if d > 0 else 1 for d in spec.shape[1:]]))
            values = rng.uniform(0, 1, size=rows * width).astype(spec.dtype)
            columns[spec.name] = pa.FixedSizeListArray.from_arrays(pa.array(values), width)
    finally:
        engine.close()
    pq.write_table(pa.table(columns), path)
    config = (repository / model / "config.pbtxt").read_text()
    line = next(x for x in config.splitlines() if x.startswith("max_batch_size"))
    return int(line.split(":")[1])


def batch_round(repository: Path, model: str, source: Path, work: Path) -> float:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    job = BatchJob(model, [str(source)], out, repository=repository, key="id", part_rows=8192)
    return asyncio.run(run_batch(job)).rows_per_s


def compare(
    repository: Path, model: str, rows: int, rounds: int, seconds: float, work: Path
) -> Comparison:
    source = work / f"{model}.parquet"
    max_batch = write_rows(repository, model, rows, source)
    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if b <= max_batch]
    raw_best = (0, 0.0)
    batch_best = 0.0
    for _ in range(rounds):
        points = measure_engine(repository, model, sizes, seconds_per_size=seconds)
        best = max(points, key=lambda p: p.rows_per_s)
        if best.rows_per_s > raw_best[1]:
            raw_best = (best.batch, best.rows_per_s)
        batch_best = max(batch_best, batch_round(repository, model, source, work))
    return Comparison(model, rows, raw_best[0], raw_best[1], batch_best)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_mode")
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", nargs="+", default=["dense_reference", "digits_mlp"])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[20000, 200000], help="per model, in order"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.6, help="raw engine, per batch size")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    opts = parser.parse_args(argv)
    rows = opts.rows + [opts.rows[-1]] * (len(opts.model) - len(opts.rows))
    results = []
    with tempfile.TemporaryDirectory(prefix="inferd-batch-bench-") as tmp:
        for model, count in zip(opts.model, rows, strict=False):
            c = compare(opts.model_repository, model, count, opts.rounds, opts.seconds, Path(tmp))
            results.append(c)
            print(
                f"{c.model:16s} rows {c.rows:7d}  raw best {c.raw_rows_per_s:9.0f} rows/s "
                f"(batch {c.raw_best_batch})  batch mode {c.batch_rows_per_s:9.0f} rows/s  "
                f"= {c.ratio:.1%} of raw",
                flush=True,
            )
    if opts.json:
        opts.json.write_text(
            json.dumps([{**vars(c), "ratio": round(c.ratio, 4)} for c in results], indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
