"""Building an ensemble version: its plan checked on its own and against the
composing models as loaded, its IO from its config, its scheduler. Runs on
the event loop (nothing to load from disk), after the composing models."""

from __future__ import annotations

import contextlib
import contextvars
from typing import TYPE_CHECKING

from inferd.protos import model_config_pb2
from inferd.server.ensemble.checks import StepIO, check_steps
from inferd.server.ensemble.link import StepLink
from inferd.server.ensemble.plan import ENSEMBLE_PLATFORM, build_plan, composing_models
from inferd.server.ensemble.scheduler import EnsembleScheduler
from inferd.server.errors import InferdError
from inferd.server.model_io import ModelIO
from inferd.server.model_version import ModelVersion, allowed_roles
from inferd.server.observer import VersionObserver
from inferd.server.repository.errors import RepositoryError
from inferd.server.stats import ModelStats

if TYPE_CHECKING:
    from inferd.server.models import ModelManager

#: Models whose load is under way in this task (an ensemble loading its
#: composing models), so ensembles naming each other fail instead of waiting.
_LOADING: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "inferd_loading", default=frozenset()
)


async def load_composing(models: ModelManager, config: model_config_pb2.ModelConfig) -> None:
    """Load an ensemble's composing models that are not ready yet (as Triton
    does, in every control mode); a failure shows in the ensemble's checks."""
    loading = _LOADING.get() | {config.name}
    index = set(models.repository.index())
    for model in composing_models(config):
        if model in loading or model not in index or models.ready_versions(model):
            continue
        token = _LOADING.set(loading)
        try:
            with contextlib.suppress(InferdError):
                await models.load(model)
        finally:
            _LOADING.reset(token)


def load_ensemble(
    name: str,
    version: int,
    config: model_config_pb2.ModelConfig,
    card: dict[str, str],
    observer: VersionObserver,
    link: StepLink,
    step_io: StepIO,
) -> ModelVersion:
    """Raises ``RepositoryError`` with the reason the ensemble cannot load."""
    plan = build_plan(config)
    reshaped = [t.name for t in config.input if t.HasField("reshape")]
    reshaped += [t.name for t in config.output if t.HasField("reshape")]
    if reshaped:
        raise RepositoryError(
            f"ensemble '{name}': tensor(s) {reshaped} have a reshape; ensembles take and "
            "return tensors as their steps do"
        )
    io = ModelIO.from_config(config)
    check_steps(plan, io, step_io)
    stats = ModelStats()
    return ModelVersion(
        name=name,
        version=version,
        platform=ENSEMBLE_PLATFORM,
        config=config,
        io=io,
        engine=None,
        scheduler=EnsembleScheduler(plan, link, stats),
        stats=stats,
        card=card,
        observer=observer,
        allowed_roles=allowed_roles(config),
    )
