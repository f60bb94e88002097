"""Rows/s inferd serves to Triton's perf_analyzer against the raw engine's at the
batch size the server ran (issue 24's compute-bound target).

    python -m benchmarks.served_vs_raw [--model dense_reference] [--rows 8]
        [--concurrency 8 16] [--rounds 2] [--interval-ms 3000]

Per round and concurrency: perf_analyzer sends ``--rows``-row requests to
``inferd serve`` on the demo repository; the model's statistics give the rows
per engine batch; then the server sits idle while ``raw_engine.measure_engine``
times the model in process at the rows per batch rounded up; the ratio is
served rows/s over raw rows/s; "engine busy" is the share of the run the engine
spent on batches (merge, run, split). perf_analyzer (C++) takes less of the cores than
a Python load generator, but it still shares them with the server. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.pa_compare import ROOT, run_perf, wait_model_ready
from benchmarks.raw_engine import measure_engine
from benchmarks.server_cpu import free_port
from inferd.clients import InferenceClient


def counts(stats: Mapping[str, Any]) -> tuple[int, int]:
    """(inference count, execution count) of a ModelStatistics answer's first model."""
    model = (stats.get("model_stats") or stats.get("modelStats") or [{}])[0]
    inferences = model.get("inference_count", model.get("inferenceCount", 0))
    executions = model.get("execution_count", model.get("executionCount", 0))
    return int(inferences), int(executions)


def engine_time(stats: Mapping[str, Any]) -> tuple[int, int]:
    """(requests answered, nanoseconds of compute input + infer + output summed
    over them) of a ModelStatistics answer's first model. Each request carries
    its batch's times, so a batch's time counts once per request in it."""
    model = (stats.get("model_stats") or stats.get("modelStats") or [{}])[0]
    inference = model.get("inference_stats") or model.get("inferenceStats") or {}
    requests = int((inference.get("success") or {}).get("count", 0))
    ns = 0
    for snake, camel in _COMPUTE:
        ns += int((inference.get(snake) or inference.get(camel) or {}).get("ns", 0))
    return requests, ns


_COMPUTE = (
    ("compute_input", "computeInput"),
    ("compute_infer", "computeInfer"),
    ("compute_output", "computeOutput"),
)


def engine_busy(
    counts: tuple[tuple[int, int], tuple[int, int]],
    engine: tuple[tuple[int, int], tuple[int, int]],
    rows_s: float,
) -> float:
    """The engine's busy share over a run, from (before, after) readings of
    ``counts`` and ``engine_time``: its batches' time over the run's length
    (rows served over the rows/s perf_analyzer measured)."""
    (rows0, executions0), (rows1, executions1) = counts
    (requests0, ns0), (requests1, ns1) = engine
    requests, rows = requests1 - requests0, rows1 - rows0
    if requests <= 0 or rows <= 0 or rows_s <= 0:
        return float("nan")
    batches_s = (ns1 - ns0) / 1e9 * (executions1 - executions0) / requests
    return batches_s / (rows / rows_s)


def rows_per_batch(before: tuple[int, int], after: tuple[int, int]) -> float:
    executions = after[1] - before[1]
    return (after[0] - before[0]) / executions if executions > 0 else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="dense_reference")
    parser.add_argument("--rows", type=int, default=8, help="rows per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--interval-ms", type=int, default=3000)
    opts = parser.parse_args(argv)
    from inferd.server.cli import default_demo_repository
    from inferd.server.demo_models import build_demo_repository

    repo = Path(build_demo_repository(default_demo_repository()))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferd", "serve", "--model-repository", str(repo),
         "--grpc-port", str(port), "--log-level", "WARNING"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ratios: list[float] = []
    try:
        wait_model_ready(f"127.0.0.1:{port}", proc, opts.model)
        with InferenceClient(f"127.0.0.1:{port}") as client:
            for round_no in range(opts.rounds):
                for c in opts.concurrency:
                    stats = client.model_statistics(opts.model, timeout=10)
                    before, time_before = counts(stats), engine_time(stats)
                    rows_s, p99, _ = run_perf(port, opts.model, c, opts.interval_ms, rows=opts.rows)
                    stats = client.model_statistics(opts.model, timeout=10)
                    after = counts(stats)
                    per_batch = rows_per_batch(before, after)
                    busy = engine_busy((before, after), (time_before, engine_time(stats)), rows_s)
                    batch = max(1, math.ceil(per_batch))  # padded up, as the server runs it
                    raw = measure_engine(repo, opts.model, [batch], seconds_per_size=1.5)[0]
                    ratios.append(rows_s / raw.rows_per_s)
                    print(
                        f"round {round_no + 1} c={c}: served {rows_s:7.0f} rows/s (p99 "
                        f"{p99:.1f} ms, {per_batch:.1f} rows per batch, engine busy "
                        f"{busy:.2f}), raw engine at "
                        f"{batch} rows {raw.rows_per_s:7.0f} rows/s: {ratios[-1]:.2f}",
                        flush=True,
                    )
        print(f"served / raw, median of {len(ratios)}: {statistics.median(ratios):.2f}")
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
