"""Warmup: run the engine at every batch size the scheduler may pick before
the model reports READY, and seed the latency model with what it measured."""

from __future__ import annotations

import time

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
