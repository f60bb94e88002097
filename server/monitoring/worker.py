"""``Monitoring``: the server's monitoring, and the thread that does its work."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from inferd.server.monitoring.cost import CostMeter
from inferd.server.monitoring.metrics import MonitorMetrics
from inferd.server.monitoring.reference import REFERENCE_PATH, Reference, ReferenceError, load
from inferd.server.monitoring.sampler import Sample, VersionMonitor
from inferd.server.monitoring.settings import MonitorSettings
from inferd.server.monitoring.tracker import DriftRow, VersionTracker, compare

log = logging.getLogger("inferd.monitoring")

#: (model, champion version, challenger version) of each rollout with a challenger.
Pairs = Callable[[], list[tuple[str, str, str]]]


class Monitoring:
    def __init__(
        self, settings: MonitorSettings, registry: CollectorRegistry, repository: Path
    ) -> None:
        self.settings = settings
        self.metrics = MonitorMetrics(registry, settings.psi_threshold)
        self.repository = repository
        self._monitors: weakref.WeakSet[VersionMonitor] = weakref.WeakSet()
        self.cost = CostMeter(self.metrics, settings)
        #: Set by the server: the router's champion/challenger pairs.
        self.pairs: Pairs = list
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one tick at a time (the thread, or a test)

    def version(self, model: str, version: str, device: str) -> VersionMonitor:
        monitor = VersionMonitor(
            model,
            version,
            device,
            rate=self.settings.sample_rate,
            queue_max=self.settings.queue_max,
            age=self.metrics.feature_age.labels(model),
            dropped=self.metrics.dropped.labels(model, version),
        )
        self._monitors.add(monitor)
        return monitor

    # -- the thread -------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="inferd-monitoring", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.settings.interval_s):
            try:
                self.tick()
            except Exception:  # never let one bad sample stop monitoring
                log.exception("monitoring tick failed")

    def tick(self, now: float | None = None) -> None:
        """Process what was sampled since the last tick, then costs."""
        with self._lock:
            now = time.monotonic() if now is None else now
            monitors = list(self._monitors)
            trackers: dict[tuple[str, str], VersionTracker] = {}
            for monitor in monitors:
                tracker = monitor.tracker
                if tracker is None:
                    tracker = monitor.tracker = VersionTracker(
                        monitor, self.settings, self.metrics, self._reference(monitor.model)
                    )
                tracker.process(_drain(monitor), now)
                trackers[(monitor.model, monitor.version)] = tracker
            self._compare(trackers, now)
            self.cost.tick(monitors)

    def _reference(self, model: str) -> Reference | None:
        path = self.repository / model / REFERENCE_PATH
        if not path.is_file():
            return None
        try:
            return load(path)
        except ReferenceError as exc:
            log.warning("model '%s': %s; capturing a reference from traffic instead", model, exc)
            return None

    def _compare(self, trackers: dict[tuple[str, str], VersionTracker], now: float) -> None:
        for model, champion, challenger in self.pairs():
            ours, theirs = trackers.get((model, champion)), trackers.get((model, challenger))
            if ours is None or theirs is None or not (ours.evaluated or theirs.evaluated):
                continue
            for tensor, value in compare(ours, theirs, now).items():
                self.metrics.challenger_psi.labels(model, challenger, champion, tensor).set(value)

    def table(self) -> list[DriftRow]:
        """The latest drift of every tensor of every version, sorted."""
        rows = [row for m in list(self._monitors) if m.tracker for row in m.tracker.table.values()]
        return sorted(rows, key=lambda r: (r.model, r.version, r.tensor))


def _drain(monitor: VersionMonitor) -> list[Sample]:
    pending = monitor.pending
    out = []
    while pending:
        out.append(pending.popleft())
    return out
