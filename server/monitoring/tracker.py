"""The monitoring thread's state for one model version: its reference (read
or being captured), the ring of recent rows per tensor, input quality
counts, and drift each time the window has slid by a quarter."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from inferd.server.monitoring.bins import class_counts, feature_matrix, histogram
from inferd.server.monitoring.drift import js_distance, psi, shares
from inferd.server.monitoring.quality import bad_rows
from inferd.server.monitoring.reference import Reference, build_matrices, from_matrices
from inferd.server.monitoring.sampler import Sample, VersionMonitor
from inferd.server.monitoring.settings import MonitorSettings
from inferd.server.monitoring.window import Ring

log = logging.getLogger("inferd.monitoring")


@dataclass(frozen=True, slots=True)
class DriftRow:
    """One line of the drift table (``inferd models drift``)."""

    model: str
    version: str
    tensor: str
    psi: float
    js_distance: float
    window_rows: int
    reference_rows: int
    reference_source: str


class VersionTracker:
    def __init__(
        self,
        monitor: VersionMonitor,
        settings: MonitorSettings,
        metrics: Any,
        reference: Reference | None,
    ) -> None:
        self.monitor = monitor
        self.settings = settings
        self.metrics = metrics
        labels = (monitor.model, monitor.version)
        self._labels = labels
        self._sampled = metrics.sampled_rows.labels(*labels)
        self._windows = metrics.windows.labels(*labels)
        self._reference_rows = metrics.reference_rows.labels(*labels)
        self.reference: Reference | None = None
        #: Captured matrices per tensor key, until ``reference_rows`` rows.
        self._capture: dict[str, list[np.ndarray]] = {}
        self._capture_classifier: dict[str, bool] = {}
        self._captured = 0
        self.rings: dict[str, Ring] = {}
        self._new_rows = 0
        self._last_eval = 0.0
        #: The latest drift per tensor label, for the table.
        self.table: dict[str, DriftRow] = {}
        #: Set when this tick evaluated drift (the challenger comparison follows it).
        self.evaluated = False
        if reference is not None:
            self._use(reference)
        else:
            self._reference_rows.set(0)

    def _use(self, reference: Reference) -> None:
        self.reference = reference
        self._reference_rows.set(reference.rows)
        self.rings = {
            key: Ring(self.settings.window_rows, t.features) for key, t in reference.tensors.items()
        }

    # -- samples ----------------------------------------------------------------------------

    def process(self, samples: Iterable[Sample], now: float) -> None:
        self.evaluated = False
        for inputs, outputs, rows in samples:
            self._quality(inputs, rows)
            if self.reference is None:
                self._collect(inputs, outputs, rows)
            else:
                self._add(inputs, outputs, rows, now)
        if self.reference is None and self._captured >= self.settings.reference_rows:
            self._finish_capture()
        if self.reference is not None:
            self._maybe_evaluate(now)

    def _quality(self, inputs: dict[str, np.ndarray], rows: int) -> None:
        self._sampled.inc(rows)
        tensors = self.reference.tensors if self.reference is not None else {}
        for name, array in inputs.items():
            for problem, count in bad_rows(array, rows, tensors.get(f"input:{name}")).items():
                self.metrics.bad_rows.labels(*self._labels, name, problem).inc(count)

    def _collect(
        self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], rows: int
    ) -> None:
        for key, (matrix, classifier) in build_matrices(inputs, outputs, rows).items():
            self._capture.setdefault(key, []).append(matrix)
            self._capture_classifier[key] = classifier
        self._captured += rows

    def _finish_capture(self) -> None:
        matrices = {
            key: (np.concatenate(parts), self._capture_classifier[key])
            for key, parts in self._capture.items()
            if len({p.shape[1] for p in parts}) == 1
        }
        reference = from_matrices(self.monitor.model, matrices, self._captured, "captured")
        self._capture.clear()
        log.info(
            "model '%s' version %s: reference captured from %d sampled rows",
            self.monitor.model,
            self.monitor.version,
            reference.rows,
            extra={"event": "reference_captured", "model": self.monitor.model},
        )
        self._use(reference)

    def _add(
        self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], rows: int, now: float
    ) -> None:
        for role, arrays in (("input", inputs), ("output", outputs)):
            for name, array in arrays.items():
                ring = self.rings.get(f"{role}:{name}")
                matrix = feature_matrix(array, rows) if ring is not None else None
                if ring is not None and matrix is not None and matrix.shape[1] == ring.features:
                    ring.add(matrix, now)
        self._new_rows += rows

    # -- drift ------------------------------------------------------------------------------

    def _maybe_evaluate(self, now: float) -> None:
        s = self.settings
        due = self._new_rows >= max(1, s.window_rows // 4) or (
            self._new_rows > 0 and now - self._last_eval >= s.window_s / 4
        )
        if due:
            self.evaluate(now)

    def window(self, key: str, now: float) -> np.ndarray | None:
        ring = self.rings.get(key)
        return None if ring is None else ring.window(now - self.settings.window_s)

    def evaluate(self, now: float) -> None:
        assert self.reference is not None
        self._new_rows = 0
        self._last_eval = now
        evaluated = False
        for key, tensor in self.reference.tensors.items():
            values = self.window(key, now)
            if values is None or values.shape[0] < self.settings.min_rows:
                continue
            self._drift(tensor.name, tensor.shares, histogram(values, tensor.edges), values)
            if tensor.classes is not None:
                counts = class_counts(values, tensor.classes.shape[0])
                self._drift(f"{tensor.name}:class", tensor.classes[None, :], counts, values)
            evaluated = True
        if evaluated:
            self._windows.inc()
            self.evaluated = True

    def _drift(self, label: str, reference: np.ndarray, counts: np.ndarray, values: Any) -> None:
        window = shares(counts)
        value = float(psi(reference, window).max())
        distance = float(js_distance(reference, window).max())
        self.metrics.psi.labels(*self._labels, label).set(value)
        self.metrics.js.labels(*self._labels, label).set(distance)
        assert self.reference is not None
        self.table[label] = DriftRow(
            *self._labels,
            label,
            value,
            distance,
            int(values.shape[0]),
            self.reference.rows,
            self.reference.source,
        )


def compare(champion: VersionTracker, challenger: VersionTracker, now: float) -> dict[str, float]:
    """PSI of the challenger's output windows against the champion's, on the
    champion's reference bins (per output tensor)."""
    found: dict[str, float] = {}
    reference = champion.reference
    if reference is None:
        return found
    for key, tensor in reference.tensors.items():
        if tensor.role != "output":
            continue
        mine, theirs = champion.window(key, now), challenger.window(key, now)
        minimum = champion.settings.min_rows
        if mine is None or theirs is None or min(len(mine), len(theirs)) < minimum:
            continue
        if mine.shape[1] != theirs.shape[1]:
            continue
        base = shares(histogram(mine, tensor.edges))
        found[tensor.name] = float(psi(base, shares(histogram(theirs, tensor.edges))).max())
    return found
