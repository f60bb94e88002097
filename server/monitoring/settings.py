"""What monitoring needs from the server's settings (``ServerConfig``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inferd.server.settings import ServerConfig


@dataclass(frozen=True, slots=True)
class MonitorSettings:
    #: Share of answered requests whose tensors are sampled (0: none).
    sample_rate: float = 0.02
    #: Sampled rows a version without a reference file captures as its reference.
    reference_rows: int = 1000
    #: Drift compares the last ``window_rows`` sampled rows, no older than
    #: ``window_s``; it is recomputed each quarter window (rows or time).
    window_rows: int = 1000
    window_s: float = 600.0
    #: A window with fewer rows gives no drift value (too noisy).
    min_rows: int = 500
    #: PSI above which drift is reported as over threshold.
    psi_threshold: float = 0.2
    #: How often the background thread processes samples and costs.
    interval_s: float = 1.0
    #: Prices per CPU core hour and per GPU hour (any currency; 0: no cost).
    cost_per_cpu_hour: float = 0.0
    cost_per_gpu_hour: float = 0.0
    #: Sampled requests waiting for the thread; more are dropped (and counted).
    queue_max: int = 512


def monitor_settings(config: ServerConfig) -> MonitorSettings:
    """The monitoring part of the server's settings."""
    return MonitorSettings(
        sample_rate=config.monitor_sample_rate,
        reference_rows=config.monitor_reference_rows,
        window_rows=config.drift_window_rows,
        window_s=config.drift_window_s,
        min_rows=config.drift_min_rows,
        psi_threshold=config.drift_psi_threshold,
        interval_s=config.monitor_interval_s,
        cost_per_cpu_hour=config.cost_per_cpu_hour,
        cost_per_gpu_hour=config.cost_per_gpu_hour,
    )
