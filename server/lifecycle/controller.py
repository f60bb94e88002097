"""The lifecycle controller: applies admin changes, keeps this replica in
step with the shared state, polls the repository, and records every change
in the audit log.

Changes (routes, stages, promote, rollback) are a read-modify-write of the
shared state file: the gate runs on the latest state under the file's lock,
the audit entry is committed, then the state is written and adopted here.
Other replicas adopt it when their state poller sees the file change. A
change that cannot be audited or written is refused; nothing half-applies.

Model control modes (Triton's): ``none`` loads the repository at start and
refuses load/unload requests; ``explicit`` loads the models named at start
(``*``: all) and takes load/unload requests; ``poll`` loads everything and
reloads a model whose files change, loads new models and unloads removed
ones, every ``repository_poll_s`` seconds (an asyncio task that sleeps
between scans).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable, Iterable
from typing import Any

from inferd.server.audit import AuditEntry, AuditError, AuditLog
from inferd.server.errors import FailedPrecondition, InferdError, NotFound, Unavailable
from inferd.server.lifecycle import transitions
from inferd.server.lifecycle.state import (
    Guardrails,
    LifecycleState,
    ModelLifecycle,
    RouteMode,
    Stage,
    StateError,
    StateStore,
)
from inferd.server.model_version import LoadReport
from inferd.server.models import ModelManager
from inferd.server.repository import tree_fingerprint
from inferd.server.routing import Router

log = logging.getLogger("inferd.lifecycle")

#: Principals recorded for changes the server makes by itself.
SYSTEM_POLLER = "system:repository-poller"
SYSTEM_GUARDRAILS = "system:guardrails"


class ModelControlMode(str, enum.Enum):
    NONE = "none"
    POLL = "poll"
    EXPLICIT = "explicit"


Change = Callable[[ModelLifecycle], ModelLifecycle]


class LifecycleController:
    def __init__(
        self,
        models: ModelManager,
        router: Router,
        store: StateStore,
        audit: AuditLog,
        *,
        mode: ModelControlMode = ModelControlMode.NONE,
        repository_poll_s: float = 15.0,
        state_poll_s: float = 1.0,
    ) -> None:
        self.models = models
        self.router = router
        self.store = store
        self.audit = audit
        self.mode = mode
        self.repository_poll_s = repository_poll_s
        self.state_poll_s = state_poll_s
        self.state = LifecycleState()
        self._stamp: object = None
        self._fingerprints: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        models.pins = self._pins
        router.on_trip = self._on_trip

    def _pins(self, name: str) -> set[int]:
        return self.state.model(name).pinned()

    # -- start and stop --------------------------------------------------------------------

    async def start(self, *, load: bool = True, load_models: Iterable[str] = ()) -> None:
        """Adopt the shared state, load the models the mode calls for, start pollers."""
        names: list[str] = []
        if load:
            names = self.models.repository.index()
            if self.mode is ModelControlMode.EXPLICIT:
                wanted = set(load_models)
                for missing in sorted(wanted - set(names) - {"*"}):
                    log.error("--load-model %s: no such model in the repository", missing)
                names = names if "*" in wanted else [n for n in names if n in wanted]
            self.models.expect(names)
        async with self._lock:
            await self._refresh_state()
        if load:
            if self.mode is ModelControlMode.POLL:
                self._fingerprints = await asyncio.to_thread(self._scan, names)
            for name in names:
                # A failure is logged and shows in RepositoryIndex; the rest serve.
                with contextlib.suppress(InferdError):
                    await self.models.load(name)
        self._spawn(self._every(self.state_poll_s, self.refresh_state))
        if self.mode is ModelControlMode.POLL:
            self._spawn(self._every(self.repository_poll_s, self.poll_repository))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self.audit.close)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _every(self, seconds: float, step: Callable[[], Any]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await step()
            except Exception:
                log.exception("lifecycle poller step failed")

    # -- the shared state ------------------------------------------------------------------

    async def refresh_state(self) -> None:
        """Adopt the state file if it changed (the state poller's step)."""
        async with self._lock:
            await self._refresh_state()

    async def _refresh_state(self) -> None:
        try:
            stamp = await asyncio.to_thread(self.store.stamp)
        except StateError as exc:
            if self._stamp != "unreadable":  # once, not every poll
                log.error("lifecycle state unreadable: %s", exc)
            self._stamp = "unreadable"
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp  # a bad file is reported once per version of it
        try:
            state = await asyncio.to_thread(self.store.read)
        except StateError as exc:
            log.error(
                "lifecycle state not adopted (keeping revision %d): %s", self.state.revision, exc
            )
            return
        await self._adopt(state)

    async def _adopt(self, state: LifecycleState) -> None:
        """Route by ``state`` and load (or unload) the versions it pins."""
        old, self.state = self.state, state
        self.router.apply(state)
        for name in sorted(set(old.models) | set(state.models)):
            if old.model(name).pinned() == state.model(name).pinned():
                continue
            if not self.models.is_loaded(name) or name not in self.models.repository.index():
                continue
            try:
                await self.models.load(name)
            except InferdError as exc:
                log.error("model '%s': versions pinned by the lifecycle state: %s", name, exc)

    async def change(
        self,
        model: str,
        action: str,
        principal: str,
        reason: str,
        change: Change,
    ) -> ModelLifecycle:
        """Apply ``change`` to ``model``'s lifecycle in the shared state,
        audited; returns the lifecycle after it."""
        async with self._lock:
            return await self._change(model, action, principal, reason, change)

    async def _change(
        self, model: str, action: str, principal: str, reason: str, change: Change
    ) -> ModelLifecycle:
        def apply(state: LifecycleState) -> LifecycleState:
            return state.with_model(model, change(state.model(model)))

        def audited(before: LifecycleState, after: LifecycleState) -> None:
            self.audit.record(
                principal=principal,
                action=action,
                model=model,
                before=before.model(model).to_json(),
                after=after.model(model).to_json() | {"revision": after.revision},
                reason=reason,
            )

        try:
            before, after = await asyncio.to_thread(self.store.update, apply, audited)
        except (StateError, AuditError) as exc:
            raise FailedPrecondition(f"change not made: {exc}") from None
        if after.revision != before.revision:
            self._stamp = await asyncio.to_thread(self.store.stamp)
            await self._adopt(after)
            log.info("%s '%s' by %s (revision %d)", action, model, principal, after.revision)
        return after.model(model)

    def _serving(self, model: str) -> int:
        try:
            return self.router.serving(model).version
        except InferdError:
            return 0

    # -- admin operations ------------------------------------------------------------------

    async def set_route(
        self,
        model: str,
        *,
        challenger: int,
        mode: RouteMode,
        weight: float,
        guardrails: Guardrails,
        principal: str,
        reason: str = "",
    ) -> ModelLifecycle:
        self.known(model)
        ready = self.models.ready_versions(model)
        serving = self._serving(model)
        return await self.change(
            model,
            "set_route",
            principal,
            reason,
            lambda ml: transitions.set_route(
                ml,
                model=model,
                challenger=challenger,
                mode=mode,
                weight=weight,
                guardrails=guardrails,
                serving=serving,
                ready=ready,
            ),
        )

    async def set_stage(
        self, model: str, version: int, stage: Stage, *, principal: str, reason: str = ""
    ) -> ModelLifecycle:
        if stage is Stage.PRODUCTION:
            return await self.promote(model, version, principal=principal, reason=reason)
        self.known(model)

        def move(ml: ModelLifecycle) -> ModelLifecycle:
            return transitions.set_stage(ml, model=model, version=version, stage=stage)

        async with self._lock:
            move(self.state.model(model))  # the gate first: refuse before loading anything
            loaded_here = False
            if stage in (Stage.STAGING, Stage.SHADOW) and self.models.get(model, version) is None:
                # Staged versions serve (or shadow) real traffic: load and warm it first.
                with contextlib.suppress(InferdError):
                    await self.models.load(model, extra_versions=(version,))
                if self.models.get(model, version) is None:
                    why = self.models.failure(model, version) or "it did not load"
                    raise FailedPrecondition(
                        f"version {version} of '{model}' cannot be {stage.value}: {why}"
                    )
                loaded_here = True
            try:
                return await self._change(
                    model, f"set_stage:{stage.value}", principal, reason, move
                )
            except InferdError:
                if loaded_here:  # the change did not happen: neither does the load
                    with contextlib.suppress(InferdError):
                        await self.models.load(model)
                raise

    async def promote(
        self, model: str, version: int = 0, *, principal: str, reason: str = ""
    ) -> ModelLifecycle:
        self.known(model)
        ready = self.models.ready_versions(model)
        serving = self._serving(model)
        return await self.change(
            model,
            "promote",
            principal,
            reason,
            lambda ml: transitions.promote(
                ml, model=model, version=version, serving=serving, ready=ready
            ),
        )

    async def rollback(self, model: str, *, principal: str, reason: str = "") -> ModelLifecycle:
        self.known(model)
        ready = self.models.ready_versions(model)
        return await self.change(
            model,
            "rollback",
            principal,
            reason,
            lambda ml: transitions.rollback(ml, model=model, ready=ready),
        )

    def _on_trip(self, model: str, challenger: int, why: str) -> None:
        """A guardrail tripped on this replica: roll the challenger back for all."""
        self._spawn(self._trip(model, challenger, why))

    async def _trip(self, model: str, challenger: int, why: str) -> None:
        try:
            await self.change(
                model,
                "guardrail_rollback",
                SYSTEM_GUARDRAILS,
                why,
                lambda ml: transitions.drop_challenger(ml, challenger, why),
            )
        except InferdError as exc:
            # The router here already stopped using the challenger.
            log.error("guardrail rollback of '%s' v%d not recorded: %s", model, challenger, exc)

    def known(self, model: str) -> None:
        """Raise NotFound unless ``model`` is in the repository."""
        if model not in self.models.repository.index():
            raise NotFound(f"model '{model[:80]}' is not in the repository")

    # -- loading ---------------------------------------------------------------------------

    async def load_model(self, name: str, *, principal: str) -> LoadReport:
        """RepositoryModelLoad: (re)load ``name``; explicit mode only."""
        self._explicit("load")
        async with self._lock:
            return await self._load(name, principal, "load")

    async def unload_model(self, name: str, *, principal: str) -> LoadReport:
        """RepositoryModelUnload: unload every version; explicit mode only."""
        self._explicit("unload")
        async with self._lock:
            before = self.models.ready_versions(name)
            report = await self.models.unload(name)
            await self._audit_load(principal, "unload", name, before, report, "")
            return report

    def _explicit(self, what: str) -> None:
        if self.mode is not ModelControlMode.EXPLICIT:
            raise FailedPrecondition(
                f"cannot {what} models: the server runs in model control mode "
                f"'{self.mode.value}'; start it with --model-control-mode explicit"
            )

    async def _load(self, name: str, principal: str, action: str) -> LoadReport:
        before = self.models.ready_versions(name)
        try:
            report = await self.models.load(name)
        except (Unavailable, FailedPrecondition) as exc:
            failed = LoadReport(
                name, before, self.models.ready_versions(name), (), {0: exc.message}
            )
            await self._audit_load(principal, f"{action}_failed", name, before, failed, exc.message)
            raise
        await self._audit_load(principal, action, name, before, report, "")
        if report.failed:
            reasons = "; ".join(f"version {v}: {why}" for v, why in sorted(report.failed.items()))
            raise FailedPrecondition(
                f"model '{name}' failed to load {reasons}; serving versions "
                f"{list(report.after) or 'none'}"
            )
        return report

    async def _audit_load(
        self,
        principal: str,
        action: str,
        name: str,
        before: tuple[int, ...],
        report: LoadReport,
        reason: str,
    ) -> None:
        after: dict[str, Any] = {"versions": list(report.after), "loaded": list(report.loaded)}
        if report.failed:
            after["failed"] = {str(v): why for v, why in sorted(report.failed.items())}
        try:
            await asyncio.to_thread(
                self.audit.record,
                principal=principal,
                action=action,
                model=name,
                before={"versions": list(before)},
                after=after,
                reason=reason,
            )
        except AuditError as exc:
            log.error("audit: %s of '%s' not recorded: %s", action, name, exc)

    # -- the repository poller -------------------------------------------------------------

    def _scan(self, names: Iterable[str]) -> dict[str, str]:
        root = self.models.repository.root
        return {name: tree_fingerprint(root / name) for name in names}

    async def poll_repository(self) -> None:
        """One scan: reload changed models, load new ones, unload removed ones."""
        names = await asyncio.to_thread(self.models.repository.index)
        prints = await asyncio.to_thread(self._scan, names)
        async with self._lock:
            for name in names:
                if prints[name] == self._fingerprints.get(name):
                    continue
                self._fingerprints[name] = prints[name]
                with contextlib.suppress(InferdError):
                    await self._load(name, SYSTEM_POLLER, "reload")
            for name in sorted(set(self._fingerprints) - set(names)):
                del self._fingerprints[name]
                if self.models.ready_versions(name):
                    before = self.models.ready_versions(name)
                    report = await self.models.unload(name)
                    await self._audit_load(SYSTEM_POLLER, "unload", name, before, report, "removed")

    # -- reading ---------------------------------------------------------------------------

    async def audit_entries(self, model: str = "", limit: int = 100) -> list[AuditEntry]:
        try:
            return await asyncio.to_thread(self.audit.entries, model, limit)
        except AuditError as exc:
            raise FailedPrecondition(str(exc)) from None

    def lifecycle(self, model: str) -> ModelLifecycle:
        return self.state.model(model)
