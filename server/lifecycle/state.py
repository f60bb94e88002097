"""Route and stage state shared by every replica, and the file that holds it.

Domain objects only (no protobuf, no gRPC). The state is one JSON document,
``<state-dir>/routes.json``; replicas read it, and a change is a
read-modify-write under an exclusive lock on a sibling lock file, written to
a temporary file and renamed into place, so a reader never sees half a file
and two writers never lose each other's change. Every write bumps
``revision``.

::

    {"format": 1, "revision": 7, "models": {"plus": {
        "champion": 1, "challenger": 2, "mode": "canary", "weight": 0.1,
        "guardrails": {"window_s": 30, "min_requests": 20, "max_error_ratio": 0.05,
                       "max_p99_ms": 0, "max_disagreement_ratio": 0},
        "previous": [], "stages": {"1": "production", "2": "staging"}, "tripped": ""}}}
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import fcntl
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1
STATE_FILENAME = "routes.json"
#: Previous champions remembered for rollback.
HISTORY = 10


class StateError(Exception):
    """The state file is unreadable or invalid; the message names the field."""


class Stage(str, enum.Enum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"
    SHADOW = "shadow"
    ARCHIVED = "archived"


class RouteMode(str, enum.Enum):
    #: Each request goes to the challenger with probability ``weight``.
    CANARY = "canary"
    #: The champion answers; a ``weight`` share is mirrored to the challenger.
    SHADOW = "shadow"
    #: Sticky: the routing key's hash picks the variant (random without a key).
    AB = "ab"
    #: The challenger is warm and takes no traffic until promoted.
    BLUE_GREEN = "blue_green"


#: Stages whose versions stay loaded (on every replica) although the version
#: policy may not pick them.
LOADED_STAGES = frozenset({Stage.STAGING, Stage.SHADOW, Stage.PRODUCTION})


@dataclass(frozen=True, slots=True)
class Guardrails:
    """Thresholds on the challenger over a sliding window; 0 turns one off."""

    window_s: float = 60.0
    min_requests: int = 20
    max_error_ratio: float = 0.0
    max_p99_ms: float = 0.0
    max_disagreement_ratio: float = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.max_error_ratio or self.max_p99_ms or self.max_disagreement_ratio)

    def problems(self) -> list[str]:
        """What is wrong with these values, for the caller."""
        found = []
        for name in ("window_s", "max_error_ratio", "max_p99_ms", "max_disagreement_ratio"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                found.append(f"guardrail {name} must be a non-negative number")
        if self.window_s <= 0 or self.window_s > 86_400:
            found.append("guardrail window_s must be in (0, 86400] seconds")
        if not 1 <= self.min_requests <= 1_000_000:
            found.append("guardrail min_requests must be in 1..1000000")
        for name in ("max_error_ratio", "max_disagreement_ratio"):
            if getattr(self, name) > 1:
                found.append(f"guardrail {name} is a ratio: at most 1")
        return found


@dataclass(frozen=True, slots=True)
class ModelLifecycle:
    """One served model name: its route (champion, challenger, split) and the
    stage of each version. Treated as immutable: changes make a new one."""

    #: 0: no champion chosen; the highest ready version serves.
    champion: int = 0
    challenger: int = 0
    mode: RouteMode = RouteMode.CANARY
    weight: float = 0.0
    guardrails: Guardrails = field(default_factory=Guardrails)
    #: Earlier champions, oldest first; rollback restores the last.
    previous: tuple[int, ...] = ()
    stages: Mapping[int, Stage] = field(default_factory=dict)
    #: Why guardrails last rolled a challenger back ("" otherwise).
    tripped: str = ""

    def stage(self, version: int) -> Stage:
        return self.stages.get(version, Stage.DEVELOPMENT)

    def staged(self, changes: Mapping[int, Stage]) -> ModelLifecycle:
        stages = dict(self.stages)
        stages.update(changes)
        return dataclasses.replace(self, stages=stages)

    def pinned(self) -> set[int]:
        """Versions that must stay loaded: champion, challenger, the rollback
        target and every staging/shadow/production version."""
        keep = {self.champion, self.challenger}
        if self.previous:
            keep.add(self.previous[-1])
        keep.update(v for v, s in self.stages.items() if s in LOADED_STAGES)
        keep.discard(0)
        return keep

    @property
    def is_empty(self) -> bool:
        return self == ModelLifecycle()

    def to_json(self) -> dict[str, Any]:
        return {
            "champion": self.champion,
            "challenger": self.challenger,
            "mode": self.mode.value,
            "weight": self.weight,
            "guardrails": dataclasses.asdict(self.guardrails),
            "previous": list(self.previous),
            "stages": {str(v): s.value for v, s in sorted(self.stages.items())},
            "tripped": self.tripped,
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> ModelLifecycle:
        obj = _object(data, where)
        guard = _object(obj.get("guardrails", {}), f"{where}.guardrails")
        guardrails = Guardrails(
            window_s=_number(guard, "window_s", 60.0, where),
            min_requests=_int(guard, "min_requests", 20, where),
            max_error_ratio=_number(guard, "max_error_ratio", 0.0, where),
            max_p99_ms=_number(guard, "max_p99_ms", 0.0, where),
            max_disagreement_ratio=_number(guard, "max_disagreement_ratio", 0.0, where),
        )
        if guardrails.problems():
            raise StateError(f"{where}: {guardrails.problems()[0]}")
        stages_obj = _object(obj.get("stages", {}), f"{where}.stages")
        stages: dict[int, Stage] = {}
        for key, value in stages_obj.items():
            if not key.isascii() or not key.isdigit() or int(key) < 1:
                raise StateError(f"{where}.stages: {key!r} is not a version number")
            try:
                stages[int(key)] = Stage(value)
            except ValueError:
                raise StateError(f"{where}.stages.{key}: unknown stage {value!r}") from None
        try:
            mode = RouteMode(obj.get("mode", RouteMode.CANARY.value))
        except ValueError:
            raise StateError(f"{where}.mode: unknown route mode {obj.get('mode')!r}") from None
        previous = obj.get("previous", [])
        if not isinstance(previous, list) or not all(_is_version(v) for v in previous):
            raise StateError(f"{where}.previous must be a list of version numbers")
        weight = _number(obj, "weight", 0.0, where)
        if weight > 1:
            raise StateError(f"{where}.weight must be in [0, 1]")
        tripped = obj.get("tripped", "")
        if not isinstance(tripped, str):
            raise StateError(f"{where}.tripped must be a string")
        return cls(
            champion=_int(obj, "champion", 0, where),
            challenger=_int(obj, "challenger", 0, where),
            mode=mode,
            weight=weight,
            guardrails=guardrails,
            previous=tuple(previous),
            stages=stages,
            tripped=tripped,
        )


@dataclass(frozen=True, slots=True)
class LifecycleState:
    revision: int = 0
    models: Mapping[str, ModelLifecycle] = field(default_factory=dict)

    def model(self, name: str) -> ModelLifecycle:
        return self.models.get(name) or ModelLifecycle()

    def with_model(self, name: str, lifecycle: ModelLifecycle) -> LifecycleState:
        models = dict(self.models)
        if lifecycle.is_empty:
            models.pop(name, None)
        else:
            models[name] = lifecycle
        return dataclasses.replace(self, models=models)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "revision": self.revision,
            "models": {name: m.to_json() for name, m in sorted(self.models.items())},
        }

    @classmethod
    def from_json(cls, data: object) -> LifecycleState:
        obj = _object(data, "state")
        if obj.get("format", FORMAT) != FORMAT:
            raise StateError(f"state format {obj.get('format')!r} is not supported (want {FORMAT})")
        models_obj = _object(obj.get("models", {}), "models")
        models = {
            name: ModelLifecycle.from_json(value, f"models.{name}")
            for name, value in models_obj.items()
        }
        return cls(revision=_int(obj, "revision", 0, "state"), models=models)


def _object(data: object, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise StateError(f"{where} must be a JSON object")
    return data


def _is_version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _int(obj: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = obj.get(key, default)
    if not _is_version(value):
        raise StateError(f"{where}.{key} must be a non-negative integer")
    return int(value)


def _number(obj: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StateError(f"{where}.{key} must be a number")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise StateError(f"{where}.{key} must be a non-negative number")
    return value


Stamp = tuple[int, int, int, int]


class StateStore:
    """The shared state file. Blocking I/O: call from a worker thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILENAME
        self._lock_path = self.directory / (STATE_FILENAME + ".lock")

    def stamp(self) -> Stamp | None:
        """Changes whenever the file is replaced or rewritten; None: no file."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {STATE_FILENAME}: {exc.strerror}") from None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def read(self) -> LifecycleState:
        """The current state; an empty one when there is no file yet."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return LifecycleState()
        except (OSError, UnicodeDecodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise StateError(f"cannot read {STATE_FILENAME}: {detail}") from None
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise StateError(f"{STATE_FILENAME} is not valid JSON") from None
        return LifecycleState.from_json(data)

    def update(
        self,
        change: Callable[[LifecycleState], LifecycleState],
        commit: Callable[[LifecycleState, LifecycleState], None] | None = None,
    ) -> tuple[LifecycleState, LifecycleState]:
        """Apply ``change`` to the latest state under the lock and write the
        result (revision + 1). ``change`` may raise to abort; one that
        changes nothing writes nothing. ``commit(before, after)`` runs after
        the change is known and before it is written (the audit entry): if
        it raises, nothing is written. Returns (before, after)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = open(self._lock_path, "a+b")  # noqa: SIM115 - held across the update
        except OSError as exc:
            raise StateError(f"cannot write the lifecycle state: {exc.strerror}") from None
        with lock:
            # flock by hand rather than the filelock package: a blocking wait
            # (filelock polls), and the kernel always releases it when the
            # holder dies (filelock falls back to lock files without flock).
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            before = self.read()
            after = change(before)
            if dataclasses.replace(after, revision=before.revision) == before:
                return before, before
            after = dataclasses.replace(after, revision=before.revision + 1)
            if commit is not None:
                commit(before, after)
            self._write(after)
            return before, after

    def _write(self, state: LifecycleState) -> None:
        text = json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".routes.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StateError(f"cannot write {STATE_FILENAME}: {exc.strerror}") from None
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
