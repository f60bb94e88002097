"""Blocking client for inferd (and any Open Inference Protocol gRPC server)."""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import numpy.typing as npt

from inferd.clients import _codec
from inferd.clients._codec import InferResult, Metadata, ParameterValue, StreamItem
from inferd.clients.balancing import RetryPolicy, balancing_options
from inferd.clients.call_slots import DEFAULT_MAX_CONCURRENT_CALLS, CallSlots
from inferd.clients.errors import InferenceServerError, from_rpc_error
from inferd.clients.tracing import call_metadata
from inferd.protos import grpc_service_pb2_grpc as pb_grpc

T = TypeVar("T")


class InferenceClient:
    """A channel to one server. Thread-safe; use as a context manager or ``close()``.

    ``url`` is a gRPC target (``"127.0.0.1:8001"``, ``"dns:///host:8001"``).
    ``metadata`` is sent with every call (auth tokens, routing keys); per-call
    ``metadata`` adds to it and replaces entries with the same key.
    ``max_message_bytes`` caps messages in both directions; entries in
    ``channel_options`` override it. Every method raises InferenceServerError
    when the call fails (connection errors are UNAVAILABLE).

    Several replicas (``clients.balancing``): ``load_balancing="round_robin"``
    spreads calls over every address the target resolves to (a headless
    Service: ``"dns:///inferd-headless.ns.svc:8001"``; a static list:
    ``"ipv4:10.0.0.1:8001,10.0.0.2:8001"``), ``retry=RetryPolicy()`` re-sends
    idempotent calls refused with UNAVAILABLE (on the next replica under round
    robin), and ``health_check`` (default: on with round robin) skips replicas
    whose grpc.health.v1 status is NOT_SERVING.

    Called inside an OpenTelemetry span, each call carries that span's trace
    context (``traceparent``; ``clients.tracing``), so the server's spans join
    the caller's trace; metadata passed by hand wins.

    ``max_concurrent_calls`` (``clients.call_slots``): calls (a stream counts
    as one while open) beyond it wait in the client, so none fails on the
    server's per-connection stream limit; keep it below that limit (inferd:
    256), raise it when ``load_balancing`` spreads calls over several
    servers, None for no limit. The wait counts against a call's ``timeout``.
    """

    def __init__(
        self,
        url: str,
        *,
        max_message_bytes: int = _codec.DEFAULT_MAX_MESSAGE_BYTES,
        metadata: Metadata = (),
        credentials: grpc.ChannelCredentials | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        load_balancing: str | None = None,
        retry: RetryPolicy | None = None,
        health_check: bool | None = None,
        max_concurrent_calls: int | None = DEFAULT_MAX_CONCURRENT_CALLS,
    ) -> None:
        balancing = balancing_options(channel_options, load_balancing, retry, health_check)
        options = _codec.channel_options(max_message_bytes, channel_options, balancing)
        self._channel = _codec.open_channel(url, credentials, options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = _codec.normalize_metadata(metadata)
        self._slots = CallSlots(max_concurrent_calls)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _unary(self, op: _codec.Unary[T], timeout: float | None, metadata: Metadata) -> T:
        method = getattr(self._stub, op.method)
        merged = call_metadata(self._metadata, metadata)
        try:
            reply = self._slots.call(
                lambda remaining: method(op.request, timeout=remaining, metadata=merged), timeout
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return op.parse(reply)

    # Health.

    def is_server_live(self, *, timeout: float | None = None, metadata: Metadata = ()) -> bool:
        return self._unary(_codec.server_live(), timeout, metadata)

    def is_server_ready(self, *, timeout: float | None = None, metadata: Metadata = ()) -> bool:
        return self._unary(_codec.server_ready(), timeout, metadata)

    def is_model_ready(
        self,
        name: str,
        version: str = "",
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> bool:
        return self._unary(_codec.model_ready(name, version), timeout, metadata)

    # Metadata. Dicts use proto field names; 64-bit integers stay int.

    def server_metadata(
        self, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> dict[str, Any]:
        """``{"name", "version", "extensions"}``."""
        return self._unary(_codec.server_metadata(), timeout, metadata)

    def model_metadata(
        self,
        name: str,
        version: str = "",
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> dict[str, Any]:
        """``{"name", "versions", "platform", "inputs", "outputs", "properties"}``;
        each input/output is ``{"name", "datatype", "shape"}`` (-1: variable)."""
        return self._unary(_codec.model_metadata(name, version), timeout, metadata)

    def model_config(
        self,
        name: str,
        version: str = "",
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> dict[str, Any]:
        """The Triton ``ModelConfig`` as a dict (enums by name, e.g. ``"TYPE_FP32"``)."""
        return self._unary(_codec.model_config(name, version), timeout, metadata)

    def model_statistics(
        self,
        name: str = "",
        version: str = "",
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> dict[str, Any]:
        """``{"model_stats": [...]}``; empty name/version: every model/version."""
        return self._unary(_codec.model_statistics(name, version), timeout, metadata)

    def repository_index(
        self, ready: bool = False, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> list[dict[str, Any]]:
        """``[{"name", "version", "state", "reason"}, ...]``; ``ready``: only ready models."""
        return self._unary(_codec.repository_index(ready), timeout, metadata)

    # Model repository (the server's explicit model control mode; admin role).

    def load_model(
        self, name: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> None:
        """Load or reload ``name``; new versions warm up beside the serving ones.
        Raises when any version fails (what served before keeps serving)."""
        self._unary(_codec.load_model(name), timeout, metadata)

    def unload_model(
        self, name: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> None:
        """Unload every version of ``name`` after its admitted requests finish."""
        self._unary(_codec.unload_model(name), timeout, metadata)

    # Inference.

    def infer(
        self,
        model: str,
        inputs: Mapping[str, npt.ArrayLike],
        *,
        outputs: Sequence[str] | None = None,
        version: str = "",
        request_id: str = "",
        parameters: Mapping[str, ParameterValue] | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> InferResult:
        """Run one request. ``outputs`` None: all outputs. ``timeout`` (seconds)
        becomes the gRPC deadline. Raises ValueError/TypeError for inputs the
        protocol cannot carry, InferenceServerError when the call fails."""
        request = _codec.encode_request(
            model,
            inputs,
            outputs=outputs,
            version=version,
            request_id=request_id,
            parameters=parameters,
        )
        return self._unary(_codec.infer(request), timeout, metadata)

    def stream_infer(
        self,
        model: str,
        requests: Iterable[StreamItem],
        *,
        outputs: Sequence[str] | None = None,
        version: str = "",
        parameters: Mapping[str, ParameterValue] | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> Generator[InferResult | InferenceServerError, None, None]:
        """Send ``(request_id, inputs)`` items over one bidirectional stream.

        Yields each response as it arrives (match them by ``.id``; a model may
        answer a request more than once, or out of order). A failed request is
        *yielded* as InferenceServerError (code UNKNOWN, the stream carries no
        status; ``.request_id`` set) and the stream goes on. A failure of the
        stream itself is *raised*. ``requests`` is read lazily on a gRPC
        thread; if it raises or holds an input that cannot be encoded, the
        stream is closed, replies to what was sent are still yielded, then
        that error is raised. ``timeout`` bounds the whole stream. The call
        starts on the first ``next()``; stopping early cancels it.
        """
        feed = _codec.StreamRequests(
            requests, model, outputs=outputs, version=version, parameters=parameters
        )
        self._slots.acquire(timeout)  # the stream holds a slot while it is open
        call = self._stub.ModelStreamInfer(
            iter(feed),
            timeout=timeout,
            metadata=call_metadata(self._metadata, metadata),
        )
        try:
            for reply in call:
                yield _codec.decode_stream_response(reply)
        except grpc.RpcError as err:
            raise (feed.error or from_rpc_error(err)) from err
        finally:
            call.cancel()  # no-op once finished; stops the RPC if the caller quits early
            self._slots.release()
        if feed.error is not None:
            raise feed.error
