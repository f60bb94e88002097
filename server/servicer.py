"""``inference.GRPCInferenceService``: the protocol edge.

Protobuf stops here. Each handler decodes its message, asks the model manager
(the router) for a version, hands numpy to that version's scheduler and
encodes the answer. ``_rpc`` turns every error into a gRPC status in one
place, so no handler leaks an exception's text.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import numpy as np
from opentelemetry import trace
from opentelemetry.trace import Span

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.protos.model_card import with_model_card
from inferd.server.codec import DEFAULT_LIMITS, RequestLimits, decode_request, encode_response
from inferd.server.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InferdError,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
    Unimplemented,
    status_of,
)
from inferd.server.identity import current_principal
from inferd.server.models import ModelManager, ModelVersion
from inferd.server.observer import ServerObserver, VersionObserver
from inferd.server.request import InferRequest
from inferd.server.routing import Decision, Router, outputs_agree
from inferd.server.stats import Duration, ModelStats
from inferd.server.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from inferd.server.lifecycle.controller import LifecycleController

log = logging.getLogger("inferd.servicer")
#: ``--log-requests``: one INFO line per inference request.
request_log = logging.getLogger("inferd.requests")

SERVER_NAME = "inferd"
SERVER_VERSION = "0.1.0"
#: Protocol extensions this server implements (Triton's names); kept truthful
#: by tests that exercise each one.
EXTENSIONS = ("model_configuration", "statistics", "parameters", "model_repository")

#: Request parameter and gRPC metadata key carrying the A/B routing key.
ROUTING_KEY_PARAMETER = "routing_key"
ROUTING_KEY_METADATA = "x-routing-key"
#: Longest routing key used; the rest is ignored.
MAX_ROUTING_KEY = 256
#: Deadline of a mirrored (shadow) request, seconds.
SHADOW_TIMEOUT_S = 30.0

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


def _rpc(fn: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Map domain errors to their status and anything else to a bare INTERNAL;
    with tracing on, run the handler inside the RPC's server span."""
    method = fn.__name__

    async def call(
        self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any], span: Span | None
    ) -> Resp:
        code, message = grpc.StatusCode.OK, ""
        try:
            return await fn(self, request, context)
        except InferdError as exc:
            code, message = exc.code, exc.message
            await context.abort(code, message)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:  # the handler aborted by itself
            set_code = context.code()
            code = set_code if isinstance(set_code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
            raise
        except Exception:
            log.exception("unexpected error in %s", method, extra={"event": "error"})
            code, message = status_of(Exception())
            await context.abort(code, message)
        finally:
            if span is not None:
                Tracing.end_rpc(span, code, message)
        raise AssertionError("unreachable")  # abort always raises

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        # Other services share this decorator (the admin servicer): only the
        # inference servicer traces.
        tracing: Tracing | None = getattr(self, "tracing", None)
        if tracing is None:
            return await call(self, request, context, None)
        span = tracing.start_rpc(method, context)
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            return await call(self, request, context, span)

    return wrapper


def _code_of(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, InferdError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.INTERNAL


def _deadline(context: grpc.aio.ServicerContext[Any, Any], request: InferRequest) -> float | None:
    """Earliest of the gRPC deadline and Triton's ``timeout`` parameter (µs)."""
    now = time.monotonic()
    deadline: float | None = None
    remaining = context.time_remaining()
    if remaining is not None:
        deadline = now + remaining
    timeout_us = request.parameters.get("timeout")
    if timeout_us is not None:
        if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us < 0:
            raise InvalidArgument("parameter 'timeout' must be a non-negative integer (µs)")
        if timeout_us > 0:
            limit = now + timeout_us / 1e6
            deadline = limit if deadline is None else min(deadline, limit)
    return deadline


def _priority(request: InferRequest) -> int:
    """Triton's ``priority`` request parameter; 0 means the model's default."""
    value = request.parameters.get("priority", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument("parameter 'priority' must be a non-negative integer")
    return value


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def _statistics(version: ModelVersion) -> pb.ModelStatistics:
    s: ModelStats = version.stats
    return pb.ModelStatistics(
        name=version.name,
        version=version.version_str,
        last_inference=s.last_inference_ms,
        inference_count=s.inference_count,
        execution_count=s.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(s.success),
            fail=_duration(s.fail),
            queue=_duration(s.queue),
            compute_input=_duration(s.compute_input),
            compute_infer=_duration(s.compute_infer),
            compute_output=_duration(s.compute_output),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=size,
                compute_input=_duration(b.compute_input),
                compute_infer=_duration(b.compute_infer),
                compute_output=_duration(b.compute_output),
            )
            for size, b in sorted(s.batches.items())
        ],
    )


def _routing_key(msg: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The A/B routing key: the ``routing_key`` request parameter, else the
    ``x-routing-key`` metadata entry; "" when neither is sent."""
    if ROUTING_KEY_PARAMETER in msg.parameters:
        param = msg.parameters[ROUTING_KEY_PARAMETER]
        kind = param.WhichOneof("parameter_choice")
        if kind == "string_param":
            return param.string_param[:MAX_ROUTING_KEY]
        if kind in ("int64_param", "uint64_param"):
            return str(getattr(param, kind))
        raise InvalidArgument("parameter 'routing_key' must be a string or an integer")
    for key, value in context.invocation_metadata() or ():
        if key == ROUTING_KEY_METADATA:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            return text[:MAX_ROUTING_KEY]
    return ""


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        models: ModelManager,
        *,
        router: Router | None = None,
        lifecycle: LifecycleController | None = None,
        max_elements: int | None = None,
        limits: RequestLimits = DEFAULT_LIMITS,
        enforce_model_roles: bool = False,
        tracing: Tracing | None = None,
        log_requests: bool = False,
    ) -> None:
        self.models = models
        self.router = router or Router(models)
        self.lifecycle = lifecycle
        self.limits = limits if max_elements is None else replace(limits, max_elements=max_elements)
        #: Check each model's ``allowed_roles`` against the caller's roles
        #: (on when authentication is configured).
        self.enforce_model_roles = enforce_model_roles
        #: Set while shutting down: readiness turns false, new work is refused.
        self.draining = False
        #: Inference requests admitted (past the draining check) and not yet answered.
        self.inflight = 0
        #: Inference requests admitted since start (each gets an answer or, past
        #: the shutdown grace period, is cancelled).
        self.admitted = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: When the last inference call (unary, or a stream opening) arrived,
        #: refused ones included; shutdown waits for these to stop (app.stop).
        self.last_call = 0.0
        self._shadows: set[asyncio.Task[None]] = set()
        #: None when tracing is off: handlers test this once and do no tracer work.
        self.tracing = tracing
        self.observer: ServerObserver = models.observer
        self.log_requests = log_requests

    @property
    def max_elements(self) -> int:
        return self.limits.max_elements

    async def drain(self, timeout: float) -> bool:
        """Refuse new inference and wait up to ``timeout`` s for admitted
        requests to be answered; True when none is left."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def _authorize(self, version: ModelVersion) -> None:
        """Per-model roles (config parameter ``allowed_roles``)."""
        if not self.enforce_model_roles or not version.allowed_roles:
            return
        principal = current_principal()
        if not principal.roles & version.allowed_roles:
            raise PermissionDenied(
                f"'{principal.name}' may not use model '{version.name}' (it needs one of the "
                f"roles {sorted(version.allowed_roles)})"
            )

    def _allowed(self, version: ModelVersion) -> bool:
        try:
            self._authorize(version)
        except PermissionDenied:
            return False
        return True

    async def close(self) -> None:
        """Cancel mirrored requests still running (they answer nobody)."""
        for task in list(self._shadows):
            task.cancel()
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)

    # -- health and metadata ---------------------------------------------------------------

    @_rpc
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Any
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Any
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=not self.draining and self.models.all_ready)

    @_rpc
    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        ready = not self.draining and self.models.is_ready(request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    @_rpc
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
        )

    def _version(self, name: str, version: str) -> ModelVersion:
        """An explicit version, or the one serving unversioned requests."""
        return self.models.resolve(name, version) if version else self.router.serving(name)

    @_rpc
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        version = self._version(request.name, request.version)
        self._authorize(version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        response = pb.ModelMetadataResponse(
            name=version.name,
            versions=[v.version_str for v in self.models.versions(version.name)],
            platform=version.platform,
            inputs=[
                tensor(name=t.name, datatype=t.datatype, shape=t.shape)
                for t in version.io.inputs.values()
            ],
            outputs=[
                tensor(name=t.name, datatype=t.datatype, shape=t.shape)
                for t in version.io.outputs.values()
            ],
        )
        return with_model_card(response, version.card)

    @_rpc
    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Any
    ) -> pb.ModelConfigResponse:
        version = self._version(request.name, request.version)
        self._authorize(version)
        return pb.ModelConfigResponse(config=version.config)

    @_rpc
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Any
    ) -> pb.ModelStatisticsResponse:
        if not request.name:
            if request.version:
                raise InvalidArgument("a version needs a model name")
            versions = self.models.loaded()
        elif request.version:
            versions = [self.models.resolve(request.name, request.version)]
        else:
            self.models.resolve(request.name)  # NOT_FOUND / UNAVAILABLE as for inference
            versions = self.models.versions(request.name)
        if request.name:
            for v in versions:
                self._authorize(v)
        else:
            versions = [v for v in versions if self._allowed(v)]
        return pb.ModelStatisticsResponse(model_stats=[_statistics(v) for v in versions])

    @_rpc
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Any
    ) -> pb.RepositoryIndexResponse:
        if request.repository_name:
            raise InvalidArgument(
                "this server has a single model repository; leave repository_name empty"
            )
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(
            models=[
                index(name=n, version=v, state=s, reason=r)
                for n, v, s, r in self.models.index(ready_only=request.ready)
            ]
        )

    def _repository_request(
        self, repository_name: str, model_name: str, parameters: Any, what: str
    ) -> LifecycleController:
        if repository_name:
            raise InvalidArgument(
                "this server has a single model repository; leave repository_name empty"
            )
        if not model_name:
            raise InvalidArgument("model_name is required")
        if parameters:
            names = ", ".join(repr(k[:40]) for k in sorted(parameters))
            raise InvalidArgument(f"{what} parameters are not supported (got {names})")
        if self.lifecycle is None:
            raise FailedPrecondition("this server does not load or unload models on request")
        return self.lifecycle

    @_rpc
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        """Load or reload a model (explicit model control mode). New or changed
        versions warm up beside the serving ones, then take over; a failure
        is reported and leaves what serves untouched."""
        lifecycle = self._repository_request(
            request.repository_name, request.model_name, request.parameters, "load"
        )
        await lifecycle.load_model(request.model_name, principal=current_principal().name)
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        """Unload every version of a model once its admitted requests finish."""
        # Triton's unload_dependents (ensembles) has nothing to act on here.
        parameters = {k: v for k, v in request.parameters.items() if k != "unload_dependents"}
        lifecycle = self._repository_request(
            request.repository_name, request.model_name, parameters, "unload"
        )
        await lifecycle.unload_model(request.model_name, principal=current_principal().name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference -------------------------------------------------------------------------

    async def _infer(
        self,
        msg: pb.ModelInferRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        span: Span | None = None,
    ) -> pb.ModelInferResponse:
        """One inference request; ``span`` is its trace span (tracing on)."""
        start = time.monotonic_ns()
        version: ModelVersion | None = None
        decision: Decision | None = None
        code = grpc.StatusCode.OK
        failure: BaseException | None = None
        outputs: dict[str, np.ndarray] | None = None
        rows = 0
        admitted = False
        try:
            if msg.model_version:
                # An explicit version bypasses routes.
                version = self.models.resolve(msg.model_name, msg.model_version)
            else:
                decision = self.router.route(msg.model_name, lambda: _routing_key(msg, context))
                version = decision.version
            if self.draining:
                decision = None  # shutting down says nothing about the variant
                version.observer.on_refused("draining")
                raise Unavailable("server is shutting down; retry on another replica")
            # Admitted: a drain waits for its answer.
            admitted = True
            self.inflight += 1
            self.admitted += 1
            self._idle.clear()
            self._authorize(version)
            # Phase spans only for sampled requests: an unsampled one keeps its
            # (non-recording) span for context and log correlation, nothing more.
            tracing = self.tracing if span is not None and span.is_recording() else None
            if tracing is not None and span is not None:
                span.set_attributes(
                    {"inferd.model.name": version.name, "inferd.model.version": version.version_str}
                )
            with tracing.phase("decode", span) if tracing and span else contextlib.nullcontext():
                request = decode_request(msg, version.io, limits=self.limits)
                request.deadline = _deadline(context, request)
                request.priority = _priority(request)
            now = time.monotonic()
            if span is not None:
                request.trace = span  # batch links reach unsampled requests too
            if tracing is not None and span is not None:
                span.set_attribute("inferd.request.rows", request.rows)
                if request.deadline is not None:
                    span.set_attribute(
                        "inferd.deadline.remaining_ms", round((request.deadline - now) * 1e3, 3)
                    )
            if request.deadline is not None and now >= request.deadline:
                version.observer.on_refused("expired_on_arrival")
                raise DeadlineExceeded("deadline already expired on arrival")
            outputs = await version.scheduler.submit(request)
            with tracing.phase("encode", span) if tracing and span else contextlib.nullcontext():
                response = encode_response(
                    version.name, version.version_str, msg.id, outputs, version.io, request.outputs
                )
            rows = request.rows
            return response
        except BaseException as exc:
            code, failure = _code_of(exc), exc
            raise
        finally:
            elapsed = time.monotonic_ns() - start
            self._record(msg, version, code, elapsed, rows)
            if decision is not None:
                self._route_outcome(msg, decision, failure, elapsed, outputs)
            if admitted:
                self.inflight -= 1
                if self.inflight == 0:
                    self._idle.set()

    def _route_outcome(
        self,
        msg: pb.ModelInferRequest,
        decision: Decision,
        failure: BaseException | None,
        elapsed_ns: int,
        outputs: dict[str, np.ndarray] | None,
    ) -> None:
        """What the router learns from a routed request (and the shadow it may start)."""
        if failure is None:
            self.router.record(decision, True, elapsed_ns / 1e9)
            if (
                outputs is not None
                and decision.shadow is not None
                and self.router.begin_shadow(decision)
            ):
                task = asyncio.create_task(self._shadow(msg, decision, outputs))
                self._shadows.add(task)
                task.add_done_callback(self._shadows.discard)
        elif isinstance(failure, InferdError) and not isinstance(failure, Cancelled):
            self.router.record(decision, False, elapsed_ns / 1e9)

    def _record(
        self,
        msg: pb.ModelInferRequest,
        version: ModelVersion | None,
        code: grpc.StatusCode,
        elapsed_ns: int,
        rows: int,
    ) -> None:
        """Statistics, metrics and the request log line for one answered request."""
        observer: VersionObserver
        if version is None:  # never reached a version: no ModelStatistics to keep
            observer = self.observer.unrouted(msg.model_name)
        else:
            if code is grpc.StatusCode.OK:
                version.stats.record_success(elapsed_ns, rows)
            else:
                version.stats.record_failure(elapsed_ns)
            observer = version.observer
        observer.on_request(code.name, elapsed_ns / 1e9, rows)
        if self.log_requests:
            request_log.info(
                "%s %s",
                msg.model_name[:80],
                code.name,
                extra={
                    "event": "request",
                    "model": msg.model_name[:80],
                    "version": version.version_str if version is not None else "",
                    "request_id": msg.id[:80],
                    "code": code.name,
                    "duration_ms": round(elapsed_ns / 1e6, 3),
                    "rows": rows,
                },
            )

    async def _shadow(
        self, msg: pb.ModelInferRequest, decision: Decision, expected: dict[str, np.ndarray]
    ) -> None:
        """Mirror a request the champion answered to the challenger and compare.
        Runs after the caller's answer and never reaches the caller."""
        shadow = decision.shadow
        assert shadow is not None
        start = time.monotonic()
        ok, agree, dropped = False, None, False
        try:
            request = decode_request(msg, shadow.io, limits=self.limits)
            request.deadline = start + SHADOW_TIMEOUT_S
            outputs = await shadow.scheduler.submit(request)
            ok = True
            agree = outputs_agree(expected, outputs)
        except Unavailable:
            dropped = True  # unloading or queue full: not the challenger's answer
        except InferdError:
            pass
        except asyncio.CancelledError:
            dropped = True
            raise
        except Exception:
            log.exception("shadow request failed")
        finally:
            self.router.end_shadow(
                decision,
                ok=ok,
                latency_s=time.monotonic() - start,
                agree=agree,
                dropped=dropped,
            )

    @_rpc
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        self.last_call = time.monotonic()
        span = trace.get_current_span() if self.tracing is not None else None
        return await self._infer(request, context, span)

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Triton's streaming semantics: requests run concurrently (and batch
        with everything else), responses carry the request id and come back as
        they finish, a failed request answers ``error_message`` and the stream
        goes on."""
        self.last_call = time.monotonic()
        results: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        tracing = self.tracing
        stream_span = tracing.start_rpc("ModelStreamInfer", context) if tracing else None

        async def one(msg: pb.ModelInferRequest) -> None:
            span = None
            if tracing is not None and stream_span is not None:
                span = tracing.start_child("inferd.stream_request", stream_span)
            try:
                if span is None:
                    response = await self._infer(msg, context)
                else:
                    with trace.use_span(
                        span, record_exception=False, set_status_on_exception=False
                    ):
                        response = await self._infer(msg, context, span)
                    Tracing.end_rpc(span, grpc.StatusCode.OK)
                results.put_nowait(pb.ModelStreamInferResponse(infer_response=response))
            except asyncio.CancelledError:
                if span is not None:
                    Tracing.end_rpc(span, grpc.StatusCode.CANCELLED)
                raise
            except Exception as exc:
                if not isinstance(exc, InferdError):
                    log.exception("unexpected error in ModelStreamInfer", extra={"event": "error"})
                code, message = status_of(exc)
                if span is not None:
                    Tracing.end_rpc(span, code, message)
                results.put_nowait(
                    pb.ModelStreamInferResponse(
                        error_message=message,
                        infer_response=pb.ModelInferResponse(
                            model_name=msg.model_name, model_version=msg.model_version, id=msg.id
                        ),
                    )
                )

        async def reader() -> None:
            try:
                async for msg in request_iterator:
                    task = asyncio.create_task(one(msg))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while tasks:
                    await asyncio.gather(*list(tasks))
            finally:
                results.put_nowait(None)

        read_task = asyncio.create_task(reader())
        code = grpc.StatusCode.OK
        try:
            while (item := await results.get()) is not None:
                yield item
            await read_task
        except BaseException as exc:
            code = _code_of(exc)
            raise
        finally:
            read_task.cancel()
            for task in list(tasks):
                task.cancel()
            if stream_span is not None:
                Tracing.end_rpc(stream_span, code)

    # -- not offered -----------------------------------------------------------------------

    @staticmethod
    def _unimplemented(what: str) -> Unimplemented:
        return Unimplemented(f"{what} is not supported by inferd")

    @_rpc
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        raise self._unimplemented("system shared memory")

    @_rpc
    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        raise self._unimplemented("system shared memory")

    @_rpc
    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        raise self._unimplemented("system shared memory")

    @_rpc
    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        raise self._unimplemented("CUDA shared memory")

    @_rpc
    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        raise self._unimplemented("CUDA shared memory")

    @_rpc
    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        raise self._unimplemented("CUDA shared memory")

    @_rpc
    async def TraceSetting(self, request: Any, context: Any) -> Any:
        raise self._unimplemented("TraceSetting")

    @_rpc
    async def LogSettings(self, request: Any, context: Any) -> Any:
        raise self._unimplemented("LogSettings")
