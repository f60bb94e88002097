"""The response cache on a Zipf-distributed repeat trace: throughput and p99
with and without the cache, side by side.

    python -m benchmarks.response_cache [--keys 2000] [--zipf 1.1] [--seconds 5]
        [--rounds 3] [--concurrency 8] [--cache-mib 64] [--hidden 768] [--layers 4]

One ``inferd serve`` (127.0.0.1) holds two copies of one ONNX MLP, ``plain``
and ``cached`` (``response_cache { enable: true }``), both dynamically batched.
Requests draw one of ``--keys`` distinct inputs (one row each) with Zipf
probabilities (key k has weight 1/k^s); both models see the same sequence,
each from its own cursor that carries over between rounds. Each round runs the
two in turn under the same closed loop (``--concurrency`` requests in flight,
one asyncio client), alternating which goes first, so host drift hits both.
Reports per model the median throughput over the rounds, the p99 of every
latency, the server CPU per request, and the cache's hit ratio in the measured
windows (from ModelStatistics).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.server_cpu import Result, cpu_seconds  # noqa: E402
from benchmarks.server_process import ServerProcess  # noqa: E402
from inferd.clients import AsyncInferenceClient, InferenceClient  # noqa: E402

WIDTH = 64
MODELS = ("plain", "cached")
CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: 16
input {{ name: "x" data_type: TYPE_FP32 dims: [ {width} ] }}
output {{ name: "y" data_type: TYPE_FP32 dims: [ {width} ] }}
dynamic_batching {{ }}
{extra}
"""


def mlp(path: Path, hidden: int, layers: int, seed: int = 0) -> None:
    """x [batch, WIDTH] -> ``layers`` dense+tanh layers of ``hidden`` -> y [batch, WIDTH]."""
    rng = np.random.default_rng(seed)
    dims = [WIDTH, *([hidden] * layers), WIDTH]
    nodes, inits, current = [], [], "x"
    for i, (n_in, n_out) in enumerate(itertools.pairwise(dims)):
        weight = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        out = "y" if i == len(dims) - 2 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [out]))
        current = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


def build_repository(root: Path, hidden: int, layers: int) -> Path:
    for name in MODELS:
        mlp(root / name / "1" / "model.onnx", hidden, layers)
        extra = "response_cache { enable: true }" if name == "cached" else ""
        (root / name / "config.pbtxt").write_text(
            CONFIG.format(name=name, width=WIDTH, extra=extra)
        )
    return root


def zipf_trace(keys: int, exponent: float, length: int, seed: int = 1) -> np.ndarray:
    """Key indices drawn with probability proportional to 1/k^exponent, k = 1..keys."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, keys + 1) ** exponent
    return rng.choice(keys, size=length, p=weights / weights.sum())


def _cache_counts(address: str, model: str) -> tuple[int, int]:
    with InferenceClient(address) as client:
        (stats,) = client.model_statistics(model, timeout=10)["model_stats"]
    inference = stats["inference_stats"]
    return int(inference["cache_hit"].get("count", 0)), int(inference["cache_miss"].get("count", 0))


async def closed_loop(
    address: str,
    model: str,
    inputs: list[np.ndarray],
    cursor: Iterator[int],
    concurrency: int,
    seconds: float,
    pid: int,
) -> Result:
    result = Result()
    async with AsyncInferenceClient(address) as client:
        cpu = cpu_seconds(pid)
        start = time.perf_counter()
        stop = start + seconds

        async def worker() -> None:
            while (now := time.perf_counter()) < stop:
                await client.infer(model, {"x": inputs[next(cursor)]})
                result.latencies.append(time.perf_counter() - now)
                result.requests += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
        result.cpu_s = cpu_seconds(pid) - cpu
    return result


def _cycle(trace: np.ndarray) -> Iterator[int]:
    while True:
        yield from (int(k) for k in trace)


def run(opts: argparse.Namespace) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((1, WIDTH)).astype(np.float32) for _ in range(opts.keys)]
    trace = zipf_trace(opts.keys, opts.zipf, 200_000)
    cursors = {name: _cycle(trace) for name in MODELS}
    results: dict[str, list[Result]] = {name: [] for name in MODELS}
    hits = {name: [0, 0] for name in MODELS}
    with tempfile.TemporaryDirectory(prefix="inferd-cache-bench-") as tmp:
        repository = build_repository(Path(tmp) / "models", opts.hidden, opts.layers)
        cache_bytes = str(opts.cache_mib << 20)
        with ServerProcess(repository, "--response-cache-bytes", cache_bytes) as server:
            for round_ in range(opts.rounds):
                order = MODELS if round_ % 2 == 0 else MODELS[::-1]
                for name in order:
                    before = _cache_counts(server.address, name)
                    result = asyncio.run(
                        closed_loop(
                            server.address,
                            name,
                            inputs,
                            cursors[name],
                            opts.concurrency,
                            opts.seconds,
                            server.pid,
                        )
                    )
                    after = _cache_counts(server.address, name)
                    hits[name][0] += after[0] - before[0]
                    hits[name][1] += after[1] - before[1]
                    results[name].append(result)
                    print(
                        f"round {round_ + 1} {name:>6}: {result.rate:8.0f} req/s  "
                        f"p99 {result.percentile_ms(0.99):6.2f} ms  "
                        f"cpu {result.cpu_us_per_request:5.0f} µs/req",
                        flush=True,
                    )
    summary: dict[str, dict[str, float]] = {}
    for name in MODELS:
        pooled = Result(latencies=[t for r in results[name] for t in r.latencies])
        hit, miss = hits[name]
        summary[name] = {
            "rate": statistics.median(r.rate for r in results[name]),
            "p50_ms": pooled.percentile_ms(0.50),
            "p99_ms": pooled.percentile_ms(0.99),
            "cpu_us": statistics.median(r.cpu_us_per_request for r in results[name]),
            "hit_ratio": hit / (hit + miss) if hit + miss else 0.0,
        }
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--keys", type=int, default=2000, help="distinct inputs in the trace")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent s (weight 1/k^s)")
    p.add_argument("--seconds", type=float, default=5.0, help="per model and round (<= 60)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--cache-mib", type=int, default=64, help="--response-cache-bytes, MiB")
    p.add_argument("--hidden", type=int, default=768, help="width of the MLP's hidden layers")
    p.add_argument("--layers", type=int, default=4, help="hidden layers of the MLP")
    opts = p.parse_args(argv)
    if not 0 < opts.seconds <= 60 or opts.rounds < 1 or opts.keys < 1:
        p.error("--seconds must be in (0, 60], --rounds and --keys at least 1")
    summary = run(opts)
    print()
    print(f"{'model':>8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu µs':>8} {'hits':>6}")
    for name, s in summary.items():
        print(
            f"{name:>8} {s['rate']:9.0f} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f} "
            f"{s['cpu_us']:8.0f} {s['hit_ratio']:6.1%}"
        )
    plain, cached = summary["plain"], summary["cached"]
    print(
        f"cached / plain: throughput {cached['rate'] / plain['rate']:.2f}x, "
        f"p99 {cached['p99_ms'] / plain['p99_ms']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
