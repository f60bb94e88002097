"""Who scores a batch run's chunks: the model loaded in this process, the way
``inferd serve`` loads it, behind the same data plane and scheduler, so the
answers are the ones the server gives (``LocalScorer``); or a running
server over streaming gRPC (``inferd.server.batch.remote``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inferd.protos.datatypes import NUMPY_DTYPES
from inferd.server.batch.errors import BatchError, ScoringError
from inferd.server.dataplane import DataPlane
from inferd.server.errors import InferdError
from inferd.server.model_io import ModelIO, TensorInfo
from inferd.server.request import InferRequest
from inferd.server.reshape import to_config
from inferd.server.scheduler.dispatch import BatchingScheduler


class Scorer(Protocol):
    io: ModelIO
    #: Rows per inference call the model runs best at (its ``max_batch_size``).
    batch_size: int
    #: Parallel calls that keep the model busy.
    concurrency: int
    #: The model's config parameters (``reject_nan``, ...).
    parameters: dict[str, str]

    def describe(self) -> dict[str, Any]:
        """Name, version, platform and model card, for the manifest."""
        ...

    def engine_busy_s(self) -> float | None:
        """Engine seconds so far, where the scorer can tell (None: remote)."""
        ...

    async def score(self, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]: ...

    async def close(self) -> None: ...


class LocalScorer:
    """One model version from a repository, in this process."""

    def __init__(self, dataplane: DataPlane, model: str, version: str, outputs: Sequence[str]):
        self.dataplane = dataplane
        chosen = dataplane.version(model, version)
        self.version = chosen
        self.io = chosen.io
        self.batch_size = max(1, chosen.io.max_batch_size)
        # One call queued behind each running one keeps every slot busy.
        slots = chosen.engine.max_concurrency if chosen.engine is not None else 1
        self.concurrency = 2 * max(1, slots)
        # Nothing else waits on this loop: a single-slot engine runs on it,
        # with no thread hop between one batch and the next (ensembles have no engine).
        if isinstance(chosen.scheduler, BatchingScheduler):
            chosen.scheduler.run_on_loop()
        self.parameters = {k: v.string_value for k, v in chosen.config.parameters.items()}
        self._outputs = tuple(outputs)

    @classmethod
    async def open(
        cls, repository: Path, model: str, version: str = "", outputs: Sequence[str] = ()
    ) -> LocalScorer:
        from inferd.server.models import ModelManager
        from inferd.server.repository import ModelRepository, RepositoryError
        from inferd.server.settings import ServerConfig

        if not repository.is_dir():
            raise BatchError(f"model repository '{repository}' is not a directory")
        # The server's defaults, so the model loads with the settings `inferd serve` gives it.
        config = ServerConfig(model_repository=repository)
        try:
            repo = ModelRepository(
                repository, allow_links_outside=config.allow_links_outside_repository
            )
        except RepositoryError as exc:
            raise BatchError(str(exc)) from None
        models = ModelManager(
            repo,
            default_max_batch_size=config.default_max_batch_size,
            engine_timeout_s=config.engine_timeout_s,
            failure_threshold=config.engine_failure_threshold,
            probe_interval_s=config.health_probe_interval_s,
        )
        extra = (int(version),) if version.isdigit() else ()
        try:
            await models.load(model, extra_versions=extra)
            scorer = cls(DataPlane(models), model, version, outputs)
        except InferdError as exc:
            await models.close()
            raise BatchError(f"model '{model}': {exc.message}") from None
        if not scorer.io.batched:
            await models.close()
            raise BatchError(f"model '{model}' has no batch dimension (max_batch_size 0)")
        return scorer

    def describe(self) -> dict[str, Any]:
        v = self.version
        return {"name": v.name, "version": v.version_str, "platform": v.platform, "card": v.card}

    def engine_busy_s(self) -> float | None:
        """Seconds the engine spent on batches since the model loaded (over all slots)."""
        batches = self.version.stats.batches.values()
        ns = sum(b.compute_input.ns + b.compute_infer.ns + b.compute_output.ns for b in batches)
        return ns / 1e9

    async def score(self, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        request = InferRequest(inputs=inputs, outputs=self._outputs, rows=rows)
        try:
            answer = await self.dataplane.infer(
                self.version.name, self.version.version_str, lambda _io: request
            )
        except InferdError as exc:
            raise ScoringError(f"model '{self.version.name}' failed: {exc.message}") from None
        return answer.outputs

    async def close(self) -> None:
        await self.dataplane.close()
        await self.dataplane.models.close()


async def score_rows(
    scorer: Scorer,
    inputs: dict[str, np.ndarray],
    rows: int,
    order: Sequence[str],
    batch_size: int,
    calls: asyncio.Semaphore,
) -> dict[str, np.ndarray]:
    """``rows`` rows of ``inputs`` through the model in chunks of ``batch_size``
    (at most ``calls`` at once): the outputs in ``order``, in the config's shapes."""
    io = scorer.io
    if rows == 0:
        return {n: empty_output(io.outputs[n]) for n in order}

    async def chunk(start: int) -> dict[str, np.ndarray]:
        stop = min(start + batch_size, rows)
        async with calls:
            return await scorer.score({n: a[start:stop] for n, a in inputs.items()}, stop - start)

    tasks = [asyncio.ensure_future(chunk(s)) for s in range(0, rows, batch_size)]
    try:
        answers = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
    return {
        n: to_config(np.concatenate([a[n] for a in answers]), io.outputs[n], io.batched)
        for n in order
    }


def empty_output(info: TensorInfo) -> np.ndarray:
    """No rows of an output (a part whose every row was set aside)."""
    return np.zeros((0, *(max(d, 1) for d in info.shape[1:])), NUMPY_DTYPES[info.datatype])
