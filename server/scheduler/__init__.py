"""The scheduler: how a request reaches an engine, in parts.

- ``base``: the ``Scheduler`` interface (the seam the model registry uses).
- ``options``: the batching options read from a model's config (units,
  bounds, defaults and how to tune each).
- ``latency``: the per-batch-size latency model; ``warmup`` seeds it.
- ``planners``: when to dispatch and how big (adaptive and Triton-static);
  every policy difference sits behind the ``Planner`` interface.
- ``queue``: the queued requests (EDF or FIFO by priority), cancel, expiry.
- ``admission``: the finish prediction, the offered rate, refusals at
  arrival; ``margin``: what admission adds to the prediction, learnt.
- ``execution``: engine threads and slots, running a batch (merge, split),
  engine timeouts.
- ``health``: the unhealthy state, probes, recovery.
- ``records``: what telemetry sees (executed batches, counters).
- ``dispatch``: ``BatchingScheduler``, which wires the parts together.
"""

from inferd.server.scheduler.base import Scheduler

__all__ = ["Scheduler"]
