"""Monitoring's Prometheus families (docs/monitoring.md lists them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from inferd.server.monitoring.freshness import AGE_BUCKETS


class MonitorMetrics:
    def __init__(self, registry: CollectorRegistry, psi_threshold: float) -> None:
        r = registry
        mv = ("model", "version")
        self.psi = Gauge(
            "inferd_drift_psi",
            "Population stability index of a tensor's last window of sampled values against "
            "the version's reference (max over the tensor's features)",
            (*mv, "tensor"),
            registry=r,
            multiprocess_mode="max",
        )
        self.js = Gauge(
            "inferd_drift_js_distance",
            "Jensen-Shannon distance (base 2) of the same window against the reference",
            (*mv, "tensor"),
            registry=r,
            multiprocess_mode="max",
        )
        self.challenger_psi = Gauge(
            "inferd_drift_challenger_psi",
            "PSI of a challenger's outputs against its champion's, over the same window "
            "(shadow, canary and A/B rollouts); version is the challenger's",
            (*mv, "champion", "tensor"),
            registry=r,
            multiprocess_mode="max",
        )
        self.threshold = Gauge(
            "inferd_drift_psi_threshold",
            "The server's drift threshold (--drift-psi-threshold)",
            registry=r,
            multiprocess_mode="max",
        )
        self.threshold.set(psi_threshold)
        self.windows = Counter(
            "inferd_drift_windows", "Drift evaluations (one per window slide)", mv, registry=r
        )
        self.reference_rows = Gauge(
            "inferd_drift_reference_rows",
            "Rows in the version's reference (0: still capturing one)",
            mv,
            registry=r,
            multiprocess_mode="max",
        )
        self.sampled_rows = Counter(
            "inferd_input_sampled_rows", "Rows of sampled requests checked", mv, registry=r
        )
        self.bad_rows = Counter(
            "inferd_input_bad_rows",
            "Sampled rows with a problem in an input (nan, inf, empty BYTES, out_of_range "
            "of the reference)",
            (*mv, "input", "problem"),
            registry=r,
        )
        self.dropped = Counter(
            "inferd_monitor_samples_dropped",
            "Sampled requests dropped because the monitoring thread fell behind",
            mv,
            registry=r,
        )
        self.feature_age = Histogram(
            "inferd_feature_age_seconds",
            "Age of a request's features (now minus its feature_timestamp parameter)",
            ("model",),
            buckets=AGE_BUCKETS,
            registry=r,
        )
        self.engine_seconds = Counter(
            "inferd_engine_seconds",
            "Engine time of the version's batches, by device kind (cpu, gpu)",
            (*mv, "device"),
            registry=r,
        )
        self.cpu_seconds = Counter(
            "inferd_cpu_seconds",
            "CPU seconds attributed to the version: engine time on CPU instances plus its "
            "requests' share of the rest of the process's CPU",
            mv,
            registry=r,
        )
        self.gpu_seconds = Counter(
            "inferd_gpu_seconds", "Engine time of the version on GPU instances", mv, registry=r
        )
        self.unattributed = Counter(
            "inferd_cpu_unattributed_seconds",
            "Process CPU seconds in intervals with no answered request (idle, health checks)",
            registry=r,
        )
        self.cost = Counter(
            "inferd_cost",
            "Cost attributed to the version at --cost-per-cpu-hour and --cost-per-gpu-hour",
            mv,
            registry=r,
        )
