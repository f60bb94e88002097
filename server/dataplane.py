"""One inference, from a decoded request to its outputs, for every front end.

A front end (the gRPC servicer today) turns its wire format into a model
name, a version, a routing key and a decode callback, calls ``DataPlane.infer``
and encodes what comes back. Everything between lives here, once: routing
(canary, shadow, A/B, blue-green), drain and in-flight accounting,
per-model authorization, deadlines, submission to the version's scheduler,
statistics, metrics, the request log, router feedback and shadow mirroring.

No transport here: errors are ``server.errors`` domain errors, which each
front end maps to its own status codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np

from inferd.server.array_request import array_request
from inferd.server.ensemble.link import StepAnswer, StepCall
from inferd.server.ensemble.tensors import config_outputs, step_request
from inferd.server.errors import (
    Cancelled,
    DeadlineExceeded,
    InferdError,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from inferd.server.identity import current_principal, reset_principal, set_principal
from inferd.server.model_io import ModelIO
from inferd.server.model_link import ModelCall
from inferd.server.model_version import ModelVersion
from inferd.server.models import ModelManager
from inferd.server.monitoring.freshness import feature_timestamp
from inferd.server.observer import ServerObserver, VersionObserver
from inferd.server.request import InferRequest
from inferd.server.routing import Decision, Router, outputs_agree

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from inferd.server.telemetry.tracing import Tracing

log = logging.getLogger("inferd.dataplane")
#: ``--log-requests``: one INFO line per inference request.
request_log = logging.getLogger("inferd.requests")

#: Deadline of a mirrored (shadow) request, seconds.
SHADOW_TIMEOUT_S = 30.0

#: Builds the numpy request for the version the router chose (the inputs a
#: request must carry depend on that version).
Decode = Callable[[ModelIO], InferRequest]


def _no_key() -> str:
    return ""


class Answer(NamedTuple):
    """What one inference returns to its front end."""

    outputs: dict[str, np.ndarray]
    #: The version that answered (the route's choice for unversioned requests).
    version: ModelVersion
    #: The decoded request (its ``outputs`` gives the caller's output order).
    request: InferRequest


def status_name(exc: BaseException) -> str:
    """The status name (gRPC's, shared by metrics and logs) an exception ends
    a request with."""
    if isinstance(exc, InferdError):
        return exc.code.name
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELLED"
    return "INTERNAL"


def request_deadline(request: InferRequest, deadline: float | None) -> float | None:
    """Earliest of the front end's deadline and Triton's ``timeout`` request
    parameter (µs from now; 0 means none)."""
    timeout_us = request.parameters.get("timeout")
    if timeout_us is not None:
        if isinstance(timeout_us, bool) or not isinstance(timeout_us, int) or timeout_us < 0:
            raise InvalidArgument("parameter 'timeout' must be a non-negative integer (µs)")
        if timeout_us > 0:
            limit = time.monotonic() + timeout_us / 1e6
            deadline = limit if deadline is None else min(deadline, limit)
    return deadline


def request_priority(request: InferRequest) -> int:
    """Triton's ``priority`` request parameter; 0 means the model's default."""
    value = request.parameters.get("priority", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument("parameter 'priority' must be a non-negative integer")
    return value


class DataPlane:
    def __init__(
        self,
        models: ModelManager,
        *,
        router: Router | None = None,
        enforce_model_roles: bool = False,
        tracing: Tracing | None = None,
        log_requests: bool = False,
    ) -> None:
        self.models = models
        self.router = router or Router(models)
        #: Check each model's ``allowed_roles`` against the caller's roles
        #: (on when authentication is configured).
        self.enforce_model_roles = enforce_model_roles
        #: None when tracing is off: requests test this once and do no tracer work.
        self.tracing = tracing
        self.log_requests = log_requests
        self.observer: ServerObserver = models.observer
        #: Set while shutting down: readiness turns false, new work is refused.
        self.draining = False
        #: Inference requests admitted (past the draining check) and not yet answered.
        self.inflight = 0
        #: Inference requests admitted since start (each gets an answer or, past
        #: the shutdown grace period, is cancelled).
        self.admitted = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: When the last inference call (a unary one, or a stream opening)
        #: arrived, refused ones included; front ends set it, shutdown waits
        #: for it to stop moving (app.stop).
        self.last_call = 0.0
        #: While set, a draining server's refusals wait for it (app.stop).
        self._refusals_held: asyncio.Event | None = None
        #: Refused calls waiting for it now.
        self.refusals_waiting = 0
        self._shadows: set[asyncio.Task[None]] = set()
        # Ensembles and Python models loaded before (or after) this data plane call here.
        models.link.bind(self.run_step, self.call_model)

    # -- lifecycle -------------------------------------------------------------------------

    async def drain(self, timeout: float) -> bool:
        """Refuse new inference and wait up to ``timeout`` s for admitted
        requests to be answered; True when none is left."""
        self.draining = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    def hold_refusals(self) -> None:
        """From now on a refused call waits for ``release_refusals`` before it
        is answered, so a caller waiting for it sends nothing more."""
        if self._refusals_held is None:
            self._refusals_held = asyncio.Event()

    def release_refusals(self) -> None:
        if self._refusals_held is not None:
            self._refusals_held.set()
            self._refusals_held = None

    async def close(self) -> None:
        """Cancel mirrored requests still running (they answer nobody)."""
        for task in list(self._shadows):
            task.cancel()
        if self._shadows:
            await asyncio.gather(*self._shadows, return_exceptions=True)

    # -- authorization ---------------------------------------------------------------------

    def authorize(self, version: ModelVersion) -> None:
        """Per-model roles (config parameter ``allowed_roles``) for the caller
        ``server.identity`` names; raises ``PermissionDenied``."""
        if not self.enforce_model_roles or not version.allowed_roles:
            return
        principal = current_principal()
        if not principal.roles & version.allowed_roles:
            raise PermissionDenied(
                f"'{principal.name}' may not use model '{version.name}' (it needs one of the "
                f"roles {sorted(version.allowed_roles)})"
            )

    def allowed(self, version: ModelVersion) -> bool:
        try:
            self.authorize(version)
        except PermissionDenied:
            return False
        return True

    def version(self, name: str, version: str = "") -> ModelVersion:
        """An explicit version, or the one serving unversioned requests (for
        metadata; inference routes per request)."""
        return self.models.resolve(name, version) if version else self.router.serving(name)

    # -- inference -------------------------------------------------------------------------

    async def infer(
        self,
        model: str,
        version: str,
        decode: Decode,
        *,
        routing_key: Callable[[], str] = _no_key,
        request_id: str = "",
        deadline: float | None = None,
        span: Span | None = None,
        protocol: str = "grpc",
        nested: bool = False,
        check_roles: bool = True,
    ) -> Answer:
        """Answer one request for ``model`` (``version`` "" lets the route
        choose; an explicit one bypasses routes). ``routing_key`` is called
        only for A/B routes; ``deadline`` is a ``time.monotonic()`` time or
        None; ``span`` is the request's trace span (tracing on); ``protocol``
        names the front end for metrics (``"grpc"``, ``"http"``, ``"ensemble"``,
        ``"bls"``); ``nested``: part of a request already admitted (an
        ensemble's step, a BLS call of a batch), which a drain must not refuse
        nor count again; ``check_roles`` False: the request is already
        authorized (an ensemble step: its model is the ensemble's choice, not
        the caller's). Raises ``InferdError`` subclasses, or ``CancelledError``."""
        start = time.monotonic_ns()
        answering: ModelVersion | None = None
        decision: Decision | None = None
        status = "OK"
        failure: BaseException | None = None
        outputs: dict[str, np.ndarray] | None = None
        rows = 0
        admitted = False
        try:
            if version:
                answering = self.models.resolve(model, version)
            else:
                decision = self.router.route(model, routing_key)
                answering = decision.version
            if self.draining and not nested:
                decision = None  # shutting down says nothing about the variant
                answering.observer.on_refused("draining")
                # Held only for gRPC: its GOAWAY is what tells the caller to go.
                if protocol == "grpc" and (held := self._refusals_held) is not None:
                    self.refusals_waiting += 1
                    try:
                        await held.wait()
                    finally:
                        self.refusals_waiting -= 1
                raise Unavailable("server is shutting down; retry on another replica")
            if not nested:  # a step is part of its ensemble request's admission
                # Admitted: a drain waits for its answer.
                admitted = True
                self.inflight += 1
                self.admitted += 1
                self._idle.clear()
            if check_roles:
                self.authorize(answering)
            # Phase spans only for sampled requests: an unsampled one keeps its
            # (non-recording) span for context and log correlation, nothing more.
            tracing = self.tracing if span is not None and span.is_recording() else None
            if tracing is not None and span is not None:
                span.set_attributes(
                    {
                        "inferd.model.name": answering.name,
                        "inferd.model.version": answering.version_str,
                    }
                )
            with tracing.phase("decode", span) if tracing and span else contextlib.nullcontext():
                request = decode(answering.io)
                request.principal = current_principal()
                request.deadline = request_deadline(request, deadline)
                request.priority = request_priority(request)
                feature_timestamp(request.parameters)  # checked here, read by monitoring
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
                answering.observer.on_refused("expired_on_arrival")
                raise DeadlineExceeded("deadline already expired on arrival")
            cache = answering.cache
            if cache is None:
                outputs = await answering.scheduler.submit(request)
                rows = request.rows
            else:
                outputs, rows = await cache.answer(answering, request)
            answering.observer.on_answer(request, outputs)
            return Answer(outputs, answering, request)
        except BaseException as exc:
            status, failure = status_name(exc), exc
            raise
        finally:
            elapsed = time.monotonic_ns() - start
            self._record(model, request_id, answering, status, elapsed, rows, protocol)
            if decision is not None:
                self._route_outcome(decision, decode, failure, elapsed, outputs)
            if admitted:
                self.inflight -= 1
                if self.inflight == 0:
                    self._idle.set()

    async def run_step(self, call: StepCall) -> StepAnswer:
        """One step of an ensemble request, as any request: routed, queued and
        batched by the composing model's scheduler, counted in its statistics,
        under a span of its own (a child of the ensemble request's)."""
        parent = cast("Span | None", call.parent)
        tracing = self.tracing
        if tracing is None or parent is None or not parent.is_recording():
            answer = await self._step(call, parent)
        else:
            with tracing.phase("inferd.ensemble_step", parent) as span:
                span.set_attributes(
                    {"inferd.ensemble.name": call.ensemble, "inferd.ensemble.step": call.step}
                )
                answer = await self._step(call, span)
        return StepAnswer(answer.outputs, answer.version.io, answer.request)

    def _step(self, call: StepCall, span: Span | None) -> Coroutine[Any, Any, Answer]:
        return self.infer(
            call.model,
            call.version,
            lambda io: step_request(call, io),
            deadline=call.deadline,
            span=span,
            protocol="ensemble",
            nested=True,
            check_roles=False,
        )

    async def call_model(self, call: ModelCall) -> dict[str, np.ndarray]:
        """One request from inside the server (a Python model's BLS call),
        routed and scheduled like any other; outputs in the config's shape.
        ``call.acting_for``: who the calling batch runs for; the call is then
        part of that admitted request (a drain lets it through) and the
        callee's roles are checked against that caller's. None (a call not
        made while a batch ran): a request of its own, by an anonymous caller."""

        def decode(io: ModelIO) -> InferRequest:
            return array_request(call.inputs, call.outputs, io)

        acting_for = call.acting_for
        token = set_principal(acting_for) if acting_for is not None else None
        try:
            answer = await self.infer(
                call.model,
                call.version,
                decode,
                deadline=call.deadline,
                protocol="bls",
                nested=acting_for is not None,
            )
        finally:
            if token is not None:
                reset_principal(token)
        return config_outputs(answer.outputs, answer.version.io)

    def _record(
        self,
        model: str,
        request_id: str,
        version: ModelVersion | None,
        status: str,
        elapsed_ns: int,
        rows: int,
        protocol: str,
    ) -> None:
        """Statistics, metrics and the request log line for one answered request."""
        observer: VersionObserver
        if version is None:  # never reached a version: no ModelStatistics to keep
            observer = self.observer.unrouted(model)
        else:
            if status == "OK":
                version.stats.record_success(elapsed_ns, rows)
            else:
                version.stats.record_failure(elapsed_ns)
            observer = version.observer
        observer.on_request(status, elapsed_ns / 1e9, rows, protocol)
        if self.log_requests:
            request_log.info(
                "%s %s",
                model[:80],
                status,
                extra={
                    "event": "request",
                    "model": model[:80],
                    "version": version.version_str if version is not None else "",
                    "request_id": request_id[:80],
                    "code": status,
                    "duration_ms": round(elapsed_ns / 1e6, 3),
                    "rows": rows,
                },
            )

    def _route_outcome(
        self,
        decision: Decision,
        decode: Decode,
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
                task = asyncio.create_task(self._shadow(decode, decision, outputs))
                self._shadows.add(task)
                task.add_done_callback(self._shadows.discard)
        elif isinstance(failure, InferdError) and not isinstance(failure, Cancelled):
            self.router.record(decision, False, elapsed_ns / 1e9)

    async def _shadow(
        self, decode: Decode, decision: Decision, expected: dict[str, np.ndarray]
    ) -> None:
        """Mirror a request the champion answered to the challenger and compare.
        Runs after the caller's answer and never reaches the caller."""
        shadow = decision.shadow
        assert shadow is not None
        start = time.monotonic()
        ok, agree, dropped = False, None, False
        try:
            request = decode(shadow.io)
            request.principal = current_principal()
            request.deadline = start + SHADOW_TIMEOUT_S
            outputs = await shadow.scheduler.submit(request)
            ok = True
            shadow.observer.on_answer(request, outputs)  # the challenger's drift
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
