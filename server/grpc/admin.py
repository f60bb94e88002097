"""``inferd.admin.v1.ModelAdmin``: the lifecycle API's protocol edge.

Protobuf stops here: each handler turns its message into domain values,
calls the lifecycle controller with the caller's identity, and encodes the
result. Every method changes or reveals deployment state, so every method
needs the admin role: ``ADMIN_METHODS`` lists the full method names for the
authorization layer (with Triton's RepositoryModelLoad/Unload).
"""

from __future__ import annotations

from typing import Any

from inferd.protos.inferd.admin.v1 import admin_pb2 as apb
from inferd.protos.inferd.admin.v1 import admin_pb2_grpc as apb_grpc
from inferd.server.audit import AuditEntry
from inferd.server.errors import InferdError, InvalidArgument
from inferd.server.grpc.rpc import rpc
from inferd.server.identity import current_principal
from inferd.server.lifecycle.controller import LifecycleController
from inferd.server.lifecycle.state import Guardrails, RouteMode, Stage
from inferd.server.monitoring.worker import Monitoring

SERVICE = "inferd.admin.v1.ModelAdmin"
#: Full gRPC method names that need the admin role.
ADMIN_METHODS: tuple[str, ...] = (
    *(
        f"/{SERVICE}/{method}"
        for method in (
            "GetRoutes",
            "SetRoute",
            "SetStage",
            "Promote",
            "Rollback",
            "GetAuditLog",
            "GetDrift",
        )
    ),
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
)

MODES = {
    apb.ROUTE_MODE_UNSPECIFIED: RouteMode.CANARY,
    apb.ROUTE_MODE_CANARY: RouteMode.CANARY,
    apb.ROUTE_MODE_SHADOW: RouteMode.SHADOW,
    apb.ROUTE_MODE_AB: RouteMode.AB,
    apb.ROUTE_MODE_BLUE_GREEN: RouteMode.BLUE_GREEN,
}
_MODE_PB = {
    RouteMode.CANARY: apb.ROUTE_MODE_CANARY,
    RouteMode.SHADOW: apb.ROUTE_MODE_SHADOW,
    RouteMode.AB: apb.ROUTE_MODE_AB,
    RouteMode.BLUE_GREEN: apb.ROUTE_MODE_BLUE_GREEN,
}
STAGES = {
    apb.STAGE_DEVELOPMENT: Stage.DEVELOPMENT,
    apb.STAGE_STAGING: Stage.STAGING,
    apb.STAGE_PRODUCTION: Stage.PRODUCTION,
    apb.STAGE_SHADOW: Stage.SHADOW,
    apb.STAGE_ARCHIVED: Stage.ARCHIVED,
}
_STAGE_PB = {stage: number for number, stage in STAGES.items()}

DEFAULT_WINDOW_S = 60.0
DEFAULT_MIN_REQUESTS = 20
MAX_AUDIT_LIMIT = 10_000


def _model(name: str) -> str:
    if not name:
        raise InvalidArgument("model is required")
    return name


def guardrails_from_pb(msg: apb.Guardrails) -> Guardrails:
    return Guardrails(
        window_s=msg.window_seconds or DEFAULT_WINDOW_S,
        min_requests=msg.min_requests or DEFAULT_MIN_REQUESTS,
        max_error_ratio=msg.max_error_ratio,
        max_p99_ms=msg.max_p99_ms,
        max_disagreement_ratio=msg.max_disagreement_ratio,
    )


def _entry_pb(entry: AuditEntry) -> apb.AuditEntry:
    out = apb.AuditEntry(
        id=entry.id,
        principal=entry.principal,
        action=entry.action,
        model=entry.model,
        before_json=entry.before,
        after_json=entry.after,
        reason=entry.reason,
        replica=entry.replica,
    )
    out.time.FromNanoseconds(entry.time_ns)
    return out


