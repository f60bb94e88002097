"""Goodput at many times the concurrency the server can serve, with deadlines.

    python -m benchmarks.deadline_overload [--callers 320] [--deadline-ms 1000]
                                           [--seconds 6] [--rounds 2] [--rows 8] [--backoff-ms 0]

``dense_reference`` in a child ``inferd serve`` (as ``benchmarks.overload``).
Closed-loop callers (each sends its next request when the last is answered,
after ``backoff-ms`` if it was refused), each request with a gRPC deadline of
``deadline-ms``. ``rounds`` times, in the same server: ``callers / 10``
callers for ``seconds`` (the reference: what the server delivers at 1x with
this deadline), then ``callers`` for ``seconds``. Interleaved because the
host's speed drifts (the client shares the machine, and so may others).

Reported per load: goodput (OK answers per second, all within their
deadline, since gRPC fails a later one); at 10x its share of the 1x
goodput of the same rounds; refusals by status and reason with the time they
took (p50/p99); and ``unanswered``: requests that reached their deadline
with no answer from the server (the client's own DEADLINE_EXCEEDED), which
the server should never let happen; the scheduler's own counts. The first
second of each phase is left out (connections, warm-up).
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
class Phase:
    callers: int
    goodput_rps: float
    ok_p50_ms: float
    ok_p99_ms: float
    refused: dict[str, int]
    refused_rps: float
    refused_p50_ms: float
    refused_p99_ms: float
    unanswered: int
    other: dict[str, int]


@dataclass
class Report:
    deadline_ms: float
    rows: int
    seconds: float
    rounds: int
    backoff_ms: float
    #: 10x goodput over 1x goodput, all rounds together, and per round.
    goodput_share: float
    round_shares: list[float]
    base: Phase
    overload: Phase
    #: The scheduler's own counts for the whole run (its closing log line).
    server: ServerCounts


def summarize(outcomes: list[Outcome], callers: int, seconds: float) -> Phase:
    kept = [o for o in outcomes if o.sent_at >= WARMUP_S]
    span = seconds - WARMUP_S
    ok = [o.seconds * 1e3 for o in kept if o.code == "OK"]
    unanswered = [o for o in kept if o.kind == "unanswered"]
    refused = [o for o in kept if o.code != "OK" and o.kind != "unanswered"]
    refusal_kinds = ("queue-full", "predicted-late", "expired-in-queue", "rpc-limit")
    other = Counter(f"{o.code}:{o.kind}" for o in refused if o.kind not in refusal_kinds)
    refused_ms = [o.seconds * 1e3 for o in refused]
    return Phase(
        callers=callers,
        goodput_rps=round(len(ok) / span, 1),
        ok_p50_ms=round(_pct(ok, 50), 1),
        ok_p99_ms=round(_pct(ok, 99), 1),
        refused=dict(Counter(f"{o.code}:{o.kind}" for o in refused)),
        refused_rps=round(len(refused) / span, 1),
        refused_p50_ms=round(_pct(refused_ms, 50), 2),
        refused_p99_ms=round(_pct(refused_ms, 99), 2),
        unanswered=len(unanswered),
        other=dict(other),
    )


def run(
    *,
    callers: int = 320,
    deadline_ms: float = 1000.0,
    seconds: float = 6.0,
    rounds: int = 2,
    rows: int = 8,
    backoff_ms: float = 0.0,
    server_args: tuple[str, ...] = (),
) -> Report:
    deadline_s, backoff_s = deadline_ms / 1e3, backoff_ms / 1e3
    base_callers = max(1, callers // 10)
    base: list[list[Outcome]] = []
    over: list[list[Outcome]] = []
    with tempfile.TemporaryDirectory(prefix="inferd-deadline-overload-") as tmp:
        # The model's own budget is the deadline too; requests bring theirs anyway.
        repo = prepare_repository(Path(tmp), deadline_ms)
        with ServerProcess(repo, *server_args) as server:
            for _ in range(rounds):
                for n, sink in ((base_callers, base), (callers, over)):
                    sink.append(
                        asyncio.run(
                            closed_loop(server.address, n, deadline_s, seconds, rows, backoff_s)
                        )
                    )
                    print(f"{n} callers: done", file=sys.stderr)
            server.stop()
            counts = server_counts(server.lines)
    shares = [
        summarize(o, callers, seconds).goodput_rps / (summarize(b, n, seconds).goodput_rps or 1)
        for b, o, n in zip(base, over, [base_callers] * rounds, strict=True)
    ]
    base_phase = summarize([x for b in base for x in b], base_callers, seconds)
    over_phase = summarize([x for o in over for x in o], callers, seconds)
    return Report(
        deadline_ms=deadline_ms,
        rows=rows,
        seconds=seconds,
        rounds=rounds,
        backoff_ms=backoff_ms,
        goodput_share=round(over_phase.goodput_rps / (base_phase.goodput_rps or 1), 3),
        round_shares=[round(x, 3) for x in shares],
        base=_per_round(base_phase, rounds),
        overload=_per_round(over_phase, rounds),
        server=counts,
    )


def _per_round(phase: Phase, rounds: int) -> Phase:
    """Rates of all rounds pooled are per round's seconds: divide by the rounds."""
    phase.goodput_rps = round(phase.goodput_rps / rounds, 1)
    phase.refused_rps = round(phase.refused_rps / rounds, 1)
    return phase


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=320)
    parser.add_argument("--deadline-ms", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=6.0, help="per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--backoff-ms", type=float, default=0.0)
    parser.add_argument("--server-arg", action="append", default=[], help="passed to serve")
    opts = parser.parse_args(argv)
    report = run(
        callers=opts.callers,
        deadline_ms=opts.deadline_ms,
        seconds=opts.seconds,
        rounds=opts.rounds,
        rows=opts.rows,
        backoff_ms=opts.backoff_ms,
        server_args=tuple(opts.server_arg),
    )
    print(json.dumps(asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
