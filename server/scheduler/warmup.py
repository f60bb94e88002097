"""Warmup: run the engine at every batch size the scheduler may pick before
the model reports READY, and seed the latency model with what it measured."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from inferd.engines import Engine
from inferd.protos.datatypes import NUMPY_DTYPES
from inferd.server.model_io import ModelIO
from inferd.server.reshape import to_model
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.options import BatchingOptions


def synthetic_inputs(io: ModelIO, rows: int) -> dict[str, np.ndarray]:
    """Zero inputs of ``rows`` rows (variable dims become 1), in the shape
    the model sees (after the config's reshape)."""
    inputs: dict[str, np.ndarray] = {}
    for info in io.inputs.values():
        shape = tuple(1 if d < 0 else d for d in info.shape)
        if io.batched:
            shape = (rows, *shape[1:])
        if info.datatype == "BYTES":
            array = np.empty(shape, dtype=object)
            array.fill(b"")
        else:
            array = np.zeros(shape, dtype=NUMPY_DTYPES[info.datatype])
        inputs[info.name] = to_model(array, info, io.batched)
    return inputs


def warm_up(
    engine: Engine, io: ModelIO, options: BatchingOptions, latency: LatencyModel
) -> tuple[int, ...]:
    """One untimed run (lazy initialisation) and ``options.warmup_rounds``
    timed runs per size; returns the sizes warmed. Raises what the engine
    raises: a model that cannot run its own batch sizes must not report READY."""
    sizes = tuple(options.warmup_sizes()) if io.batched else (1,)
    for size in sizes:
        inputs = synthetic_inputs(io, size)
        engine.infer(inputs)
        samples = []
        for _ in range(options.warmup_rounds):
            start = time.perf_counter()
            engine.infer(inputs)
            samples.append(time.perf_counter() - start)
        latency.seed(size, samples)
    return sizes


#: A pool of intra-op threads is kept only when it runs the largest batch at
#: least this much faster than one thread: every call wakes the pool, which
#: costs CPU per request even where it saves time (docs/experiments/engine-threads.md).
THREADS_MIN_SPEEDUP = 1.3
#: Most intra-op threads per instance tried at warmup.
MAX_AUTO_THREADS = 8
#: CPUs left to the event loop thread, the busiest of the request path: a
#: pool that competes with it for a core costs more CPU per request than it
#: saves (on 2 cores, dense_reference: +18%, docs/experiments/engine-threads.md).
LOOP_CPUS = 1


def host_cpus() -> int:
    """CPUs this process may run on (its affinity, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def thread_candidate(cpus: int, instances: int) -> int:
    """The intra-op pool worth trying against one thread: the host's CPUs
    but the event loop's, shared among the model's instances (1: nothing to
    try)."""
    return max(1, min(MAX_AUTO_THREADS, (cpus - LOOP_CPUS) // max(1, instances)))


def median_seconds(engine: Engine, inputs: dict[str, np.ndarray], rounds: int) -> float:
    engine.infer(inputs)  # lazy initialisation is not the pool's cost
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        engine.infer(inputs)
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def choose_intra_op_threads(
    engine: Engine,
    load: Callable[[int], Engine],
    io: ModelIO,
    options: BatchingOptions,
    candidate: int,
) -> tuple[Engine, int, str]:
    """For a model whose config names no intra-op thread count: ``engine``
    runs on one thread; time the largest batch size on it and on an engine
    ``load``-ed with ``candidate`` threads, and keep the faster only if it is
    ``THREADS_MIN_SPEEDUP`` times faster (the other is closed). Returns the
    engine kept, its thread count and why, for the log."""
    if candidate <= 1:
        return engine, 1, f"{host_cpus()} CPU(s) for {engine.max_concurrency} instance(s)"
    size = max(options.warmup_sizes()) if io.batched else 1
    inputs = synthetic_inputs(io, size)
    rounds = max(3, options.warmup_rounds)
    one = median_seconds(engine, inputs, rounds)
    pooled_engine = load(candidate)
    try:
        pooled = median_seconds(pooled_engine, inputs, rounds)
    except BaseException:
        pooled_engine.close()
        raise
    measured = (
        f"batch of {size}: {one * 1e3:.3f} ms on 1 thread, {pooled * 1e3:.3f} ms on {candidate}"
    )
    if pooled * THREADS_MIN_SPEEDUP <= one:
        engine.close()
        return pooled_engine, candidate, measured
    pooled_engine.close()
    return engine, 1, measured
