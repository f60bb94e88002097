"""One model version's health: failure counting, probes, recovery.

After ``options.failure_threshold`` failed batches in a row the engine is
probed with a synthetic one-row batch; if the probe fails too, the version is
marked unhealthy (a probe that passes means the failures were the inputs').
An engine call past its timeout marks it unhealthy at once (``execution``).
While unhealthy, queued requests are answered UNAVAILABLE at once, new ones
are refused with UNAVAILABLE, and a probe runs every
``options.probe_interval_s`` on a free slot; when one passes the version
serves again. ``on_change`` is called on every transition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from inferd.server.errors import Unavailable
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.slots import Slots

log = logging.getLogger("inferd.batcher")


class Health:
    """Whether a version serves, and the probing that decides it."""

    def __init__(
        self,
        name: str,
        options: BatchingOptions,
        slots: Slots,
        probe: Callable[[], object] | None,
        *,
        on_change: Callable[[], None],
        on_unhealthy: Callable[[Unavailable], None],
        on_recovered: Callable[[], None],
        closing: Callable[[], bool],
    ) -> None:
        self.name = name
        self.options = options
        self.slots = slots
        #: A synthetic inference on the engine (raises when it fails); None:
        #: recovery only waits for hung calls to return.
        self.probe = probe
        self.healthy = True
        self.reason = ""
        #: Failed batches in a row.
        self.failures = 0
        #: The probe after failures, or the recovery loop; None: neither runs.
        self.task: asyncio.Task[None] | None = None
        self._on_change = on_change
        self._on_unhealthy = on_unhealthy
        self._on_recovered = on_recovered
        self._closing = closing

    def error(self) -> Unavailable:
        """What requests are answered while unhealthy."""
        return Unavailable(
            f"model '{self.name}' is unhealthy ({self.reason}); retry later or on another replica"
        )

    def batch_succeeded(self) -> None:
        self.failures = 0

    def batch_failed(self) -> None:
        """Count a failed batch; at the threshold, probe the engine."""
        self.failures += 1
        if (
            self.failures >= self.options.failure_threshold
            and self.healthy
            and self.task is None
            and not self._closing()
        ):
            self.task = asyncio.create_task(self._check_after_failures())

    async def _check_after_failures(self) -> None:
        failures = self.failures
        try:
            ok = await self.probe_once()
        finally:
            self._forget_task()
        if ok:
            self.failures = 0
            log.warning(
                "model '%s': %d failed batches in a row, but the health probe passed",
                self.name,
                failures,
            )
        else:
            self.set_unhealthy(f"{failures} failed batches in a row and a failed health probe")

    def set_unhealthy(self, reason: str) -> None:
        """Mark the version unhealthy (once), fail what is queued, start recovery."""
        if not self.healthy:
            return
        self.healthy = False
        self.reason = reason
        log.error("model '%s' marked unhealthy: %s", self.name, reason)
        self._on_unhealthy(self.error())
        self._changed()
        if not self._closing():
            if self.task is not None:
                self.task.cancel()
            self.task = asyncio.create_task(self._recover())

    async def _recover(self) -> None:
        """Probe every ``probe_interval_s`` until one passes."""
        while not self.healthy and not self._closing():
            await asyncio.sleep(self.options.probe_interval_s)
            if await self.probe_once():
                self.healthy = True
                self.reason = ""
                self.failures = 0
                log.info("model '%s' is healthy again", self.name)
                self._changed()
                self._on_recovered()
        self._forget_task()

    def _forget_task(self) -> None:
        if self.task is asyncio.current_task():
            self.task = None

    async def probe_once(self) -> bool:
        """One synthetic call on a free slot, within the engine timeout."""
        slots = self.slots
        if self.probe is None:
            return not slots.hung
        if slots.free <= 0:
            return False  # every slot is busy (or hung): not healthy yet
        call_id = slots.next_id()
        try:
            future = slots.run(call_id, self.probe)
        except RuntimeError:
            return False
        wrapped = asyncio.wrap_future(future)
        done, _ = await asyncio.wait({wrapped}, timeout=self.options.engine_timeout_s)
        if not done:
            slots.hung.add(call_id)
            wrapped.add_done_callback(lambda f: self._probe_returned(call_id, f))
            return False
        if wrapped.exception() is not None:
            log.warning("model '%s' health probe failed: %s", self.name, wrapped.exception())
            return False
        return True

    def _probe_returned(self, call_id: int, future: asyncio.Future[Any]) -> None:
        self.slots.hung.discard(call_id)
        if not future.cancelled():
            future.exception()  # retrieved: a late failure is not "never retrieved"

    def _changed(self) -> None:
        try:
            self._on_change()
        except Exception:
            log.exception("health change listener failed")