class AdminServicer(apb_grpc.ModelAdminServicer):  # type: ignore[misc]
    def __init__(
        self, lifecycle: LifecycleController, monitoring: Monitoring | None = None
    ) -> None:
        self.lifecycle = lifecycle
        self.monitoring = monitoring

    @rpc
    async def GetDrift(self, request: apb.GetDriftRequest, context: Any) -> apb.GetDriftResponse:
        if self.monitoring is None:
            return apb.GetDriftResponse(monitoring=False)
        if request.model:
            self.lifecycle.known(request.model)
        rows = [r for r in self.monitoring.table() if r.model == request.model or not request.model]
        return apb.GetDriftResponse(
            monitoring=True,
            psi_threshold=self.monitoring.settings.psi_threshold,
            tensors=[
                apb.TensorDrift(
                    model=r.model,
                    version=int(r.version),
                    tensor=r.tensor,
                    psi=r.psi,
                    js_distance=r.js_distance,
                    window_rows=r.window_rows,
                    reference_rows=r.reference_rows,
                    reference_source=r.reference_source,
                )
                for r in rows
            ],
        )

    def _route_pb(self, model: str) -> apb.Route:
        lc = self.lifecycle.lifecycle(model)
        models = self.lifecycle.models
        ready = set(models.ready_versions(model))
        router = self.lifecycle.router
        route = router.route_of(model)
        g = lc.guardrails
        try:
            serving = router.serving(model).version
        except InferdError:
            serving = 0
        return apb.Route(
            model=model,
            champion=lc.champion,
            challenger=lc.challenger,
            mode=_MODE_PB[lc.mode],
            weight=lc.weight,
            guardrails=apb.Guardrails(
                window_seconds=g.window_s,
                min_requests=g.min_requests,
                max_error_ratio=g.max_error_ratio,
                max_p99_ms=g.max_p99_ms,
                max_disagreement_ratio=g.max_disagreement_ratio,
            ),
            previous_champions=list(lc.previous),
            stages=[
                apb.VersionStage(version=v, stage=_STAGE_PB[lc.stage(v)], ready=v in ready)
                for v in sorted(ready | set(lc.stages))
            ],
            revision=self.lifecycle.state.revision,
            stats=[
                apb.VariantStats(
                    variant=s.variant,
                    version=s.version,
                    requests=s.requests,
                    errors=s.errors,
                    traffic_share=s.traffic_share,
                    window_requests=s.window_requests,
                    window_error_ratio=s.window_error_ratio,
                    window_p50_ms=s.window_p50_ms,
                    window_p99_ms=s.window_p99_ms,
                    shadow_requests=s.shadow_requests,
                    shadow_errors=s.shadow_errors,
                    shadow_disagreements=s.shadow_disagreements,
                    shadow_dropped=s.shadow_dropped,
                    window_disagreement_ratio=s.window_disagreement_ratio,
                )
                for s in router.variant_stats(model)
            ],
            serving=serving,
            tripped=lc.tripped or (route.tripped if route is not None else ""),
        )

    def _response(self, model: str) -> apb.RouteResponse:
        return apb.RouteResponse(route=self._route_pb(model))

    @rpc
    async def GetRoutes(self, request: apb.GetRoutesRequest, context: Any) -> apb.GetRoutesResponse:
        if request.model:
            self.lifecycle.known(request.model)
            names = [request.model]
        else:
            names = sorted(
                set(self.lifecycle.state.models) | {v.name for v in self.lifecycle.models.loaded()}
            )
        return apb.GetRoutesResponse(routes=[self._route_pb(n) for n in names])

    @rpc
    async def SetRoute(self, request: apb.SetRouteRequest, context: Any) -> apb.RouteResponse:
        model = _model(request.model)
        if request.mode not in MODES:
            raise InvalidArgument(f"unknown route mode {request.mode}")
        await self.lifecycle.set_route(
            model,
            challenger=request.challenger,
            mode=MODES[request.mode],
            weight=request.weight,
            guardrails=guardrails_from_pb(request.guardrails),
            principal=current_principal().name,
            reason=request.reason,
        )
        return self._response(model)

    @rpc
    async def SetStage(self, request: apb.SetStageRequest, context: Any) -> apb.RouteResponse:
        model = _model(request.model)
        stage = STAGES.get(request.stage)
        if stage is None:
            raise InvalidArgument("stage is required (development, staging, production, ...)")
        await self.lifecycle.set_stage(
            model,
            request.version,
            stage,
            principal=current_principal().name,
            reason=request.reason,
        )
        return self._response(model)

    @rpc
    async def Promote(self, request: apb.PromoteRequest, context: Any) -> apb.RouteResponse:
        model = _model(request.model)
        await self.lifecycle.promote(
            model, request.version, principal=current_principal().name, reason=request.reason
        )
        return self._response(model)

    @rpc
    async def Rollback(self, request: apb.RollbackRequest, context: Any) -> apb.RouteResponse:
        model = _model(request.model)
        await self.lifecycle.rollback(
            model, principal=current_principal().name, reason=request.reason
        )
        return self._response(model)

    @rpc
    async def GetAuditLog(
        self, request: apb.GetAuditLogRequest, context: Any
    ) -> apb.GetAuditLogResponse:
        limit = min(request.limit or 100, MAX_AUDIT_LIMIT)
        entries = await self.lifecycle.audit_entries(request.model, limit)
        return apb.GetAuditLogResponse(entries=[_entry_pb(e) for e in entries])
