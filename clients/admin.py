"""Clients for ``inferd.admin.v1.ModelAdmin``: routes, stages, promote,
rollback and the audit log (the server requires the admin role).

    from inferd.clients.admin import AdminClient
    with AdminClient("127.0.0.1:8001", metadata=[("authorization", "Bearer ...")]) as admin:
        admin.set_stage("plus", 2, "staging")
        admin.set_route("plus", challenger=2, mode="canary", weight=0.1,
                        guardrails={"max_error_ratio": 0.05, "window_seconds": 30})
        admin.promote("plus")        # the challenger becomes the champion
        admin.rollback("plus")       # and back

Routes come back as dicts with the proto's field names (enums by name,
e.g. ``"ROUTE_MODE_CANARY"``); audit entries carry ``time`` as an ISO 8601
string and ``before``/``after`` parsed from JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio

from inferd.clients import _codec
from inferd.clients._codec import Metadata, Unary, message_to_dict
from inferd.clients.errors import from_rpc_error
from inferd.protos.inferd.admin.v1 import admin_pb2 as apb
from inferd.protos.inferd.admin.v1 import admin_pb2_grpc as apb_grpc

T = TypeVar("T")

MODES = ("canary", "shadow", "ab", "blue_green")
STAGES = ("development", "staging", "production", "shadow", "archived")


def _enum(prefix: str, value: str, choices: Sequence[str]) -> int:
    if value not in choices:
        raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
    number: int = (
        apb.DESCRIPTOR.enum_types_by_name["RouteMode" if prefix == "ROUTE_MODE_" else "Stage"]
        .values_by_name[prefix + value.upper()]
        .number
    )
    return number


def _route(reply: Any) -> dict[str, Any]:
    return message_to_dict(reply.route)


def _entry(entry: Any) -> dict[str, Any]:
    out = message_to_dict(entry)
    out["time"] = entry.time.ToDatetime().isoformat() + "Z"
    for field in ("before", "after"):
        text = out.pop(f"{field}_json", "")
        out[field] = json.loads(text) if text else None
    return out


GUARDRAILS = (
    "window_seconds",
    "min_requests",
    "max_error_ratio",
    "max_p99_ms",
    "max_disagreement_ratio",
)


def _guardrails(values: Mapping[str, float]) -> apb.Guardrails:
    unknown = sorted(set(values) - set(GUARDRAILS))
    if unknown:
        raise ValueError(
            f"unknown guardrail(s) {', '.join(unknown)}; known: {', '.join(GUARDRAILS)}"
        )
    out = apb.Guardrails()
    for key, value in values.items():
        setattr(out, key, int(value) if key == "min_requests" else float(value))
    return out


def get_routes(model: str = "") -> Unary[list[dict[str, Any]]]:
    return Unary(
        "GetRoutes",
        apb.GetRoutesRequest(model=model),
        lambda r: [message_to_dict(route) for route in r.routes],
    )


def set_route(
    model: str,
    challenger: int,
    mode: str = "canary",
    weight: float = 0.0,
    guardrails: Mapping[str, float] | None = None,
    reason: str = "",
) -> Unary[dict[str, Any]]:
    request = apb.SetRouteRequest(
        model=model,
        challenger=challenger,
        mode=_enum("ROUTE_MODE_", mode, MODES),  # type: ignore[arg-type]
        weight=weight,
        guardrails=_guardrails(guardrails or {}),
        reason=reason,
    )
    return Unary("SetRoute", request, _route)


def set_stage(model: str, version: int, stage: str, reason: str = "") -> Unary[dict[str, Any]]:
    request = apb.SetStageRequest(
        model=model,
        version=version,
        stage=_enum("STAGE_", stage, STAGES),  # type: ignore[arg-type]
        reason=reason,
    )
    return Unary("SetStage", request, _route)


def promote(model: str, version: int = 0, reason: str = "") -> Unary[dict[str, Any]]:
    return Unary("Promote", apb.PromoteRequest(model=model, version=version, reason=reason), _route)


def rollback(model: str, reason: str = "") -> Unary[dict[str, Any]]:
    return Unary("Rollback", apb.RollbackRequest(model=model, reason=reason), _route)


def audit_log(model: str = "", limit: int = 100) -> Unary[list[dict[str, Any]]]:
    return Unary(
        "GetAuditLog",
        apb.GetAuditLogRequest(model=model, limit=limit),
        lambda r: [_entry(e) for e in r.entries],
    )


def drift(model: str = "") -> Unary[dict[str, Any]]:
    return Unary("GetDrift", apb.GetDriftRequest(model=model), message_to_dict)


class AdminClient:
    """Blocking ModelAdmin client; arguments as ``clients.InferenceClient``."""

    def __init__(
        self,
        url: str,
        *,
        metadata: Metadata = (),
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        options = _codec.channel_options(_codec.DEFAULT_MAX_MESSAGE_BYTES, channel_options)
        self._channel = _codec.open_channel(url, credentials, options)
        self._stub = apb_grpc.ModelAdminStub(self._channel)
        self._metadata = _codec.normalize_metadata(metadata)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, op: Unary[T], timeout: float | None = 60.0) -> T:
        try:
            reply = getattr(self._stub, op.method)(
                op.request, timeout=timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return op.parse(reply)

    def routes(self, model: str = "") -> list[dict[str, Any]]:
        return self._call(get_routes(model))

    def set_route(
        self,
        model: str,
        challenger: int,
        mode: str = "canary",
        weight: float = 0.0,
        guardrails: Mapping[str, float] | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        """Set the challenger (0 clears it). ``guardrails`` keys are the proto's:
        window_seconds, min_requests, max_error_ratio, max_p99_ms,
        max_disagreement_ratio."""
        return self._call(set_route(model, challenger, mode, weight, guardrails, reason))

    def set_stage(self, model: str, version: int, stage: str, reason: str = "") -> dict[str, Any]:
        return self._call(set_stage(model, version, stage, reason))

    def promote(self, model: str, version: int = 0, reason: str = "") -> dict[str, Any]:
        return self._call(promote(model, version, reason))

    def rollback(self, model: str, reason: str = "") -> dict[str, Any]:
        return self._call(rollback(model, reason))

    def audit_log(self, model: str = "", limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        return self._call(audit_log(model, limit))

    def drift(self, model: str = "") -> dict[str, Any]:
        """``tensors`` (model, version, tensor, psi, js_distance, window and
        reference rows), ``psi_threshold`` and ``monitoring`` (on or off)."""
        return self._call(drift(model))


class AsyncAdminClient:
    """``AdminClient`` for asyncio; create it inside the loop that uses it."""

    def __init__(
        self,
        url: str,
        *,
        metadata: Metadata = (),
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        options = _codec.channel_options(_codec.DEFAULT_MAX_MESSAGE_BYTES, channel_options)
        self._channel = _codec.open_aio_channel(url, credentials, options)
        self._stub = apb_grpc.ModelAdminStub(self._channel)
        self._metadata = _codec.normalize_metadata(metadata)

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncAdminClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(self, op: Unary[T], timeout: float | None = 60.0) -> T:
        try:
            reply = await getattr(self._stub, op.method)(
                op.request, timeout=timeout, metadata=self._metadata
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return op.parse(reply)

    async def routes(self, model: str = "") -> list[dict[str, Any]]:
        return await self._call(get_routes(model))

    async def set_route(
        self,
        model: str,
        challenger: int,
        mode: str = "canary",
        weight: float = 0.0,
        guardrails: Mapping[str, float] | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        return await self._call(set_route(model, challenger, mode, weight, guardrails, reason))

    async def set_stage(
        self, model: str, version: int, stage: str, reason: str = ""
    ) -> dict[str, Any]:
        return await self._call(set_stage(model, version, stage, reason))

    async def promote(self, model: str, version: int = 0, reason: str = "") -> dict[str, Any]:
        return await self._call(promote(model, version, reason))

    async def rollback(self, model: str, reason: str = "") -> dict[str, Any]:
        return await self._call(rollback(model, reason))

    async def audit_log(self, model: str = "", limit: int = 100) -> list[dict[str, Any]]:
        return await self._call(audit_log(model, limit))
