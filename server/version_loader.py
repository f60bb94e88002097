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

from inferd.engines import load_engine
from inferd.protos import model_config_pb2
from inferd.server.model_io import ModelIO
from inferd.server.model_version import ModelVersion, allowed_roles
from inferd.server.observer import ServerObserver
from inferd.server.repository import ModelSource, complete_config, engine_options, tree_fingerprint
from inferd.server.scheduler.dispatch import BatchingScheduler
from inferd.server.scheduler.options import ignored_triton_options, options_from_config
from inferd.server.scheduler.planners import new_latency_model
from inferd.server.scheduler.warmup import synthetic_inputs, warm_up
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
        settings = engine_options(config, default_max_batch_size=self.default_max_batch_size)
        engine = load_engine(platform, path, settings)
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
            # Before READY: the first caller must not pay for lazy initialisation,
            # and the batcher must know each size's latency before it plans.
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
        except BaseException:
            engine.close()
            raise
        stats = ModelStats()
        observer = self.observer.version(name, version)
        probe_inputs = synthetic_inputs(io, options.sizes[0] if io.batched else 1)

        def probe() -> object:
            return engine.infer(probe_inputs)

        return ModelVersion(
            name=name,
            version=version,
            platform=completed.platform or platform,
            config=completed,
            io=io,
            engine=engine,
            scheduler=BatchingScheduler(
                engine,
                stats,
                options,
                latency,
                name=name,
                observer=observer,
                probe=probe,
                on_health_change=self.on_health_change,
            ),
            stats=stats,
            card=card,
            observer=observer,
            allowed_roles=allowed_roles(completed),
        )


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
    else:
        await asyncio.to_thread(version.engine.close)
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
