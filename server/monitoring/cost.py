"""Cost attribution (docs/monitoring.md#cost-per-request).

Each interval: a version's engine time (every batch's compute time; a
request's part of it is its share of the batch's rows) counts as CPU or GPU
seconds by where the engine runs; the rest of the process's CPU time over
the interval (decoding, scheduling, encoding, the front ends) is split over
versions by the requests each answered. Prices turn seconds into cost.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from inferd.server.monitoring.sampler import VersionMonitor
from inferd.server.monitoring.settings import MonitorSettings


class CostMeter:
    def __init__(
        self,
        metrics: Any,
        settings: MonitorSettings,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self._metrics = metrics
        self._cpu_price_s = settings.cost_per_cpu_hour / 3600.0
        self._gpu_price_s = settings.cost_per_gpu_hour / 3600.0
        self._cpu_clock = cpu_clock
        self._last_cpu = cpu_clock()
        #: Per version: engine seconds and requests at the previous tick.
        self._seen: weakref.WeakKeyDictionary[VersionMonitor, tuple[float, int]] = (
            weakref.WeakKeyDictionary()
        )
        #: Process CPU seconds no request could carry (no request in the interval).
        self.unattributed_s = 0.0

    def tick(self, monitors: Sequence[VersionMonitor]) -> None:
        cpu = self._cpu_clock()
        process_s, self._last_cpu = max(0.0, cpu - self._last_cpu), cpu
        deltas: list[tuple[VersionMonitor, float, int]] = []
        for monitor in monitors:
            engine_s, requests = monitor.engine_s, monitor.requests
            before_s, before_n = self._seen.get(monitor, (0.0, 0))
            self._seen[monitor] = (engine_s, requests)
            deltas.append((monitor, max(0.0, engine_s - before_s), max(0, requests - before_n)))
        cpu_engine_s = sum(d for m, d, _ in deltas if m.device == "cpu")
        rest_s = max(0.0, process_s - cpu_engine_s)
        answered = sum(n for _, _, n in deltas)
        m = self._metrics
        if answered == 0:
            self.unattributed_s += rest_s
            m.unattributed.inc(rest_s)
        for monitor, engine_s, requests in deltas:
            if engine_s == 0 and requests == 0:
                continue
            labels = (monitor.model, monitor.version)
            share_s = rest_s * requests / answered if answered else 0.0
            cpu_s = share_s + (engine_s if monitor.device == "cpu" else 0.0)
            gpu_s = engine_s if monitor.device == "gpu" else 0.0
            m.engine_seconds.labels(*labels, monitor.device).inc(engine_s)
            m.cpu_seconds.labels(*labels).inc(cpu_s)
            if gpu_s:
                m.gpu_seconds.labels(*labels).inc(gpu_s)
            m.cost.labels(*labels).inc(cpu_s * self._cpu_price_s + gpu_s * self._gpu_price_s)
