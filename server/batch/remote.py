"""``inferd batch --url``: score on a running server over one gRPC stream.

For models that live on remote GPUs. Chunks go out as they are ready and
answers are matched by request id, so many are in flight on the one stream.
The run is pinned to one version (the one asked for, else the newest the
server lists), so a canary route cannot split it between versions.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from inferd.clients.aio import AsyncInferenceClient
from inferd.clients.errors import InferenceServerError
from inferd.protos import model_config_pb2
from inferd.server.batch.errors import BatchError, ScoringError
from inferd.server.model_io import ModelIO

#: Chunks in flight on the stream: enough to cover the round trip.
STREAM_DEPTH = 8
#: Refusals at the start that say nothing about the job (exit 4, retried).
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def io_from_config(config: Mapping[str, Any]) -> ModelIO:
    """What the server says the model takes (its config as the client gives
    it), in the config's wire shapes: the server applies a ``reshape``
    itself, so the rows must go out as ``dims`` say."""
    message = json_format.ParseDict(
        dict(config), model_config_pb2.ModelConfig(), ignore_unknown_fields=True
    )
    for tensor in (*message.input, *message.output):
        tensor.ClearField("reshape")
    return ModelIO.from_config(message)


class RemoteScorer:
    def __init__(
        self,
        client: AsyncInferenceClient,
        config: Mapping[str, Any],
        metadata: Mapping[str, Any],
        version: str,
        outputs: Sequence[str],
    ) -> None:
        self.client = client
        self.io = io_from_config(config)
        self.batch_size = max(1, self.io.max_batch_size)
        self.concurrency = STREAM_DEPTH
        self.parameters = {
            k: str(v.get("string_value", "")) for k, v in config.get("parameters", {}).items()
        }
        self.name = str(metadata.get("name", ""))
        self.version = version
        self.card = dict(metadata.get("properties", {}))
        self.platform = str(metadata.get("platform", ""))
        self._outputs = tuple(outputs)
        self._ids = itertools.count()
        self._sending: asyncio.Queue[tuple[str, dict[str, np.ndarray]] | None] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[dict[str, np.ndarray]]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, url: str, model: str, version: str = "", outputs: Sequence[str] = ()
    ) -> RemoteScorer:
        client = AsyncInferenceClient(url)
        try:
            metadata = await client.model_metadata(model, version, timeout=30)
            if not version:
                version = max(metadata.get("versions", ["1"]), key=int)
            config = await client.model_config(model, version, timeout=30)
        except InferenceServerError as exc:
            await client.close()
            if exc.code in RETRYABLE:  # the server is down or busy: a re-run may succeed
                raise ScoringError(f"server {url}: {exc}") from None
            raise BatchError(f"server {url}: {exc}") from None
        scorer = cls(client, config, metadata, version, outputs)
        if not scorer.io.batched:
            await client.close()
            raise BatchError(f"model '{model}' has no batch dimension (max_batch_size 0)")
        return scorer

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "platform": self.platform,
            "card": self.card,
        }

    def engine_busy_s(self) -> float | None:
        return None  # the server's statistics mix in its other callers

    async def _feed(self) -> AsyncIterator[tuple[str, dict[str, np.ndarray]]]:
        while (item := await self._sending.get()) is not None:
            yield item

    async def _read(self) -> None:
        failure: BaseException | None = None
        try:
            stream = self.client.stream_infer(
                self.name, self._feed(), outputs=self._outputs or None, version=self.version
            )
            async for reply in stream:
                if isinstance(reply, InferenceServerError):
                    future = self._waiting.pop(reply.request_id or "", None)
                    if future is not None and not future.done():
                        future.set_exception(ScoringError(f"server: {reply.details}"))
                    continue
                future = self._waiting.pop(reply.id, None)
                if future is not None and not future.done():
                    future.set_result({n: np.asarray(reply[n]) for n in reply})
        except InferenceServerError as exc:
            failure = ScoringError(f"stream to the server failed: {exc}")
        except Exception as exc:  # the stream is gone: every waiting chunk fails with it
            failure = ScoringError(f"stream to the server failed: {exc}")
        failure = failure or ScoringError("the server closed the stream")
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(failure)
        self._waiting.clear()

    async def score(self, inputs: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        elif self._reader.done():
            raise ScoringError("the stream to the server has ended")
        request_id = str(next(self._ids))
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        await self._sending.put((request_id, inputs))
        return await future

    async def close(self) -> None:
        await self._sending.put(None)
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 10)
            except (asyncio.TimeoutError, Exception):
                self._reader.cancel()
        await self.client.close()
