"""Goodput at many times the concurrency the server can serve, with deadlines.

    python -m benchmarks.deadline_overload [--callers 320] [--deadline-ms 1000]
                                           [--seconds 8] [--rows 8] [--backoff-ms 0]

``dense_reference`` in a child ``inferd serve`` (as ``benchmarks.overload``).
First its capacity: answered requests per second of a closed loop on the
budget-free copy that keeps the engine busy. Then ``callers`` closed-loop
callers (each sends its next request when the last is answered, after
``backoff-ms`` if it was refused), each request with a gRPC deadline of
``deadline-ms``, for ``seconds``. The client shares the machine.

Reported: capacity, goodput (OK answers per second, all within their
deadline, since gRPC fails a later one) and its share of capacity; refusals
by status and reason with the time they took (p50/p99); and ``unanswered``:
requests that reached their deadline with no answer from the server (the
client's own DEADLINE_EXCEEDED), which the server should never let happen.
The first second is left out (connections, warm-up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from benchmarks.overload import (
    MODEL,
    ServerCounts,
    _pct,
    measure_capacity,
    prepare_repository,
    request,
    server_counts,
)
from benchmarks.server_process import ServerProcess
from inferd.protos import grpc_service_pb2_grpc as pb_grpc

WARMUP_S = 1.0
CALLERS_PER_CHANNEL = 100
#: gRPC's own text for a deadline the client's timer ended.
CLIENT_DEADLINE = "Deadline Exceeded"


@dataclass
class Outcome:
    sent_at: float
    seconds: float
    code: str
    kind: str


def classify(err: grpc.aio.AioRpcError) -> tuple[str, str]:
    code, details = err.code().name, err.details() or ""
    if code == "DEADLINE_EXCEEDED" and details == CLIENT_DEADLINE:
        return code, "unanswered"
    for words, kind in (
        ("queue is full", "queue-full"),
        ("cannot finish", "predicted-late"),
        ("expired while", "expired-in-queue"),
        ("Concurrent RPC limit", "rpc-limit"),
    ):
        if words in details:
            return code, kind
    return code, details[:80]


async def closed_loop(
    address: str, callers: int, deadline_s: float, seconds: float, rows: int, backoff_s: float
) -> list[Outcome]:
    # Its own connection per CALLERS_PER_CHANNEL callers: under the server's
    # 256 streams per connection, so no call fails for the stream limit.
    options = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
    channels = [
        grpc.aio.insecure_channel(address, options=options)
        for _ in range(-(-callers // CALLERS_PER_CHANNEL))
    ]
    try:
        stubs = [pb_grpc.GRPCInferenceServiceStub(c) for c in channels]
        msg = request(rows, MODEL)
        sink: list[Outcome] = []
        t0 = time.perf_counter()
        end = t0 + seconds

        async def caller(stub: Any) -> None:
            while (start := time.perf_counter()) < end:
                try:
                    await stub.ModelInfer(msg, timeout=deadline_s)
                    code, kind = "OK", ""
                except grpc.aio.AioRpcError as err:
                    code, kind = classify(err)
                sink.append(Outcome(start - t0, time.perf_counter() - start, code, kind))
                if code != "OK" and backoff_s:
                    await asyncio.sleep(backoff_s)

        await asyncio.gather(*(caller(stubs[i % len(stubs)]) for i in range(callers)))
        return sink
    finally:
        await asyncio.gather(*(c.close() for c in channels))


@dataclass
class Report:
    callers: int
    deadline_ms: float
    rows: int
    seconds: float
    backoff_ms: float
    capacity_rps: float
    goodput_rps: float
    goodput_share: float
    ok_p50_ms: float
    ok_p99_ms: float
    refused: dict[str, int]
    refused_rps: float
    refused_p50_ms: float
    refused_p99_ms: float
    unanswered: int
    other: dict[str, int]
    #: The scheduler's own counts for the whole run (its closing log line).
    server: ServerCounts


def summarize(
    outcomes: list[Outcome], capacity: float, counts: ServerCounts, **run: Any
) -> Report:
    kept = [o for o in outcomes if o.sent_at >= WARMUP_S]
    span = run["seconds"] - WARMUP_S
    ok = [o.seconds * 1e3 for o in kept if o.code == "OK"]
    unanswered = [o for o in kept if o.kind == "unanswered"]
    refused = [o for o in kept if o.code != "OK" and o.kind != "unanswered"]
    refusal_kinds = ("queue-full", "predicted-late", "expired-in-queue", "rpc-limit")
    other = Counter(f"{o.code}:{o.kind}" for o in refused if o.kind not in refusal_kinds)
    refused_ms = [o.seconds * 1e3 for o in refused]
    goodput = len(ok) / span
    return Report(
        capacity_rps=round(capacity, 1),
        goodput_rps=round(goodput, 1),
        goodput_share=round(goodput / capacity, 3) if capacity else 0.0,
        ok_p50_ms=round(_pct(ok, 50), 1),
        ok_p99_ms=round(_pct(ok, 99), 1),
        refused=dict(Counter(f"{o.code}:{o.kind}" for o in refused)),
        refused_rps=round(len(refused) / span, 1),
        refused_p50_ms=round(_pct(refused_ms, 50), 2),
        refused_p99_ms=round(_pct(refused_ms, 99), 2),
        unanswered=len(unanswered),
        other=dict(other),
        server=counts,
        **run,
    )


def run(
    *,
    callers: int = 320,
    deadline_ms: float = 1000.0,
    seconds: float = 8.0,
    rows: int = 8,
    backoff_ms: float = 0.0,
    capacity_seconds: float = 3.0,
    server_args: tuple[str, ...] = (),
) -> Report:
    with tempfile.TemporaryDirectory(prefix="inferd-deadline-overload-") as tmp:
        # The model's own budget is the deadline too; requests bring theirs anyway.
        repo = prepare_repository(Path(tmp), deadline_ms)
        with ServerProcess(repo, *server_args) as server:
            capacity = asyncio.run(measure_capacity(server.address, capacity_seconds, rows))
            print(f"capacity: {capacity:.0f} req/s of {rows} rows", file=sys.stderr)
            outcomes = asyncio.run(
                closed_loop(
                    server.address, callers, deadline_ms / 1e3, seconds, rows, backoff_ms / 1e3
                )
            )
            server.stop()
            counts = server_counts(server.lines)
    return summarize(
        outcomes,
        capacity,
        counts,
        callers=callers,
        deadline_ms=deadline_ms,
        rows=rows,
        seconds=seconds,
        backoff_ms=backoff_ms,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=320)
    parser.add_argument("--deadline-ms", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--backoff-ms", type=float, default=0.0)
    parser.add_argument("--server-arg", action="append", default=[], help="passed to serve")
    opts = parser.parse_args(argv)
    report = run(
        callers=opts.callers,
        deadline_ms=opts.deadline_ms,
        seconds=opts.seconds,
        rows=opts.rows,
        backoff_ms=opts.backoff_ms,
        server_args=tuple(opts.server_arg),
    )
    print(json.dumps(asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
