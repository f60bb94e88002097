"""Filter -> rerank against always-rerank, side by side, on one server.

    python -m benchmarks.filter_rerank [--seconds 5] [--rounds 2] [--concurrency 8]
        [--rows 64]

Builds the demo of server/demo_rerank.py into a temporary repository,
starts one ``inferd serve`` on 127.0.0.1 and runs a closed loop of
``--concurrency`` queries in flight (each ``--rows`` candidates of 32
features) against ``rerank_pipeline`` (cheap filter, then the expensive
model on the rows over the threshold) and ``rerank_all`` (every row to the
expensive model), alternating for ``--rounds`` rounds so drift on a shared
machine hits both. Reports per setting: queries/s, rows reaching the
expensive model (its ModelStatistics), p50/p99 latency, and the CPU the
server and its model processes spent per query; then the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.server_process import ServerProcess  # noqa: E402
from inferd.clients import AsyncInferenceClient  # noqa: E402
from inferd.server.demo_rerank import FEATURES, build_rerank_models  # noqa: E402

SETTINGS = {"filter -> rerank": "rerank_pipeline", "always rerank": "rerank_all"}


@dataclass
class Round:
    queries: int = 0
    seconds: float = 0.0
    expensive_rows: int = 0
    cpu_s: float = 0.0
    latencies: list[float] = field(default_factory=list)


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its child processes (the model processes)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def _rows(client: AsyncInferenceClient, model: str) -> int:
    stats = await client.model_statistics(model)
    return int(stats["model_stats"][0]["inference_count"])


async def measure(
    address: str, pid: int, model: str, query: np.ndarray, concurrency: int, seconds: float
) -> Round:
    result = Round()
    inputs = {"features": query}
    async with AsyncInferenceClient(address) as client:
        # Warm-up: the Python model's and the ONNX models' first batches.
        await asyncio.gather(*(client.infer(model, inputs) for _ in range(concurrency)))
        rows_before = await _rows(client, "rerank_expensive")
        cpu_before = tree_cpu_seconds(pid)
        start = time.perf_counter()
        stop = start + seconds

        async def worker() -> None:
            while (now := time.perf_counter()) < stop:
                await client.infer(model, inputs, timeout=60)
                result.latencies.append(time.perf_counter() - now)
                result.queries += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
        result.cpu_s = tree_cpu_seconds(pid) - cpu_before
        result.expensive_rows = await _rows(client, "rerank_expensive") - rows_before
    return result


def _percentile_ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1e3 if ordered else 0.0


def summarize(rounds: list[Round]) -> dict[str, float]:
    queries = sum(r.queries for r in rounds)
    latencies = [x for r in rounds for x in r.latencies]
    return {
        "qps": statistics.mean(r.queries / r.seconds for r in rounds),
        "rows_per_query": sum(r.expensive_rows for r in rounds) / queries,
        "p50_ms": _percentile_ms(latencies, 0.50),
        "p99_ms": _percentile_ms(latencies, 0.99),
        "cpu_ms_per_query": sum(r.cpu_s for r in rounds) / queries * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per setting and round (max 60)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rows", type=int, default=64, help="candidates per query (max 256)")
    args = parser.parse_args(argv)
    seconds = min(max(args.seconds, 1.0), 60.0)
    rows = min(max(args.rows, 1), 256)
    query = np.random.default_rng(1).standard_normal((rows, FEATURES)).astype(np.float32)
    results: dict[str, list[Round]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        repository = build_rerank_models(Path(tmp) / "models")
        with ServerProcess(repository) as server:
            for number in range(args.rounds):
                for name, model in SETTINGS.items():
                    r = asyncio.run(
                        measure(server.address, server.pid, model, query, args.concurrency, seconds)
                    )
                    results[name].append(r)
                    print(
                        f"round {number + 1} {name:>16}: {r.queries / r.seconds:7.1f} queries/s, "
                        f"{r.expensive_rows / max(r.queries, 1):5.1f} expensive rows/query",
                        flush=True,
                    )
    summary = {name: summarize(runs) for name, runs in results.items()}
    print(
        f"\n{rows} candidates per query, {args.concurrency} queries in flight, {seconds:g} s x "
        f"{args.rounds} round(s) per setting, {os.cpu_count()} CPUs shared by client and server"
    )
    print(
        f"{'setting':>16} {'queries/s':>10} {'rows to expensive/query':>24} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU ms/query':>13}"
    )
    for name, s in summary.items():
        print(
            f"{name:>16} {s['qps']:10.1f} {s['rows_per_query']:24.1f} "
            f"{s['p50_ms']:7.2f} {s['p99_ms']:7.2f} {s['cpu_ms_per_query']:13.2f}"
        )
    a, b = summary["filter -> rerank"], summary["always rerank"]
    rows_ratio = a["rows_per_query"] / b["rows_per_query"]
    print(
        f"{'ratio':>16} {a['qps'] / b['qps']:10.2f} {rows_ratio:24.2f} "
        f"{a['p50_ms'] / b['p50_ms']:7.2f} {a['p99_ms'] / b['p99_ms']:7.2f} "
        f"{a['cpu_ms_per_query'] / b['cpu_ms_per_query']:13.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
