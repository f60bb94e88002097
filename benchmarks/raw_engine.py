"""Ceilings the served numbers are compared with.

* ``measure_engine``: the model in-process through ``OnnxEngine`` with the
  engine options the server derives from the same config.pbtxt (threads,
  instance count), at given batch sizes: calls/s and rows/s with no gRPC.
* ``python -m benchmarks.raw_engine bare-grpc --model-repository R --model M
  --port P``: the smallest grpc.aio ModelInfer server that runs the same
  engine inline (no scheduler, no validation, no batching): what Python
  grpc.aio itself can serve, so inferd's own overhead can be read off.
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.loadgen import run_loop
from engines.base import Engine


@dataclass(frozen=True)
class RawPoint:
    batch: int
    calls_per_s: float
    rows_per_s: float
    ms_per_call: float


def load_engine(repository: Path, model: str) -> Engine:
    """The model's highest selected version, with the server's engine options."""
    from engines.onnx import OnnxEngine
    from server.repository import ModelRepository, engine_options

    source = ModelRepository(repository).source(model)
    path = source.versions[max(source.versions)]
    return OnnxEngine(path, engine_options(source.config))


def _inputs(engine: Engine, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
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
) -> list[RawPoint]:
    """Back-to-back ``infer`` calls on ``engine.max_concurrency`` threads (the
    server's execution slots) for each batch size."""
    engine = load_engine(repository, model)
    rng = np.random.default_rng(0)
    points = []
    try:
        for batch in batch_sizes:
            inputs = _inputs(engine, batch, rng)
            for _ in range(warmup_calls):
                engine.infer(inputs)
            calls = _timed_calls(engine, inputs, seconds_per_size)
            points.append(
                RawPoint(
                    batch,
                    calls / seconds_per_size,
                    calls * batch / seconds_per_size,
                    seconds_per_size / max(1, calls) * 1e3 * engine.max_concurrency,
                )
            )
    finally:
        engine.close()
    return points


def _timed_calls(engine: Engine, inputs: dict[str, np.ndarray], seconds: float) -> int:
    stop = time.perf_counter() + seconds
    counts = [0] * max(1, engine.max_concurrency)

    def loop(slot: int) -> None:
        while time.perf_counter() < stop:
            engine.infer(inputs)
            counts[slot] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(counts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def nearest(points: Sequence[RawPoint], batch: float) -> RawPoint | None:
    """The measured point whose batch size is closest to ``batch``."""
    return min(points, key=lambda p: abs(p.batch - batch), default=None)


# --------------------------------------------------------------------------- bare grpc.aio


async def _serve_bare(repository: Path, model: str, host: str, port: int) -> None:
    import grpc
    import grpc.aio

    from protos import grpc_service_pb2 as pb

    engine = load_engine(repository, model)
    dtypes = {s.name: s.dtype for s in engine.signature.inputs}

    async def infer(request: Any, context: Any) -> Any:
        inputs = {
            t.name: np.frombuffer(raw, dtype=dtypes[t.name]).reshape(tuple(t.shape))
            for t, raw in zip(request.inputs, request.raw_input_contents, strict=True)
        }
        outputs = engine.infer(inputs)  # inline: the loop is the only thread
        reply = pb.ModelInferResponse(model_name=model, model_version="1", id=request.id)
        for name, array in outputs.items():
            reply.outputs.add(name=name, datatype="FP32", shape=list(array.shape))
            reply.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
        return reply

    async def ready(request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=True)

    handlers = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            infer, pb.ModelInferRequest.FromString, pb.ModelInferResponse.SerializeToString
        ),
        "ServerReady": grpc.unary_unary_rpc_method_handler(
            ready, pb.ServerReadyRequest.FromString, pb.ServerReadyResponse.SerializeToString
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers),)
    )
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.raw_engine")
    sub = parser.add_subparsers(dest="command", required=True)
    bare = sub.add_parser("bare-grpc", help="serve ModelInfer from a bare grpc.aio server")
    measure = sub.add_parser("measure", help="print the in-process engine ceiling")
    for p in (bare, measure):
        p.add_argument("--model-repository", type=Path, required=True)
        p.add_argument("--model", required=True)
    bare.add_argument("--host", default="127.0.0.1")
    bare.add_argument("--port", type=int, required=True)
    measure.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    opts = parser.parse_args(argv)
    if opts.command == "measure":
        for point in measure_engine(opts.model_repository, opts.model, opts.batch):
            print(
                f"batch {point.batch:4d}: {point.calls_per_s:9.0f} calls/s "
                f"{point.rows_per_s:10.0f} rows/s"
            )
        return 0
    run_loop(_serve_bare(opts.model_repository, opts.model, opts.host, opts.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
