"""``grpc.health.v1.Health``: what load balancers and Kubernetes probes ask.

Services reported:

- ``""`` (the whole server) and ``inference.GRPCInferenceService``: SERVING
  once the start-up load (with warmup) has finished and at least one model
  version is ready and healthy; NOT_SERVING before that, while draining, and
  when no model can serve. A model that failed to load does not take the
  server out of rotation (the others keep serving); V2 ``ServerReady``, which
  wants every model ready (unless ``--strict-readiness false``), stays the
  stricter check.
- each model name in the repository: SERVING while it has a ready, healthy
  version (after warmup); NOT_SERVING while loading, after a failed load,
  while unhealthy (engine hung or failing) and while draining.

Unknown names answer NOT_FOUND (``Check``) or SERVICE_UNKNOWN (``Watch``).
These RPCs need no credentials (see ``server.auth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health, health_pb2

from inferd.server.models import ModelManager

log = logging.getLogger("inferd.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: The V2 service's full name, reported like the overall "" entry.
INFERENCE_SERVICE = "inference.GRPCInferenceService"


class HealthReporter:
    """Keeps a ``HealthServicer`` in step with the model manager."""

    def __init__(self, models: ModelManager) -> None:
        self.models = models
        # grpc-stubs does not know the asyncio servicer (grpcio-health-checking >= 1.33).
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        #: The start-up load has finished (READY only after warmup).
        self.started = False
        self._draining = False
        self._reported: dict[str, int] = {}
        self._pending: asyncio.Task[None] | None = None
        models.add_listener(self.changed)

    async def prepare(self) -> None:
        """Report NOT_SERVING for everything (the servicer starts with ""
        SERVING); call before the server starts answering."""
        await self.refresh()

    def statuses(self) -> dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType]:
        """What each service should report now."""
        out: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {}
        serving = self.started and not self._draining
        for name in self.models.repository.index():
            ok = serving and self.models.is_ready(name)
            out[name] = SERVING if ok else NOT_SERVING
        overall = SERVING if serving and self.models.any_ready else NOT_SERVING
        out[""] = overall
        out[INFERENCE_SERVICE] = overall
        return out

    async def refresh(self) -> None:
        if self._draining:
            return
        for service, status in self.statuses().items():
            if self._reported.get(service) != status:
                self._reported[service] = status
                log.info(
                    "health %r: %s",
                    service,
                    health_pb2.HealthCheckResponse.ServingStatus.Name(status),
                )
                await self.servicer.set(service, status)

    def changed(self) -> None:
        """A model's state changed: refresh soon (coalesced), on the loop."""
        if self._pending is not None and not self._pending.done():
            return
        # RuntimeError: no running loop (a model loaded outside a server).
        with contextlib.suppress(RuntimeError):
            self._pending = asyncio.get_running_loop().create_task(self.refresh())

    async def mark_started(self) -> None:
        self.started = True
        await self.refresh()

    async def drain(self) -> None:
        """Every service NOT_SERVING, for good (shutdown)."""
        self._draining = True
        log.info("health: NOT_SERVING (draining)")
        await self.servicer.enter_graceful_shutdown()
