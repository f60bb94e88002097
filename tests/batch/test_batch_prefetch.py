"""The reader's prefetch thread and a consumer cancelled mid-wait (Ctrl-C)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from inferd.server.batch.prefetch import Prefetch


async def test_close_wakes_a_consumer_cancelled_while_waiting() -> None:
    release = threading.Event()

    def slow() -> Iterator[int]:
        release.wait(30)  # the reader is still on its first part
        yield 1

    prefetch: Prefetch[int] = Prefetch(slow())

    async def consume() -> None:
        async for _ in prefetch:
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)  # the consumer now waits in a worker thread
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    threading.Timer(0.2, release.set).start()
    prefetch.close()
    # Without the wake-up the worker thread stays in get() and the loop's
    # executor (what asyncio.run waits for at exit) never shuts down.
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.shutdown_default_executor(), timeout=10)
