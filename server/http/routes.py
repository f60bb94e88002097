"""The KServe V2 REST endpoints (with Triton's extensions): HTTP in, data
plane and model manager calls, JSON out. Like the gRPC servicer, no
inference logic of its own.

``ROUTES`` lists every endpoint with the gRPC method it mirrors: that twin
names the role the endpoint needs (``server.auth.policy``), so both
protocols share one table.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import Span

from inferd.server.about import EXTENSIONS, SERVER_NAME, SERVER_VERSION
from inferd.server.codec import RequestLimits
from inferd.server.errors import FailedPrecondition, InvalidArgument, status_of
from inferd.server.http import documents, tensors
from inferd.server.http.spans import end_infer_span, start_infer_span
from inferd.server.http.status import HTTP_STATUS
from inferd.server.identity import current_principal

if TYPE_CHECKING:
    from inferd.server.dataplane import DataPlane
    from inferd.server.lifecycle.controller import LifecycleController

#: Header giving the length of the JSON part of a body with binary tensors.
HEADER_LENGTH = "Inference-Header-Content-Length"
#: Header carrying the A/B routing key (as gRPC's ``x-routing-key`` metadata).
ROUTING_KEY_HEADER = "X-Routing-Key"
MAX_ROUTING_KEY = 256
#: Longest JSON body of the non-inference POST endpoints.
SMALL_BODY = 64 << 10

_V2 = "/inference.GRPCInferenceService/"

Handler = Callable[["HttpEndpoints", web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: str
    #: The gRPC method this endpoint mirrors (its role in the policy table).
    twin: str
    summary: str


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _empty(ok: bool) -> web.Response:
    """Health and readiness: 200 when true, 503 otherwise (probes read the status)."""
    return web.Response(status=200 if ok else 503)


def _model(request: web.Request) -> tuple[str, str]:
    return request.match_info["model"], request.match_info.get("version", "")


async def _small_json(request: web.Request) -> dict[str, Any]:
    """The optional JSON object body of a repository endpoint."""
    if request.content_length is not None and request.content_length > SMALL_BODY:
        raise InvalidArgument(f"request body over {SMALL_BODY} bytes")
    body = await request.content.read(SMALL_BODY + 1)
    if len(body) > SMALL_BODY:
        raise InvalidArgument(f"request body over {SMALL_BODY} bytes")
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidArgument("request body must be a JSON object")
    return doc


def header_length(request: web.Request) -> int | None:
    text = request.headers.get(HEADER_LENGTH)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"{HEADER_LENGTH} must be an integer") from None


class HttpEndpoints:
    def __init__(
        self,
        dataplane: DataPlane,
        *,
        lifecycle: LifecycleController | None,
        limits: RequestLimits,
    ) -> None:
        self.dataplane = dataplane
        self.lifecycle = lifecycle
        self.limits = limits

    # -- health and metadata ---------------------------------------------------------------

    async def live(self, request: web.Request) -> web.Response:
        return _empty(True)

    async def ready(self, request: web.Request) -> web.Response:
        plane = self.dataplane
        return _empty(not plane.draining and plane.models.server_ready)

    async def model_ready(self, request: web.Request) -> web.Response:
        plane = self.dataplane
        name, version = _model(request)
        return _empty(not plane.draining and plane.models.is_ready(name, version))

    async def server_metadata(self, request: web.Request) -> web.Response:
        return _json({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})

    async def model_metadata(self, request: web.Request) -> web.Response:
        version = self.dataplane.version(*_model(request))
        self.dataplane.authorize(version)
        versions = [v.version_str for v in self.dataplane.models.versions(version.name)]
        return _json(documents.model_metadata(version, versions))

    async def model_config(self, request: web.Request) -> web.Response:
        version = self.dataplane.version(*_model(request))
        self.dataplane.authorize(version)
        return _json(documents.message_json(version.config))

    async def statistics(self, request: web.Request) -> web.Response:
        plane = self.dataplane
        models = plane.models
        name, version = request.match_info.get("model", ""), request.match_info.get("version", "")
        if not name:
            versions = [v for v in models.loaded() if plane.allowed(v)]
        else:
            if version:
                versions = [models.resolve(name, version)]
            else:
                models.resolve(name)  # 404 / 503 as for inference
                versions = models.versions(name)
            for v in versions:
                plane.authorize(v)
        return _json({"model_stats": [documents.model_statistics(v) for v in versions]})

    # -- repository ------------------------------------------------------------------------

    async def repository_index(self, request: web.Request) -> web.Response:
        doc = await _small_json(request)
        ready = doc.get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidArgument("'ready' must be true or false")
        return _json(
            [
                {"name": n, "version": v, "state": s, "reason": r}
                for n, v, s, r in self.dataplane.models.index(ready_only=ready)
            ]
        )

    async def _lifecycle(self, request: web.Request, what: str) -> LifecycleController:
        doc = await _small_json(request)
        params = doc.get("parameters") or {}
        if not isinstance(params, dict):
            raise InvalidArgument("'parameters' must be a JSON object")
        params = {k: v for k, v in params.items() if k != "unload_dependents"}
        if params:
            names = ", ".join(repr(k[:40]) for k in sorted(params))
            raise InvalidArgument(f"{what} parameters are not supported (got {names})")
        if self.lifecycle is None:
            raise FailedPrecondition("this server does not load or unload models on request")
        return self.lifecycle

    async def load(self, request: web.Request) -> web.Response:
        lifecycle = await self._lifecycle(request, "load")
        await lifecycle.load_model(request.match_info["model"], principal=current_principal().name)
        return _json({})

    async def unload(self, request: web.Request) -> web.Response:
        lifecycle = await self._lifecycle(request, "unload")
        await lifecycle.unload_model(
            request.match_info["model"], principal=current_principal().name
        )
        return _json({})

    # -- inference -------------------------------------------------------------------------

    async def infer(self, request: web.Request) -> web.Response:
        tracing = self.dataplane.tracing
        if tracing is None:
            return await self._infer(request, None)
        span = start_infer_span(tracing, dict(request.headers))
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                response = await self._infer(request, span)
        except BaseException as exc:
            status, message = status_of(exc)
            end_infer_span(span, HTTP_STATUS[status], message)
            raise
        end_infer_span(span, response.status)
        return response

    async def _infer(self, request: web.Request, span: Span | None) -> web.Response:
        plane = self.dataplane
        plane.last_call = time.monotonic()
        limits = self.limits
        length = header_length(request)
        body = await request.read()
        parsed = tensors.parse_request(body, length, limits)
        name, version = _model(request)

        def routing_key() -> str:
            value = parsed.parameters.get("routing_key")
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, str | int):
                    raise InvalidArgument("parameter 'routing_key' must be a string or an integer")
                return str(value)[:MAX_ROUTING_KEY]
            return request.headers.get(ROUTING_KEY_HEADER, "")[:MAX_ROUTING_KEY]

        answer = await plane.infer(
            name,
            version,
            lambda io: tensors.decode_request(parsed, io, limits),
            routing_key=routing_key,
            request_id=parsed.id,
            span=span,
            protocol="http",
        )
        v = answer.version
        body, json_length = tensors.encode_response(
            v.name,
            v.version_str,
            parsed,
            answer.outputs,
            v.io,
            answer.request.outputs,
            answer.request.classification,
        )
        if json_length is None:
            return web.Response(body=body, content_type="application/json")
        response = web.Response(body=body, content_type="application/octet-stream")
        response.headers[HEADER_LENGTH] = str(json_length)
        return response


_MODEL = "/v2/models/{model}"
_VERSION = "/v2/models/{model}/versions/{version}"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2/health/live", "live", _V2 + "ServerLive", "server liveness"),
    Route("GET", "/v2/health/ready", "ready", _V2 + "ServerReady", "server readiness"),
    Route("GET", "/v2", "server_metadata", _V2 + "ServerMetadata", "server metadata"),
    Route("GET", _MODEL, "model_metadata", _V2 + "ModelMetadata", "model metadata"),
    Route("GET", _VERSION, "model_metadata", _V2 + "ModelMetadata", "model version metadata"),
    Route("GET", _MODEL + "/ready", "model_ready", _V2 + "ModelReady", "model readiness"),
    Route("GET", _VERSION + "/ready", "model_ready", _V2 + "ModelReady", "model version readiness"),
    Route("GET", _MODEL + "/config", "model_config", _V2 + "ModelConfig", "model configuration"),
    Route(
        "GET",
        _VERSION + "/config",
        "model_config",
        _V2 + "ModelConfig",
        "model version configuration",
    ),
    Route("GET", "/v2/models/stats", "statistics", _V2 + "ModelStatistics", "all statistics"),
    Route("GET", _MODEL + "/stats", "statistics", _V2 + "ModelStatistics", "model statistics"),
    Route(
        "GET",
        _VERSION + "/stats",
        "statistics",
        _V2 + "ModelStatistics",
        "model version statistics",
    ),
    Route("POST", _MODEL + "/infer", "infer", _V2 + "ModelInfer", "inference"),
    Route("POST", _VERSION + "/infer", "infer", _V2 + "ModelInfer", "inference on a version"),
    Route(
        "POST", "/v2/repository/index", "repository_index", _V2 + "RepositoryIndex", "model index"
    ),
    Route(
        "POST",
        "/v2/repository/models/{model}/load",
        "load",
        _V2 + "RepositoryModelLoad",
        "load or reload a model",
    ),
    Route(
        "POST",
        "/v2/repository/models/{model}/unload",
        "unload",
        _V2 + "RepositoryModelUnload",
        "unload a model",
    ),
)
