"""Our clients never fail a call because of the server's per-connection
stream limit (HTTP/2 ``max_concurrent_streams``): calls over it wait."""

from __future__ import annotations

import asyncio
import queue
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from conftest import ServerThread

from inferd.clients import AsyncInferenceClient, InferenceClient, InferenceServerError

CALLS = 900
PIXELS = np.zeros((1, 64), dtype=np.float32)


def test_async_client_queues_calls_over_the_stream_limit(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository)  # the default limit: 256 streams a connection

    async def main() -> list[object]:
        async with AsyncInferenceClient(server.address) as client:
            calls = [
                client.infer("digits_mlp", {"pixels": PIXELS}, timeout=60) for _ in range(CALLS)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], f"{len(failures)} of {CALLS} failed, first: {failures[:1]}"


def test_sync_client_queues_calls_over_the_stream_limit(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository)
    with InferenceClient(server.address) as client, ThreadPoolExecutor(300) as pool:
        futures = [
            pool.submit(client.infer, "digits_mlp", {"pixels": PIXELS}, timeout=60)
            for _ in range(CALLS)
        ]
        failures = [f.exception() for f in futures if f.exception() is not None]
    assert failures == [], f"{len(failures)} of {CALLS} failed, first: {failures[:1]}"


def test_refused_streams_are_sent_again(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    # As many calls as the server's limit: a server that still counts calls
    # it has answered but not released refuses some streams; those are sent
    # again.
    server = make_server(demo_repository, max_concurrent_streams=64, refuse_unreleased_streams=True)

    async def main() -> list[object]:
        async with AsyncInferenceClient(server.address, max_concurrent_calls=64) as client:
            calls = [
                client.infer("digits_mlp", {"pixels": PIXELS}, timeout=60) for _ in range(CALLS)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], f"{len(failures)} of {CALLS} failed, first: {failures[:1]}"


def test_waiting_for_a_call_slot_counts_against_the_timeout(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository)
    feed: queue.Queue[tuple[str, dict[str, np.ndarray]] | None] = queue.Queue()
    with InferenceClient(server.address, max_concurrent_calls=1) as client:
        stream = client.stream_infer("digits_mlp", iter(feed.get, None), timeout=30)
        feed.put(("1", {"pixels": PIXELS}))
        assert next(stream).id == "1"  # the stream holds the one slot
        started = time.monotonic()
        with pytest.raises(InferenceServerError) as info:
            client.infer("digits_mlp", {"pixels": PIXELS}, timeout=0.3)
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "max_concurrent_calls" in info.value.details
        assert time.monotonic() - started < 5
        feed.put(None)
        assert list(stream) == []
        # The slot is free again.
        client.infer("digits_mlp", {"pixels": PIXELS}, timeout=10)
