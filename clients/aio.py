"""asyncio client: the same API as ``clients.sync.InferenceClient``, awaited."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy.typing as npt

from inferd.clients import _codec
from inferd.clients._codec import InferResult, Metadata, ParameterValue, StreamItem
from inferd.clients.balancing import RetryPolicy, balancing_options
from inferd.clients.call_slots import DEFAULT_MAX_CONCURRENT_CALLS, AsyncCallSlots
from inferd.clients.errors import InferenceServerError, from_rpc_error
from inferd.clients.tracing import call_metadata
from inferd.protos import grpc_service_pb2_grpc as pb_grpc

T = TypeVar("T")


class AsyncInferenceClient:
    """A ``grpc.aio`` channel to one server; see ``InferenceClient`` for the
    arguments and each method. Create it inside the event loop that uses it
    (``async with AsyncInferenceClient(url) as client: ...``)."""

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
        self._channel = _codec.open_aio_channel(url, credentials, options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._metadata = _codec.normalize_metadata(metadata)
        self._slots = AsyncCallSlots(max_concurrent_calls)

    async def close(self) -> None:
        await self._channel.close(None)

    async def __aenter__(self) -> AsyncInferenceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _unary(self, op: _codec.Unary[T], timeout: float | None, metadata: Metadata) -> T:
        method = getattr(self._stub, op.method)
        merged = call_metadata(self._metadata, metadata)
        try:
            reply = await self._slots.call(
                lambda remaining: method(op.request, timeout=remaining, metadata=merged), timeout
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return op.parse(reply)

    async def is_server_live(
        self, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> bool:
        return await self._unary(_codec.server_live(), timeout, metadata)

    async def is_server_ready(
        self, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> bool:
        return await self._unary(_codec.server_ready(), timeout, metadata)

    async def is_model_ready(
        self,
        name: str,
        version: str = "",
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> bool:
        return await self._unary(_codec.model_ready(name, version), timeout, metadata)

    async def server_metadata(
        self, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> dict[str, Any]:
        return await self._unary(_codec.server_metadata(), timeout, metadata)

    async def model_metadata(
        self,
        name: str,
        version: str = "",
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> dict[str, Any]:
        return await self._unary(_codec.model_metadata(name, version), timeout, metadata)

    async def model_config(
        self,
        name: str,
        version: str = "",
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> dict[str, Any]:
        return await self._unary(_codec.model_config(name, version), timeout, metadata)

    async def model_statistics(
        self,
        name: str = "",
        version: str = "",
        *,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> dict[str, Any]:
        return await self._unary(_codec.model_statistics(name, version), timeout, metadata)

    async def repository_index(
        self, ready: bool = False, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> list[dict[str, Any]]:
        return await self._unary(_codec.repository_index(ready), timeout, metadata)

    async def load_model(
        self, name: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> None:
        await self._unary(_codec.load_model(name), timeout, metadata)

    async def unload_model(
        self, name: str, *, timeout: float | None = None, metadata: Metadata = ()
    ) -> None:
        await self._unary(_codec.unload_model(name), timeout, metadata)

    async def infer(
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
        request = _codec.encode_request(
            model,
            inputs,
            outputs=outputs,
            version=version,
            request_id=request_id,
            parameters=parameters,
        )
        return await self._unary(_codec.infer(request), timeout, metadata)

    async def stream_infer(
        self,
        model: str,
        requests: AsyncIterable[StreamItem] | Iterable[StreamItem],
        *,
        outputs: Sequence[str] | None = None,
        version: str = "",
        parameters: Mapping[str, ParameterValue] | None = None,
        timeout: float | None = None,
        metadata: Metadata = (),
    ) -> AsyncGenerator[InferResult | InferenceServerError, None]:
        """``async for`` over the replies; semantics as ``InferenceClient.stream_infer``
        (per-request errors yielded with code UNKNOWN, stream failures raised)."""
        feed = _codec.StreamRequests(
            requests, model, outputs=outputs, version=version, parameters=parameters
        )
        await self._slots.acquire(timeout)  # the stream holds a slot while it is open
        call = self._stub.ModelStreamInfer(
            feed.__aiter__(),
            timeout=timeout,
            metadata=call_metadata(self._metadata, metadata),
        )
        try:
            async for reply in call:
                yield _codec.decode_stream_response(reply)
        except grpc.RpcError as err:
            raise (feed.error or from_rpc_error(err)) from err
        finally:
            call.cancel()
            self._slots.release()
        if feed.error is not None:
            raise feed.error
