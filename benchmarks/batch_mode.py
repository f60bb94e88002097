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
import dataclasses
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.raw_engine import load_engine, random_inputs, timed_calls
from inferd.engines.base import Engine
from inferd.server.batch import BatchJob, run_batch
from inferd.server.batch.summary import Summary


@dataclass(frozen=True)
class Round:
    """One raw-engine run then one batch-mode run: rows per wall second and
    rows per CPU second of this process (all threads)."""

    raw_rows_per_s: float
    raw_rows_per_cpu_s: float
    batch_rows_per_s: float
    batch_rows_per_cpu_s: float
    #: Engine busy time over the batch run's scoring time.
    engine_busy: float

    @property
    def wall_ratio(self) -> float:
        return self.batch_rows_per_s / self.raw_rows_per_s

    @property
    def cpu_ratio(self) -> float:
        return self.batch_rows_per_cpu_s / self.raw_rows_per_cpu_s


@dataclass(frozen=True)
class Comparison:
    model: str
    rows: int
    #: The raw engine's best batch size (of those up to max_batch_size).
    raw_best_batch: int
    rounds: list[Round]

    def median(self, name: str) -> float:
        return float(np.median([getattr(r, name) for r in self.rounds]))


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


def raw_round(engine: Engine, batch: int, seconds: float) -> tuple[float, float]:
    """Back-to-back calls at ``batch`` rows on every slot for ``seconds``:
    rows per wall second and per CPU second."""
    inputs = random_inputs(engine, batch, np.random.default_rng(0))
    engine.infer(inputs)
    wall, cpu = time.perf_counter(), time.process_time()
    calls = len(timed_calls(engine, inputs, seconds))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return calls * batch / wall, calls * batch / max(cpu, 1e-9)


def batch_round(repository: Path, model: str, source: Path, work: Path) -> Summary:
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    job = BatchJob(model, [str(source)], out, repository=repository, key="id", part_rows=4096)
    return asyncio.run(run_batch(job))


def compare(
    repository: Path, model: str, rows: int, rounds: int, seconds: float, work: Path
) -> Comparison:
    """A sweep finds the raw engine's best batch size (up to the model's
    max_batch_size, the largest batch mode runs); then ``rounds`` rounds
    of raw (``seconds`` of back-to-back calls, sustained, not a best window)
    and batch mode, one right after the other."""
    source = work / f"{model}.parquet"
    max_batch = write_rows(repository, model, rows, source)
    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) if b <= max_batch]
    results = []
    engine = load_engine(repository, model)
    try:
        # Best by rows per CPU second: on a shared host the wall rate of a
        # short window says more about the neighbours than the batch size.
        best = max(sizes, key=lambda b: raw_round(engine, b, seconds / 4)[1])
        for _ in range(rounds):
            raw_wall, raw_cpu = raw_round(engine, best, seconds)
            summary = batch_round(repository, model, source, work)
            results.append(
                Round(
                    raw_wall,
                    raw_cpu,
                    summary.rows_per_s,
                    summary.totals["scored"] / max(summary.scoring_cpu_s, 1e-9),
                    summary.engine_busy_fraction or 0.0,
                )
            )
    finally:
        engine.close()
    return Comparison(model, rows, best, results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_mode")
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", nargs="+", default=["dense_reference", "digits_mlp"])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[10000, 200000], help="per model, in order"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0, help="raw engine, per round")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    opts = parser.parse_args(argv)
    rows = opts.rows + [opts.rows[-1]] * (len(opts.model) - len(opts.rows))
    results = []
    with tempfile.TemporaryDirectory(prefix="inferd-batch-bench-") as tmp:
        for model, count in zip(opts.model, rows, strict=False):
            c = compare(opts.model_repository, model, count, opts.rounds, opts.seconds, Path(tmp))
            results.append(c)
            for r in c.rounds:
                print(
                    f"{c.model:16s} raw {r.raw_rows_per_s:9.0f} rows/s "
                    f"{r.raw_rows_per_cpu_s:9.0f} rows/CPU-s (batch {c.raw_best_batch})  "
                    f"batch mode {r.batch_rows_per_s:9.0f} rows/s "
                    f"{r.batch_rows_per_cpu_s:9.0f} rows/CPU-s  "
                    f"ratio wall {r.wall_ratio:6.1%} CPU {r.cpu_ratio:6.1%}  "
                    f"engine busy {r.engine_busy:.1%}",
                    flush=True,
                )
            print(
                f"{c.model:16s} median over {len(c.rounds)} rounds: wall ratio "
                f"{c.median('wall_ratio'):.1%}, CPU ratio {c.median('cpu_ratio'):.1%}, "
                f"engine busy {c.median('engine_busy'):.1%}",
                flush=True,
            )
    if opts.json:
        opts.json.write_text(json.dumps([dataclasses.asdict(c) for c in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
