"""Model monitoring: drift against a reference, input quality, feature
freshness and cost per request (docs/monitoring.md).

The event loop only samples (``sampler``): a random draw per answered
request and, for a few percent of them, one reference appended to a bounded
queue. Everything over tensor elements (histograms, drift, quality checks)
runs on one background thread (``worker``), vectorized with numpy.
"""

from inferd.server.monitoring.settings import MonitorSettings

__all__ = ["MonitorSettings"]
