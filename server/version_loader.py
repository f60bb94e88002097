"""Bringing one model version up and down: engine, completed config, batching
options, warm-up and scheduler on the way up; drain and free on the way down.
Blocking (``load``): the model manager calls it from a worker thread."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inferd.engines import Engine, load_engine
from inferd.engines.base import EngineOptions
from inferd.protos import model_config_pb2
from inferd.server.model_io import ModelIO
from inferd.server.model_link import ModelCaller
from inferd.server.model_version import ModelVersion, allowed_roles
from inferd.server.observer import ServerObserver
from inferd.server.python_backend.loading import load_python_model
from inferd.server.repository import (
    PYTHON_PLATFORM,
    ModelSource,
    complete_config,
    engine_options,
    tree_fingerprint,
)
from inferd.server.repository.engine_settings import CPU_PROVIDER
from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.latency import LatencyModel
from inferd.server.scheduler.loop_load import LoopLoad
from inferd.server.scheduler.options import (
    BatchingOptions,
    ignored_triton_options,
    options_from_config,
)
from inferd.server.scheduler.planners import new_latency_model
from inferd.server.scheduler.warmup import (
    choose_intra_op_threads,
    host_cpus,
    synthetic_inputs,
    thread_candidate,
    warm_up,
)
from inferd.server.stats import ModelStats

log = logging.getLogger("inferd.models")


@dataclass(slots=True)
class VersionLoader:
    """The server-wide settings every loaded version gets."""

    observer: ServerObserver
    #: Called when a version's engine turns unhealthy or recovers.
    on_health_change: Callable[[], None]
    default_max_batch_size: int = 64
    engine_timeout_s: float | None = None
    failure_threshold: int = 3
    probe_interval_s: float = 5.0
    #: Runs Python models' BLS requests (the manager's ``ModelLink``).
    model_caller: ModelCaller | None = None
    #: The server's event loop (BLS requests run on it); set before each load.
    loop: asyncio.AbstractEventLoop | None = None
    #: How busy that loop's thread is, for the planners (None: not measured).
    loop_load: LoopLoad | None = None

    def _engine(
        self,
        name: str,
        version: int,
        path: Path,
        platform: str,
        config: model_config_pb2.ModelConfig,
        settings: EngineOptions | None,
    ) -> Engine:
        if platform == PYTHON_PLATFORM:
            return load_python_model(
                name, version, path, config, caller=self.model_caller, loop=self.loop
            )
        assert settings is not None
        return load_engine(platform, path, settings)

    #: Models whose ignored Triton batching options were logged already.
    noted_ignored: set[str] = dataclasses.field(default_factory=set)

    def load(
        self,
        name: str,
        version: int,
        path: Path,
        platform: str,
        config: model_config_pb2.ModelConfig,
        card: dict[str, str],
        labels: dict[str, tuple[str, ...]],
    ) -> ModelVersion:
        settings = (
            None  # a Python model's process reads its own instance settings
            if platform == PYTHON_PLATFORM
            else engine_options(config, default_max_batch_size=self.default_max_batch_size)
        )
        # No thread count in the config: start on one thread, measure a pool at warmup.
        choose_threads = settings is not None and picks_threads(
            platform, config, settings.providers
        )
        if settings is not None and choose_threads:
            settings = dataclasses.replace(settings, intra_op_threads=1)
        engine = self._engine(name, version, path, platform, config, settings)
        try:
            completed = complete_config(
                config, engine.signature, default_max_batch_size=self.default_max_batch_size
            )
            io = ModelIO.from_config(completed, labels)
            options = dataclasses.replace(
                options_from_config(
                    completed,
                    engine.signature.batch_sizes,
                    auto_completed=not config.input and not config.output,
                    default_engine_timeout_s=self.engine_timeout_s,
                ),
                failure_threshold=self.failure_threshold,
                probe_interval_s=self.probe_interval_s,
            )
            ignored = ignored_triton_options(options)
            if ignored and name not in self.noted_ignored:
                self.noted_ignored.add(name)  # once per model, not per version or reload
                log.info(
                    "model '%s' (batching_policy %s) ignores %s",
                    name,
                    options.policy,
                    "; ".join(ignored),
                    extra={"event": "batching_options_ignored", "model": name},
                )
            latency = new_latency_model(options)
            if settings is not None and choose_threads:
                engine = self._choose_threads(
                    name, version, engine, platform, path, settings, io, options
                )
            engine.use_engine_timeout(options.engine_timeout_s)
            if engine.warms_up:
                self._warm_up(name, version, engine, io, options, latency)
        except BaseException:
            engine.close()
            raise
        stats = ModelStats()
        device = "cpu" if settings is None else device_kind(platform, settings)
        observer = self.observer.version(name, version, device)
        probe_inputs = synthetic_inputs(io, options.sizes[0] if io.batched else 1)

        def probe() -> None:
            engine.probe(probe_inputs)

        scheduler = BatchingScheduler(
            engine,
            stats,
            options,
            latency,
            name=name,
            observer=observer,
            probe=probe,
            on_health_change=self.on_health_change,
            loop_load=self.loop_load,
        )
        if self.loop is not None:
            loop = self.loop

            def down(reason: str) -> None:
                loop.call_soon_threadsafe(scheduler.health.set_unhealthy, reason)

            engine.when_down(down)
        return ModelVersion(
            name=name,
            version=version,
            platform=completed.platform or platform,
            config=completed,
            io=io,
            engine=engine,
            scheduler=scheduler,
            stats=stats,
            card=card,
            observer=observer,
            allowed_roles=allowed_roles(completed),
        )

    def _warm_up(
        self,
        name: str,
        version: int,
        engine: Engine,
        io: ModelIO,
        options: BatchingOptions,
        latency: LatencyModel,
    ) -> tuple[int, ...]:
        """Before READY: the first caller must not pay for lazy initialisation,
        and the batcher must know each size's latency before it plans."""
        started = time.perf_counter()
        sizes = warm_up(engine, io, options, latency)
        seconds = time.perf_counter() - started
        # The start-up progress line: warm-up is where a slow start spends its time.
        ranges = size_ranges(sizes)  # short: text lines repeat the fields
        log.info(
            "model '%s' version %d warmed up: batch sizes %s in %.2f s",
            name,
            version,
            ranges,
            seconds,
            extra={
                "event": "model_warmed_up",
                "model": name,
                "version": version,
                "batch_sizes": ranges,
                "seconds": round(seconds, 3),
            },
        )
        return sizes

    def _choose_threads(
        self,
        name: str,
        version: int,
        engine: Engine,
        platform: str,
        path: Path,
        settings: EngineOptions,
        io: ModelIO,
        options: BatchingOptions,
    ) -> Engine:
        """Pick the intra-op thread count the config left open (and log it)."""
        candidate = thread_candidate(host_cpus(), settings.concurrency)
        kept, threads, why = choose_intra_op_threads(
            engine,
            lambda n: load_engine(
                platform,
                path,
                dataclasses.replace(settings, intra_op_threads=n, intra_op_spinning=False),
            ),
            io,
            options,
            candidate,
        )
        log.info(
            "model '%s' version %d: %d intra-op thread(s) per instance (%s); "
            "parameter intra_op_thread_count overrides",
            name,
            version,
            threads,
            why,
            extra={
                "event": "engine_threads",
                "model": name,
                "version": version,
                "intra_op_threads": threads,
                "reason": why,
            },
        )
        return kept


