"""GPU scenario: a TensorRT plan served by inferd against the same plan run
raw, by request batch size.

    python -m benchmarks.gpu_scenario [--batch-sizes 1,8,32,64] [--precision fp16]
        [--contexts 2] [--concurrency 16] [--seconds 5] [--results DIR] [--require-gpu]

1. Builds ``dense_reference`` (``server.demo_models``, full size) into a
   TensorRT plan with ``inferd build-engine``'s code: profiles for every size
   up to the largest batch, one copy per execution context.
2. Raw: ``TensorRTEngine.infer`` back to back on ``--contexts`` threads (the
   server's execution slots), per batch size: rows/s and p50/p99 per call.
   This is the ceiling: no gRPC, no codec, no batcher.
3. Served: ``inferd serve`` (a subprocess) on a repository holding the plan,
   ``dynamic_batching`` on; closed-loop load (``benchmarks.loadgen``) with
   ``--concurrency`` requests in flight, each of the batch size, per size:
   rows/s, p50/p99 latency and served / raw.

Writes ``gpu_scenario.json`` and prints a table. Without TensorRT, pycuda or
a GPU it prints ``SKIP: <reason>`` and exits 0 (2 with ``--require-gpu``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = "dense_trt"


@dataclass
class Point:
    batch: int
    raw_rows_per_s: float
    raw_p50_ms: float
    raw_p99_ms: float
    served_rows_per_s: float | None = None
    served_p50_ms: float | None = None
    served_p99_ms: float | None = None
    served_errors: int = 0

    @property
    def ratio(self) -> float | None:
        if self.served_rows_per_s is None or not self.raw_rows_per_s:
            return None
        return self.served_rows_per_s / self.raw_rows_per_s


def gpu_unavailable() -> str | None:
    """Why this scenario cannot run here, or None."""
    import importlib.util

    for module, package in (("tensorrt", "tensorrt"), ("pycuda", "pycuda")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed (pip install 'inferd[gpu]' on a GPU machine)"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA GPU is visible"
    except Exception as exc:
        return f"CUDA could not be initialised: {type(exc).__name__}: {exc}"
    return None


def build(workdir: Path, batches: Sequence[int], precision: str, contexts: int) -> Path:
    import onnx

    from inferd.engines.tensorrt.build import build_plan
    from inferd.engines.tensorrt.build_spec import BuildSpec
    from inferd.engines.tensorrt.profiles import derive_profiles
    from inferd.server.build_engine import ProgressDisplay
    from inferd.server.demo_models import dense_reference_model

    onnx_path = workdir / "dense_reference.onnx"
    onnx.save(dense_reference_model(), onnx_path)
    version = workdir / "repo" / MODEL / "1"
    version.mkdir(parents=True)
    plan = version / "model.plan"
    largest = max(batches)
    build_plan(
        BuildSpec(
            onnx_path=onnx_path,
            plan_path=plan,
            batch_profiles=derive_profiles(range(1, largest + 1)),
            precision=precision,
            contexts=contexts,
        ),
        ProgressDisplay(sys.stderr),
    )
    (version.parent / "config.pbtxt").write_text(
        f"max_batch_size: {largest} dynamic_batching {{ }} "
        f"instance_group {{ count: {contexts} kind: KIND_GPU gpus: [0] }}\n"
    )
    return plan


def measure_raw(plan: Path, batch: int, contexts: int, seconds: float) -> tuple[float, list[float]]:
    """(rows/s, per-call seconds) with ``contexts`` threads calling back to back."""
    from inferd.engines import EngineOptions
    from inferd.engines.tensorrt import TensorRTEngine

    engine = TensorRTEngine(plan, EngineOptions(concurrency=contexts))
    try:
        x = np.random.default_rng(batch).uniform(size=(batch, 1024)).astype(np.float32)
        for _ in range(5):
            engine.infer({"x": x})
        stop = time.perf_counter() + seconds
        times: list[list[float]] = [[] for _ in range(engine.max_concurrency)]

        def loop(slot: int) -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                engine.infer({"x": x})
                times[slot].append(time.perf_counter() - t0)

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(times))]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    finally:
        engine.close()
    calls = [t for per in times for t in per]
    return len(calls) * batch / elapsed, calls


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(repository: Path, log_path: Path, timeout: float = 600.0) -> Iterator[str]:
    """``inferd serve`` on ``repository``; yields its address once the model is ready."""
    from inferd.clients import InferenceClient

    port = _free_port()
    command = [
        sys.executable, "-m", "inferd", "serve", "--model-repository", str(repository),
        "--grpc-port", str(port), "--log-level", "WARNING",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        address = f"127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"inferd exited with {proc.returncode}; see {log_path}")
                with contextlib.suppress(Exception), InferenceClient(address) as client:
                    if client.is_model_ready(MODEL, timeout=1):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{MODEL} not ready after {timeout:.0f} s; see {log_path}")
                time.sleep(0.5)
            yield address
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def measure_served(address: str, batch: int, concurrency: int, seconds: float) -> Any:
    from benchmarks.loadgen import InputSpec, Workload, run_closed

    workload = Workload(
        model=MODEL, inputs=(InputSpec("x", (batch, 1024)),), outputs=("y",), deadline_ms=None
    )
    return run_closed(address, workload, concurrency=concurrency, duration_s=seconds).summary()


def _ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q)) if len(values) else float("nan")


def table(points: Sequence[Point]) -> str:
    lines = [
        f"{'batch':>5} {'raw rows/s':>12} {'raw p99 ms':>10} {'served rows/s':>14} "
        f"{'served p50':>10} {'served p99':>10} {'served/raw':>10}"
    ]
    for p in points:
        served = (
            f"{p.served_rows_per_s:14.0f} {p.served_p50_ms:10.2f} {p.served_p99_ms:10.2f} "
            f"{p.ratio:10.2f}"
            if p.served_rows_per_s is not None and p.ratio is not None
            else f"{'-':>14} {'-':>10} {'-':>10} {'-':>10}"
        )
        lines.append(f"{p.batch:5d} {p.raw_rows_per_s:12.0f} {p.raw_p99_ms:10.2f} {served}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_scenario", description=__doc__)
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16")
    parser.add_argument("--contexts", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16, help="served: requests in flight")
    parser.add_argument("--seconds", type=float, default=5.0, help="per point")
    parser.add_argument("--results", type=Path, help="output folder (default results/gpu-<time>)")
    parser.add_argument("--require-gpu", action="store_true", help="exit 2 instead of skipping")
    parser.add_argument("--raw-only", action="store_true", help="skip the served measurement")
    opts = parser.parse_args(argv)
    try:
        batches = sorted({int(b) for b in opts.batch_sizes.split(",") if b.strip()})
    except ValueError:
        parser.error("--batch-sizes must be comma-separated integers")
    if not batches or batches[0] < 1 or opts.contexts < 1 or opts.seconds <= 0:
        parser.error("batch sizes and --contexts must be >= 1, --seconds > 0")
    if opts.precision == "int8":
        parser.error("int8 needs calibration data; benchmark fp32 or fp16 here")

    reason = gpu_unavailable()
    if reason:
        print(f"SKIP: the GPU scenario needs TensorRT and an NVIDIA GPU: {reason}")
        return 2 if opts.require_gpu else 0

    out = opts.results or ROOT / "results" / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="inferd-gpu-") as tmp:
        work = Path(tmp)
        plan = build(work, batches, opts.precision, opts.contexts)
        for batch in batches:
            rows_per_s, calls = measure_raw(plan, batch, opts.contexts, opts.seconds)
            points.append(Point(batch, rows_per_s, _ms(calls, 50), _ms(calls, 99)))
            print(f"raw batch {batch}: {rows_per_s:.0f} rows/s", file=sys.stderr)
        if not opts.raw_only:
            with serve(work / "repo", out / "inferd.log") as address:
                for point in points:
                    summary = measure_served(address, point.batch, opts.concurrency, opts.seconds)
                    point.served_rows_per_s = summary.rows_per_s
                    point.served_p50_ms = summary.latency_ms.get("p50")
                    point.served_p99_ms = summary.latency_ms.get("p99")
                    point.served_errors = sum(summary.errors.values())
                    print(
                        f"served batch {point.batch}: {summary.rows_per_s:.0f} rows/s",
                        file=sys.stderr,
                    )

    report = {
        "scenario": "gpu",
        "model": "dense_reference",
        "precision": opts.precision,
        "contexts": opts.contexts,
        "concurrency": opts.concurrency,
        "seconds_per_point": opts.seconds,
        "gpu": _gpu_name(),
        "host": os.uname().nodename,
        "points": [{**asdict(p), "served_over_raw": p.ratio} for p in points],
    }
    (out / "gpu_scenario.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(points))
    print(f"results: {out}")
    return 0


def _gpu_name() -> str:
    from inferd.server.gpu import gpu_snapshot

    stats = gpu_snapshot()
    return stats[0].name if stats else "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
