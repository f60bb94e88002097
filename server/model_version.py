"""A loaded model version and what describes it: its state, the roles
allowed to use it, and the report of a (re)load."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from inferd.engines import Engine
from inferd.protos import model_config_pb2
from inferd.server.model_io import ModelIO
from inferd.server.observer import VersionObserver
from inferd.server.scheduler.base import Scheduler
from inferd.server.stats import ModelStats

if TYPE_CHECKING:
    from inferd.server.response_cache import ResponseCache

#: config.pbtxt parameter: comma-separated roles allowed to use the model
#: (checked when authentication is on; see server.auth).
ALLOWED_ROLES_PARAM = "allowed_roles"


class State(str, enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True)
class ModelVersion:
    name: str
    version: int
    platform: str
    config: model_config_pb2.ModelConfig
    io: ModelIO
    #: None for a model that runs no engine of its own (an ensemble).
    engine: Engine | None
    scheduler: Scheduler
    stats: ModelStats
    card: dict[str, str] = field(default_factory=dict)
    #: Digest of what this version was loaded from (files, config, card); a
    #: reload keeps the loaded version while it is unchanged.
    source_key: str = ""
    #: Telemetry for this version (request and scheduler events).
    observer: VersionObserver = field(default_factory=VersionObserver)
    #: Roles allowed to use this model; empty: any caller the method allows.
    allowed_roles: frozenset[str] = frozenset()
    #: The response cache, when the config enables it and the server has one.
    cache: ResponseCache | None = None

    @property
    def version_str(self) -> str:
        return str(self.version)

    @property
    def healthy(self) -> bool:
        return self.scheduler.healthy


def allowed_roles(config: model_config_pb2.ModelConfig) -> frozenset[str]:
    if ALLOWED_ROLES_PARAM not in config.parameters:
        return frozenset()
    text = config.parameters[ALLOWED_ROLES_PARAM].string_value
    return frozenset(r.strip() for r in text.split(",") if r.strip())


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What one (re)load did: the ready versions before and after, which were
    loaded afresh, and the versions that failed with their reasons."""

    name: str
    before: tuple[int, ...]
    after: tuple[int, ...]
    loaded: tuple[int, ...]
    failed: dict[int, str]
