"""``inference.GRPCInferenceService``: protobuf <-> the data plane.

Inference handlers decode nothing themselves: they hand the data plane a
decode callback (the inputs depend on the version it routes to), the
routing key and the RPC's deadline, and encode what it answers. Metadata
and repository RPCs live in ``metadata``, the RPCs not offered in
``unoffered``; ``rpc.rpc`` maps errors to statuses for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.server.codec import DEFAULT_LIMITS, RequestLimits, decode_request, encode_response
from inferd.server.dataplane import Answer, DataPlane
from inferd.server.errors import InferdError, InvalidArgument
from inferd.server.grpc.malformed import MALFORMED, REASON, note_malformed
from inferd.server.grpc.metadata import MetadataRpcs
from inferd.server.grpc.rpc import code_of, grpc_status, rpc
from inferd.server.grpc.stream_budget import (
    DEFAULT_STREAM_MAX_BUFFERED_BYTES,
    DEFAULT_STREAM_MAX_INFLIGHT,
    StreamBudget,
    arrays_bytes,
)
from inferd.server.grpc.stream_writer import StreamWriter
from inferd.server.grpc.unoffered import UnofferedRpcs
from inferd.server.model_io import ModelIO
from inferd.server.request import InferRequest
from inferd.server.telemetry.tracing import Tracing

if TYPE_CHECKING:
    from inferd.server.lifecycle.controller import LifecycleController

log = logging.getLogger("inferd.servicer")

#: Request parameter and gRPC metadata key carrying the A/B routing key.
ROUTING_KEY_PARAMETER = "routing_key"
ROUTING_KEY_METADATA = "x-routing-key"
#: Longest routing key used; the rest is ignored.
MAX_ROUTING_KEY = 256
#: What ``context.read()`` returns at the end of a stream (not in grpc's stubs).
_EOF: object = grpc.aio.EOF  # type: ignore[attr-defined]


def _final(response: pb.ModelInferResponse) -> None:
    """Mark a stream response as its request's last, as Triton does for every
    response of a non-decoupled model (failed ones too): decoupled-aware
    clients wait for ``triton_final_response``."""
    response.parameters["triton_final_response"].bool_param = True


def routing_key(msg: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]) -> str:
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


class InferenceServicer(MetadataRpcs, UnofferedRpcs, pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(
        self,
        dataplane: DataPlane,
        *,
        lifecycle: LifecycleController | None = None,
        limits: RequestLimits = DEFAULT_LIMITS,
        stream_max_inflight: int = DEFAULT_STREAM_MAX_INFLIGHT,
        stream_max_buffered_bytes: int = DEFAULT_STREAM_MAX_BUFFERED_BYTES,
    ) -> None:
        self.dataplane = dataplane
        self.lifecycle = lifecycle
        #: What the decoder accepts from one request.
        self.limits = limits
        #: What one stream may hold (``StreamBudget``), by count and by bytes.
        self.stream_max_inflight = stream_max_inflight
        self.stream_max_buffered_bytes = stream_max_buffered_bytes
        #: The budgets of the streams open now.
        self.open_streams: set[StreamBudget] = set()
        #: None when tracing is off: handlers test this once and do no tracer work.
        self.tracing = dataplane.tracing

    async def _answer(
        self,
        msg: pb.ModelInferRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        span: Span | None,
        decode: Callable[[ModelIO], InferRequest],
    ) -> Answer:
        """Run one inference request; ``span`` is its trace span (tracing on)."""
        remaining = context.time_remaining()
        return await self.dataplane.infer(
            msg.model_name,
            msg.model_version,
            decode,
            routing_key=lambda: routing_key(msg, context),
            request_id=msg.id,
            deadline=None if remaining is None else time.monotonic() + remaining,
            span=span,
            protocol="grpc",
        )

    def _encode(
        self, msg: pb.ModelInferRequest, answer: Answer, span: Span | None
    ) -> pb.ModelInferResponse:
        version = answer.version
        tracing = self.tracing if span is not None and span.is_recording() else None
        with tracing.phase("encode", span) if tracing and span else contextlib.nullcontext():
            return encode_response(
                version.name,
                version.version_str,
                msg.id,
                answer.outputs,
                version.io,
                answer.request.outputs,
                answer.request.classification,
            )

    async def _infer(
        self,
        msg: pb.ModelInferRequest,
        context: grpc.aio.ServicerContext[Any, Any],
        span: Span | None = None,
    ) -> pb.ModelInferResponse:
        """One inference request; ``span`` is its trace span (tracing on)."""
        limits = self.limits
        answer = await self._answer(
            msg, context, span, lambda io: decode_request(msg, io, limits=limits)
        )
        return self._encode(msg, answer, span)

    @rpc
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ModelInferResponse:
        self.dataplane.last_call = time.monotonic()
        span = trace.get_current_span() if self.tracing is not None else None
        return await self._infer(request, context, span)

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Triton's streaming semantics: requests run concurrently (and batch
        with everything else), responses carry the request id and come back as
        they finish, a failed request answers ``error_message`` and the stream
        goes on. What the stream holds is bounded (``StreamBudget``): when
        full, the next message is not read until an answer has been written.
        A message that does not parse ends the stream with INVALID_ARGUMENT
        once the requests read before it are answered.

        The reader/writer API: this task reads (``context.read``), each
        request's task writes its own answer (``StreamWriter``)."""
        self.dataplane.last_call = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        tracing = self.tracing
        limits = self.limits
        budget = StreamBudget(self.stream_max_inflight, self.stream_max_buffered_bytes)
        writer = StreamWriter(context, budget)
        stream_span = tracing.start_rpc("ModelStreamInfer", context) if tracing else None

        async def one(msg: pb.ModelInferRequest) -> None:
            request_bytes = 0

            def decode(io: ModelIO) -> InferRequest:
                nonlocal request_bytes
                request = decode_request(msg, io, limits=limits)
                request_bytes = arrays_bytes(request.inputs)
                budget.charge(request_bytes)
                return request

            span = None
            if tracing is not None and stream_span is not None:
                span = tracing.start_child("inferd.stream_request", stream_span)
            try:
                if span is None:
                    answer = await self._answer(msg, context, None, decode)
                    response = self._encode(msg, answer, None)
                else:
                    with trace.use_span(
                        span, record_exception=False, set_status_on_exception=False
                    ):
                        answer = await self._answer(msg, context, span, decode)
                        response = self._encode(msg, answer, span)
                    Tracing.end_rpc(span, grpc.StatusCode.OK)
                _final(response)
                answer_bytes = arrays_bytes(answer.outputs)
                item = pb.ModelStreamInferResponse(infer_response=response)
            except asyncio.CancelledError:
                if span is not None:
                    Tracing.end_rpc(span, grpc.StatusCode.CANCELLED)
                raise
            except Exception as exc:
                if not isinstance(exc, InferdError):
                    log.exception("unexpected error in ModelStreamInfer", extra={"event": "error"})
                code, message = grpc_status(exc)
                if span is not None:
                    Tracing.end_rpc(span, code, message)
                failed = pb.ModelInferResponse(
                    model_name=msg.model_name, model_version=msg.model_version, id=msg.id
                )
                _final(failed)
                answer_bytes = 0
                item = pb.ModelStreamInferResponse(error_message=message, infer_response=failed)
            budget.charge(answer_bytes - request_bytes)
            await writer.write(item, answer_bytes)

        code = grpc.StatusCode.OK
        self.open_streams.add(budget)
        try:
            read = context.read
            malformed = False
            while (msg := await read()) is not _EOF:
                if msg is MALFORMED:  # bytes that did not parse (server.grpc.malformed)
                    malformed = True
                    break
                budget.take()
                task = asyncio.create_task(one(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if budget.full():
                    await budget.wait_for_room()
            while tasks:
                await asyncio.gather(*list(tasks))
            if malformed:
                # Aborted here, with every write done: an abort racing a write could hang the call.
                note_malformed("ModelStreamInfer")
                code = grpc.StatusCode.INVALID_ARGUMENT
                await context.abort(code, REASON)
        except grpc.aio.AbortError:
            raise
        except BaseException as exc:
            code = code_of(exc)
            raise
        finally:
            self.open_streams.discard(budget)
            for task in list(tasks):
                task.cancel()
            if stream_span is not None:
                Tracing.end_rpc(stream_span, code)

    #: Refuses MALFORMED messages itself (``server.grpc.malformed``).
    ModelStreamInfer.checks_malformed = True  # type: ignore[attr-defined]
