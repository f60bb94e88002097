"""The model manager: which versions of which models are loaded, (re)loading
and unloading them, resolving requests to them, and readiness.

The manager is the router's source of truth: it resolves a (name, version)
pair from a request to a loaded version, looking names up in the repository
index, never building paths from them. A version itself is
``server.model_version``; bringing one up and down is ``server.version_loader``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from inferd.engines import EngineError
from inferd.server.ensemble.loader import load_composing, load_ensemble
from inferd.server.ensemble.plan import ENSEMBLE_PLATFORM, Step
from inferd.server.errors import FailedPrecondition, InferdError, NotFound, Unavailable
from inferd.server.model_io import ModelIO
from inferd.server.model_link import ModelLink
from inferd.server.model_version import LoadReport, ModelVersion, State
from inferd.server.observer import ServerObserver
from inferd.server.repository import ModelRepository, ModelSource, RepositoryError
from inferd.server.response_cache import ResponseCache
from inferd.server.scheduler.loop_load import LoopLoad
from inferd.server.version_loader import VersionLoader, retire, source_key

log = logging.getLogger("inferd.models")

#: Longest name echoed back in an error; request names are untrusted.
_NAME_ECHO = 80
#: A requested version: decimal digits, as the repository's version directories.
_VERSION = re.compile(r"[0-9]{1,19}", re.ASCII)

#: Versions of a model to keep loaded besides those its version policy picks
#: (the lifecycle state's champion, challenger and staged versions).
Pins = Callable[[str], Collection[int]]


def _echo(name: str) -> str:
    return name if len(name) <= _NAME_ECHO else name[:_NAME_ECHO] + "..."


@dataclass(slots=True)
class _Entry:
    """Everything known about one model name."""

    ready: dict[int, ModelVersion] = field(default_factory=dict)
    state: State = State.UNAVAILABLE
    reason: str = ""
    #: Versions that failed, with the reason, for RepositoryIndex.
    failed: dict[int, str] = field(default_factory=dict)
    #: False once unloaded on request: it no longer counts against ServerReady.
    wanted: bool = True
    #: Versions the version policy picks; the default (unversioned) version is
    #: the highest ready one of these, so a version loaded only because the
    #: lifecycle state pins it (a staged challenger) never takes traffic by itself.
    policy: frozenset[int] = frozenset()
    #: The version unversioned requests get, kept with ``ready`` (hot path).
    default: ModelVersion | None = None


class ModelManager:
    def __init__(
        self,
        repository: ModelRepository,
        *,
        default_max_batch_size: int = 64,
        pins: Pins | None = None,
        observer: ServerObserver | None = None,
        engine_timeout_s: float | None = None,
        failure_threshold: int = 3,
        probe_interval_s: float = 5.0,
        strict_readiness: bool = True,
        response_cache: ResponseCache | None = None,
        loop_load: LoopLoad | None = None,
    ) -> None:
        self.repository = repository
        #: Shared by the versions whose config enables it (``response_cache``).
        self.response_cache = response_cache
        #: Triton's --strict-readiness: ServerReady wants every model ready
        #: (True) or only the start-up load finished (False).
        self.strict_readiness = strict_readiness
        #: The start-up load has finished (``mark_started``).
        self.started = False
        self.observer = observer or ServerObserver()
        #: Versions to keep loaded besides the policy's (set by the lifecycle layer).
        self.pins: Pins = pins or _no_pins
        #: Ensemble steps and Python models' BLS calls reach other models
        #: through this; the data plane binds it (whenever it is built).
        self.link = ModelLink()
        self._loader = VersionLoader(
            self.observer,
            self._notify,
            default_max_batch_size=default_max_batch_size,
            engine_timeout_s=engine_timeout_s,
            failure_threshold=failure_threshold,
            probe_interval_s=probe_interval_s,
            model_caller=self.link.call_model,
            loop_load=loop_load,
        )
        self._listeners: list[Callable[[], None]] = []
        self._models: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (on the event loop) whenever a model's readiness
        may have changed: loaded, failed, unloaded, unhealthy, recovered."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("model state listener failed")

    # -- lifecycle -------------------------------------------------------------------------

    def expect(self, names: Iterable[str]) -> None:
        """Mark models about to be loaded as LOADING, so ServerReady stays false
        until they are (an empty manager would count as all ready)."""
        for name in names:
            self._models.setdefault(name, _Entry(state=State.LOADING))

    async def load_all(self) -> None:
        """Load every model in the repository; one that fails leaves the others
        serving (its reason shows in RepositoryIndex)."""
        for name in self.repository.index():
            # A failure is already logged and recorded on the model's entry.
            with contextlib.suppress(InferdError):
                await self.load(name)

    async def load(self, name: str, extra_versions: Collection[int] = ()) -> LoadReport:
        """(Re)load the versions the model's policy selects, plus the pinned
        ones and ``extra_versions``. New or changed versions load and warm up
        beside the serving ones, then the set switches atomically; versions
        no longer wanted drain their admitted requests, then unload. Versions
        whose files and config are unchanged stay loaded as they are.

        A failure never replaces a serving version: when any version fails,
        every version serving before keeps serving (a serving version whose
        reload failed keeps its loaded copy), and under the ``latest`` policy
        older versions stand in, newest first, for failed ones when fewer
        would serve than the policy wants (a broken newest version after a
        restart). Raises FailedPrecondition when the model has no ready
        version afterwards, naming each failed version (or the repository's
        reason); partial failures are in the report (and RepositoryIndex)."""
        if name not in self.repository.index():
            raise NotFound(f"model '{_echo(name)}' is not in the repository")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            entry = self._models.setdefault(name, _Entry())
            entry.wanted = True
            old = dict(entry.ready)
            if not entry.ready:
                entry.state = State.LOADING
            wanted_extra = {v for v in (*self.pins(name), *extra_versions) if v > 0}
            try:
                source = await asyncio.to_thread(self.repository.source, name, wanted_extra)
            except RepositoryError as exc:
                entry.state = State.UNAVAILABLE if not entry.ready else entry.state
                entry.reason = str(exc)
                log.error(
                    "model load failed: %s",
                    exc,
                    extra={"event": "model_load_failed", "model": name, "reason": str(exc)},
                )
                self.observer.on_load_failed(name)
                self.observer.on_model_state(name, len(entry.ready))
                self._notify()
                raise FailedPrecondition(str(exc)) from None
            if source.platform == ENSEMBLE_PLATFORM:
                await load_composing(self, source.config)
            loaded: dict[int, ModelVersion] = {}
            fresh: list[int] = []
            failed: dict[int, str] = {
                v: f"version {v} of model '{name}' is not in the repository"
                for v in sorted(wanted_extra - source.versions.keys())
            }
            for version, path in sorted(source.versions.items()):
                key = await asyncio.to_thread(source_key, source, path)
                current = old.get(version)
                if current is not None and current.source_key == key:
                    loaded[version] = current
                    continue
                result = await self._load_version(source, version, path, key)
                if isinstance(result, str):
                    failed[version] = result
                else:
                    loaded[version] = result
                    fresh.append(version)
            if failed:
                # Keep what serves: nothing is retired because of a failed load.
                loaded = {**old, **{v: m for v, m in loaded.items() if v not in failed}}
            policy = set(source.policy_versions)
            # A broken newest version must not take the model down where
            # nothing older is serving (a restart): older versions stand in,
            # newest first, for those of the latest policy that failed.
            short = source.latest_count - len(policy & loaded.keys())
            for version, path in source.fallbacks.items():
                if short <= 0:
                    break
                if version not in loaded:
                    key = await asyncio.to_thread(source_key, source, path)
                    result = await self._load_version(source, version, path, key)
                    if isinstance(result, str):
                        failed[version] = result
                        continue
                    loaded[version] = result
                    fresh.append(version)
                policy.add(version)
                short -= 1
            entry.failed = failed
            if not loaded:
                entry.state = State.UNAVAILABLE
                entry.reason = (
                    "; ".join(f"version {v}: {why}" for v, why in sorted(failed.items()))
                    or "no loadable version"
                )
                self.observer.on_model_state(name, 0)
                self._notify()
                raise FailedPrecondition(f"model '{name}' failed to load: {entry.reason}")
            entry.policy = frozenset(policy)
            preferred = [v for v in loaded if v in entry.policy]
            entry.default = loaded[max(preferred or loaded)]
            entry.ready = loaded  # atomic switch: the next lookup sees the new set
            entry.state = State.READY
            entry.reason = ""
            self.observer.on_model_state(name, len(loaded))
            log.info(
                "model '%s' ready, versions %s",
                name,
                sorted(loaded),
                extra={"event": "model_loaded", "model": name, "versions": sorted(loaded)},
            )
        self._notify()
        for stale in old.values():
            if loaded.get(stale.version) is not stale:
                await retire(stale)
        return LoadReport(
            name=name,
            before=tuple(sorted(old)),
            after=tuple(sorted(loaded)),
            loaded=tuple(fresh),
            failed=failed,
        )

    async def _load_version(
        self, source: ModelSource, version: int, path: Path, key: str
    ) -> ModelVersion | str:
        """Load and warm one version; on failure the reason (logged here)."""
        name = source.name
        self._loader.loop = asyncio.get_running_loop()
        try:
            if source.platform == ENSEMBLE_PLATFORM:
                observer = self.observer.version(name, version)
                loaded = load_ensemble(
                    name, version, source.config, source.card, observer, self.link, self.step_io
                )
            else:
                loaded = await asyncio.to_thread(
                    self._loader.load,
                    name,
                    version,
                    path,
                    source.platform,
                    source.config,
                    source.card,
                    source.labels,
                )
        except (RepositoryError, EngineError, InferdError) as exc:
            log.error(
                "model '%s' version %d failed to load: %s",
                name,
                version,
                exc,
                extra={
                    "event": "model_load_failed",
                    "model": name,
                    "version": version,
                    "reason": str(exc),
                },
            )
            self.observer.on_load_failed(name)
            return str(exc)
        except MemoryError:
            # Reported for this model only; the others keep serving.
            log.error("model '%s' version %d: out of memory while loading", name, version)
            self.observer.on_load_failed(name)
            return "out of memory while loading"
        except Exception:
            # An engine bug must not stop the other models from loading;
            # its text may hold internals, so callers get a generic reason.
            log.exception("model '%s' version %d failed to load", name, version)
            self.observer.on_load_failed(name)
            return "internal error while loading (see the server log)"
        loaded.source_key = key
        if loaded.config.response_cache.enable and self.response_cache is not None:
            if source.platform == ENSEMBLE_PLATFORM:  # stale once a step reloads (Triton's rule)
                log.warning("model '%s': ensembles are not cached; caching its steps", name)
            else:
                loaded.cache = self.response_cache
        return loaded

    async def unload(self, name: str) -> LoadReport:
        """Unload every version (each drains its admitted requests first). A
        model in the repository that is not loaded unloads as a no-op."""
        entry = self._models.get(name)
        if entry is None:
            if name not in self.repository.index():
                raise NotFound(f"model '{_echo(name)}' is not loaded")
            entry = self._models.setdefault(name, _Entry(reason="unloaded"))
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            old = entry.ready
            entry.ready = {}
            entry.default = None
            entry.state = State.UNAVAILABLE
            entry.reason = "unloaded"
            entry.failed = {}
            entry.wanted = False
            self.observer.on_model_state(name, 0)
        self._notify()
        for stale in old.values():
            await retire(stale)
        return LoadReport(name, tuple(sorted(old)), (), (), {})

    async def close(self) -> None:
        for name in list(self._models):
            if self._models[name].ready:
                await self.unload(name)

    # -- lookups (hot path) ----------------------------------------------------------------

    def resolve(self, name: str, version: str = "") -> ModelVersion:
        """The version that serves ``name``/``version``; "" picks the highest ready one."""
        entry = self._models.get(name)
        if entry is None:
            raise NotFound(f"model '{_echo(name)}' is not known")
        if not entry.ready:
            if entry.state is State.LOADING:
                raise Unavailable(f"model '{name}' is loading")
            raise Unavailable(f"model '{name}' is not ready: {entry.reason or 'unavailable'}")
        if not version:
            default = entry.default
            assert default is not None  # set whenever ready is non-empty
            if default.healthy:
                return default
            # The default's engine is unhealthy: another version the policy
            # serves may stand in; otherwise the caller hears why.
            healthy = [v for v, m in entry.ready.items() if v in entry.policy and m.healthy]
            if not healthy:
                raise default.scheduler.unhealthy_error()
            return entry.ready[max(healthy)]
        # ASCII digits only: int() would also take "1_0", " 1", "+1" and
        # non-Latin digits such as "\u0661", none of which names a version.
        if not _VERSION.fullmatch(version):
            raise NotFound(f"version '{_echo(version)}' of model '{name}' is not known")
        number = int(version)
        found = entry.ready.get(number)
        if found is None:
            raise NotFound(f"version {number} of model '{name}' is not available")
        if not found.healthy:
            raise found.scheduler.unhealthy_error()
        return found

    def step_io(self, step: Step) -> ModelIO:
        """The IO of the version an ensemble step reaches now (its load-time checks)."""
        if step.model not in self.repository.index():
            raise RepositoryError(f"{step.where}: no such model in the repository")
        try:
            return self.resolve(step.model, step.version).io
        except InferdError as exc:
            raise RepositoryError(f"{step.where}: {exc.message}") from None

    def get(self, name: str, version: int) -> ModelVersion | None:
        """The ready ``version`` of ``name``, or None (the router's fast path)."""
        entry = self._models.get(name)
        return entry.ready.get(version) if entry is not None else None

    def ready_versions(self, name: str) -> tuple[int, ...]:
        entry = self._models.get(name)
        return tuple(sorted(entry.ready)) if entry else ()

    def is_loaded(self, name: str) -> bool:
        """Known and wanted: loaded (or loading) and not unloaded on request."""
        entry = self._models.get(name)
        return entry is not None and entry.wanted

    def failure(self, name: str, version: int) -> str:
        """Why ``version`` of ``name`` failed its last load ("" when it did not)."""
        entry = self._models.get(name)
        return entry.failed.get(version, "") if entry else ""

    def versions(self, name: str) -> list[ModelVersion]:
        entry = self._models.get(name)
        return [entry.ready[v] for v in sorted(entry.ready)] if entry else []

    def loaded(self) -> list[ModelVersion]:
        return [v for name in sorted(self._models) for v in self.versions(name)]

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.resolve(name, version)
        except InferdError:
            return False
        return True

    @property
    def all_ready(self) -> bool:
        """Every model that is wanted (not unloaded on request) has a ready,
        healthy version."""
        return all(
            any(v.healthy for v in e.ready.values()) for e in self._models.values() if e.wanted
        )

    def mark_started(self) -> None:
        """The start-up load has finished (failed models included)."""
        self.started = True

    @property
    def server_ready(self) -> bool:
        """V2 ServerReady as Triton's --strict-readiness has it: every wanted
        model ready, or (not strict) the start-up load done, whatever failed."""
        return self.all_ready if self.strict_readiness else self.started

    @property
    def any_ready(self) -> bool:
        return any(v.healthy for e in self._models.values() for v in e.ready.values())

    def index(self, ready_only: bool = False) -> list[tuple[str, str, str, str]]:
        """(name, version, state, reason) rows for RepositoryIndex."""
        rows: list[tuple[str, str, str, str]] = []
        for name in self.repository.index():
            entry = self._models.get(name)
            if entry is None:
                if not ready_only:
                    rows.append((name, "", State.UNAVAILABLE.value, "not loaded"))
                continue
            for v in sorted(entry.ready):
                version = entry.ready[v]
                if version.healthy:
                    rows.append((name, str(v), State.READY.value, ""))
                elif not ready_only:
                    reason = f"unhealthy: {version.scheduler.unhealthy_reason}"
                    rows.append((name, str(v), State.UNAVAILABLE.value, reason))
            if ready_only:
                continue
            for v, why in sorted(entry.failed.items()):
                if v not in entry.ready:
                    rows.append((name, str(v), State.UNAVAILABLE.value, why))
            if not entry.ready and not entry.failed:
                rows.append((name, "", entry.state.value, entry.reason))
        return rows


def _no_pins(name: str) -> Collection[int]:
    return ()
