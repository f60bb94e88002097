"""Ceilings the served numbers are compared with.

* ``measure_engine``: the model in-process through ``OnnxEngine`` with the
  engine options the server derives from the same config.pbtxt (threads,
  instance count), at given batch sizes: calls/s and rows/s with no gRPC.

The gRPC-side ceiling (a bare grpc.aio server, no model) is
``benchmarks.bare_server``.

    python -m benchmarks.raw_engine --model-repository R --model M [--batch 1 8 32]
"""

from __future__ import annotations

import argparse
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inferd.engines.base import Engine


@dataclass(frozen=True)
class RawPoint:
    batch: int
    calls_per_s: float
    rows_per_s: float
    ms_per_call: float
    #: Median and 99th percentile of single calls over every window: how much
    #: the engine's own time varies on this host (the admission margin and
    #: the latency budget have to absorb the spread).
    call_p50_ms: float = math.nan
    call_p99_ms: float = math.nan


def load_engine(repository: Path, model: str) -> Engine:
    """The model's highest selected version, with the server's engine options."""
    from inferd.engines.onnx import OnnxEngine
    from inferd.server.repository import ModelRepository, engine_options

    source = ModelRepository(repository).source(model)
    path = source.versions[max(source.versions)]
    return OnnxEngine(path, engine_options(source.config))


def random_inputs(engine: Engine, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for spec in engine.signature.inputs:
        shape = (batch, *(d if d > 0 else 1 for d in spec.shape[1:]))
        out[spec.name] = rng.uniform(0, 1, size=shape).astype(spec.dtype)
    return out


def measure_engine(
    repository: Path,
    model: str,
    batch_sizes: Sequence[int],
    *,
    seconds_per_size: float = 0.5,
    warmup_calls: int = 3,
    windows: int = 3,
) -> list[RawPoint]:
    """Back-to-back ``infer`` calls on ``engine.max_concurrency`` threads (the
    server's execution slots) for each batch size. The time is split into
    ``windows`` and the best window kept: a ceiling should not include the
    moments another process took the core."""
    engine = load_engine(repository, model)
    rng = np.random.default_rng(0)
    points = []
    try:
        for batch in batch_sizes:
            inputs = random_inputs(engine, batch, rng)
            for _ in range(warmup_calls):
                engine.infer(inputs)
            window = seconds_per_size / max(1, windows)
            timed = [timed_calls(engine, inputs, window) for _ in range(max(1, windows))]
            calls = max(len(t) for t in timed)
            each = np.concatenate([np.asarray(t) for t in timed]) * 1e3
            points.append(
                RawPoint(
                    batch,
                    calls / window,
                    calls * batch / window,
                    window / max(1, calls) * 1e3 * engine.max_concurrency,
                    float(np.percentile(each, 50)) if len(each) else math.nan,
                    float(np.percentile(each, 99)) if len(each) else math.nan,
                )
            )
    finally:
        engine.close()
    return points


def timed_calls(engine: Engine, inputs: dict[str, np.ndarray], seconds: float) -> list[float]:
    """Seconds of each call made back to back on every slot for ``seconds``."""
    stop = time.perf_counter() + seconds
    times: list[list[float]] = [[] for _ in range(max(1, engine.max_concurrency))]

    def loop(slot: int) -> None:
        while (start := time.perf_counter()) < stop:
            engine.infer(inputs)
            times[slot].append(time.perf_counter() - start)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(times))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [seconds for slot in times for seconds in slot]


def nearest(points: Sequence[RawPoint], batch: float) -> RawPoint | None:
    """The measured point whose batch size is closest to ``batch``."""
    return min(points, key=lambda p: abs(p.batch - batch), default=None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.raw_engine")
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=1.0, help="per batch size")
    opts = parser.parse_args(argv)
    points = measure_engine(
        opts.model_repository, opts.model, opts.batch, seconds_per_size=opts.seconds
    )
    for point in points:
        print(
            f"batch {point.batch:4d}: {point.calls_per_s:9.0f} calls/s "
            f"{point.rows_per_s:10.0f} rows/s {point.ms_per_call:8.3f} ms/call "
            f"(one call p50 {point.call_p50_ms:.3f} ms, p99 {point.call_p99_ms:.3f} ms)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