def picks_threads(
    platform: str, config: model_config_pb2.ModelConfig, providers: tuple[str, ...]
) -> bool:
    """Whether the server chooses the intra-op threads: an onnxruntime model
    on the CPU whose config names no ``intra_op_thread_count`` (one that does,
    0 included, gets exactly that)."""
    return (
        platform in ("onnxruntime_onnx", "onnxruntime")
        and "intra_op_thread_count" not in config.parameters
        and all(p == CPU_PROVIDER for p in providers)
    )


def device_kind(platform: str, settings: EngineOptions) -> str:
    """``"gpu"`` when the engine runs on a GPU (TensorRT, or a GPU provider
    first in line), else ``"cpu"``; monitoring prices its time by it."""
    if platform.startswith("tensorrt"):
        return "gpu"
    first = settings.providers[0] if settings.providers else "CPUExecutionProvider"
    return "cpu" if first in ("CPUExecutionProvider", "OpenVINOExecutionProvider") else "gpu"


async def retire(version: ModelVersion) -> None:
    """Drain admitted requests, then free the engine."""
    await version.scheduler.close()
    if version.scheduler.hung:
        # Freeing a session under a running call could crash the process;
        # the engine's memory is leaked until that call returns (if ever).
        log.error(
            "model '%s' version %d: %d engine call(s) still hung; not freeing the engine",
            version.name,
            version.version,
            version.scheduler.hung,
        )
    elif version.engine is not None:
        await asyncio.to_thread(version.engine.close)
    if version.cache is not None:
        version.cache.drop(version)  # after the drain: no answer of it is still coming
    log.info(
        "model '%s' version %d unloaded",
        version.name,
        version.version,
        extra={"event": "model_unloaded", "model": version.name, "version": version.version},
    )


def size_ranges(sizes: tuple[int, ...]) -> str:
    """``1-8, 16, 32`` for (1, 2, ..., 8, 16, 32): runs of consecutive sizes
    collapse, so 64 warmed sizes stay one short line."""
    runs: list[list[int]] = []
    for size in sizes:
        if runs and size == runs[-1][-1] + 1:
            runs[-1].append(size)
        else:
            runs.append([size])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def source_key(source: ModelSource, path: Path) -> str:
    """What a loaded version depends on: its directory's files, the model's
    config and card."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(tree_fingerprint(path.parent).encode())
    digest.update(source.config.SerializeToString(deterministic=True))
    digest.update(repr(sorted(source.card.items())).encode())
    digest.update(repr(sorted(source.labels.items())).encode())
    digest.update(source.platform.encode())
    return digest.hexdigest()
