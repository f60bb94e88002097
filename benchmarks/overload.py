"""Overload: offer twice the server's capacity and watch it shed load.

    python -m benchmarks.overload [--seconds 30] [--factor 2] [--budget-ms 25]
                                  [--rows 16] [--json FILE]

Serves ``dense_reference`` alone from a temporary copy of the demo repository
whose config gets ``latency_budget_ms`` (the deadline of requests that bring
none), in a child ``inferd serve`` process. Then:

1. capacity: a closed loop on a budget-free copy of the model
   (``dense_capacity``, so nothing is refused) with enough callers to keep
   four full batches queued; capacity = answered requests per second;
2. overload: an open loop sending ``rows``-row requests at ``factor`` x
   capacity for ``seconds``, each with a 10 s gRPC deadline (the server's
   budget is what binds), while the server's RSS is sampled every half second;
3. SIGTERM, and the scheduler's own counts from its closing log line:
   requests answered, answered after their deadline, refused, expired.

Requests carry 16 rows by default so that the engine, not per-call Python
overhead, is what runs out: the admission control is about the engine's
queue. With one-row requests on a small machine the gRPC/asyncio layers
saturate first and requests wait before any inferd code sees them (see
docs/protocol.md#limits); a caller's own gRPC deadline bounds that wait.

Reported: offered and achieved send rate; answered OK (rate; p50/p99/max
latency seen by the client, which shares the machine); the server's count of
answers after their deadline; refused (by status and reason, with p50/p99
time to the refusal); RSS after the first quarter, at its peak and at the
end. ``verdict``: RSS flat (from the first quarter to the end it grows less
than 16 MiB, and never peaks 64 MiB above where it started);
at most 1% of admitted requests late by the server's clock (its p99 within
the budget); client-side OK p99 within budget + ``--slack-ms``; refusals
answered within the budget (p99, client side); no other errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import numpy as np

from benchmarks.server_process import ServerProcess
from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc

MODEL = "dense_reference"
#: The same model without a budget: it queues instead of refusing, so a
#: closed loop on it measures what the engine and server can sustain.
CAPACITY_MODEL = "dense_capacity"
#: dense_reference's max_batch_size.
MAX_BATCH = 32
MiB = 1 << 20


def prepare_repository(dest: Path, budget_ms: float, source: Path | None = None) -> Path:
    """dense_reference with a latency budget, and the same model without one
    (``CAPACITY_MODEL``) to measure capacity without refusals."""
    from inferd.server.demo_models import build_demo_repository

    if source is None:
        source = build_demo_repository(dest / "demo")
    repo = dest / "overload"
    shutil.copytree(source / MODEL, repo / MODEL)
    config = repo / MODEL / "config.pbtxt"
    config.write_text(
        config.read_text()
        + f'parameters {{ key: "latency_budget_ms" value {{ string_value: "{budget_ms:g}" }} }}\n'
    )
    shutil.copytree(source / MODEL, repo / CAPACITY_MODEL)
    config = repo / CAPACITY_MODEL / "config.pbtxt"
    config.write_text(config.read_text().replace(f'name: "{MODEL}"', f'name: "{CAPACITY_MODEL}"'))
    return repo


def request(rows: int, model: str = MODEL) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name=model)
    msg.inputs.add(name="x", datatype="FP32", shape=[rows, 1024])
    msg.raw_input_contents.append(
        np.random.default_rng(0).random((rows, 1024), np.float32).tobytes()
    )
    return msg


@dataclass
class Outcome:
    sent_at: float
    seconds: float
    code: str
    kind: str = ""


async def _call(stub: Any, msg: pb.ModelInferRequest, sink: list[Outcome], t0: float) -> None:
    start = time.perf_counter()
    try:
        await stub.ModelInfer(msg, timeout=10)
        code, kind = "OK", ""
    except grpc.aio.AioRpcError as err:
        code = err.code().name
        details = err.details() or ""
        kind = (
            "queue-full"
            if "queue is full" in details
            else "predicted-late"
            if "cannot finish" in details
            else "expired-in-queue"
            if "expired while" in details
            else details[:200]
        )
    sink.append(Outcome(start - t0, time.perf_counter() - start, code, kind))


async def measure_capacity(address: str, seconds: float, rows: int) -> float:
    """OK answers per second of the budget-free copy, from closed-loop callers
    that keep about four full batches queued: the engine never waits."""
    callers = max(2, 4 * MAX_BATCH // rows)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        msg = request(rows, CAPACITY_MODEL)
        sink: list[Outcome] = []
        t0 = time.perf_counter()
        end = t0 + seconds

        async def caller() -> None:
            while time.perf_counter() < end:
                await _call(stub, msg, sink, t0)

        await asyncio.gather(*(caller() for _ in range(callers)))
        # Skip the first half second (connection set-up, batcher warm-up).
        ok = [o for o in sink if o.code == "OK" and o.sent_at > 0.5]
        return len(ok) / (seconds - 0.5)


async def open_loop(
    address: str, rate: float, seconds: float, rows: int, server: ServerProcess
) -> tuple[list[Outcome], list[tuple[float, int]], float]:
    """Send at ``rate`` req/s for ``seconds``; returns outcomes, RSS samples
    (t, bytes) and the achieved send rate."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        msg = request(rows)
        sink: list[Outcome] = []
        rss: list[tuple[float, int]] = []
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter()
        sent = 0
        next_sample = 0.0
        while (now := time.perf_counter() - t0) < seconds:
            due = int(now * rate) + 1
            while sent < due:
                sent += 1
                task = asyncio.create_task(_call(stub, msg, sink, t0))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if now >= next_sample:
                rss.append((now, server.rss_bytes()))
                next_sample += 0.5
            await asyncio.sleep(0.0005)
        elapsed = time.perf_counter() - t0
        await asyncio.gather(*list(tasks))
        rss.append((time.perf_counter() - t0, server.rss_bytes()))
        return sink, rss, sent / elapsed


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.array(values), q))


_CLOSED = re.compile(
    rf"model '{MODEL}' scheduler closed: (\d+) answered \((\d+) after their deadline\), "
    r"refused (.*), (\d+) expired in the queue"
)


@dataclass
class ServerCounts:
    answered: int = -1
    late: int = -1
    refused: str = ""
    expired: int = -1


def server_counts(lines: list[str]) -> ServerCounts:
    for line in lines:
        if m := _CLOSED.search(line):
            return ServerCounts(int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4)))
    return ServerCounts()


@dataclass
class Report:
    budget_ms: float
    seconds: float
    rows: int
    capacity_rps: float
    offered_rps: float
    sent_rps: float
    ok: int
    ok_rps: float
    ok_p50_ms: float
    ok_p99_ms: float
    ok_max_ms: float
    refused: dict[str, int]
    refused_p50_ms: float
    refused_p99_ms: float
    other_errors: dict[str, int]
    rss_start_mib: float
    rss_peak_mib: float
    rss_end_mib: float
    rss_growth_mib: float
    server: ServerCounts
    server_late_fraction: float
    load_average: list[float]
    #: Per 5-second window: [start s, OK answers, OK p99 ms, refused, refused
    #: p99 ms, RSS MiB at its end]. Shows stalls (a host busy with other work).
    windows: list[list[float]]
    verdict: dict[str, bool] = field(default_factory=dict)


REFUSALS = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED"}


def _windows(
    outcomes: list[Outcome], rss: list[tuple[float, int]], seconds: float, width: float = 5.0
) -> list[list[float]]:
    rows: list[list[float]] = []
    start = 0.0
    while start < seconds:
        end = start + width
        inside = [o for o in outcomes if start <= o.sent_at < end]
        ok = [o.seconds * 1e3 for o in inside if o.code == "OK"]
        refused = [o.seconds * 1e3 for o in inside if o.code in REFUSALS]
        memory = [b for t, b in rss if t < end] or [0]
        rows.append(
            [
                start,
                len(ok),
                round(_pct(ok, 99), 1),
                len(refused),
                round(_pct(refused, 99), 1),
                round(memory[-1] / MiB, 1),
            ]
        )
        start = end
    return rows


def summarize(
    outcomes: list[Outcome],
    rss: list[tuple[float, int]],
    counts: ServerCounts,
    *,
    budget_ms: float,
    seconds: float,
    rows: int,
    capacity: float,
    offered: float,
    sent_rps: float,
    slack_ms: float,
) -> Report:
    ok = [o.seconds * 1e3 for o in outcomes if o.code == "OK"]
    refused = [o for o in outcomes if o.code in REFUSALS]
    other = Counter(o.code for o in outcomes if o.code != "OK" and o.code not in REFUSALS)
    # Flat memory: the end against the level after the first quarter
    # (allocator pools and gRPC buffers grow at first, then hold), and the
    # peak in between (calls queued in gRPC while the host stalls).
    settled = [b for t, b in rss if t >= seconds / 4] or [rss[-1][1]]
    start, peak, end = settled[0], max(settled), rss[-1][1]
    refused_ms = [o.seconds * 1e3 for o in refused]
    late_fraction = counts.late / counts.answered if counts.answered > 0 else 1.0
    report = Report(
        budget_ms=budget_ms,
        seconds=seconds,
        rows=rows,
        capacity_rps=round(capacity, 1),
        offered_rps=round(offered, 1),
        sent_rps=round(sent_rps, 1),
        ok=len(ok),
        ok_rps=round(len(ok) / seconds, 1),
        ok_p50_ms=round(_pct(ok, 50), 2),
        ok_p99_ms=round(_pct(ok, 99), 2),
        ok_max_ms=round(max(ok, default=0.0), 2),
        refused=dict(Counter(f"{o.code}:{o.kind}" for o in refused)),
        refused_p50_ms=round(_pct(refused_ms, 50), 2),
        refused_p99_ms=round(_pct(refused_ms, 99), 2),
        other_errors=dict(other),
        rss_start_mib=round(start / MiB, 1),
        rss_peak_mib=round(peak / MiB, 1),
        rss_end_mib=round(end / MiB, 1),
        rss_growth_mib=round((end - start) / MiB, 1),
        server=counts,
        server_late_fraction=round(late_fraction, 4),
        load_average=[round(x, 2) for x in os.getloadavg()],
        windows=_windows(outcomes, rss, seconds),
    )
    report.verdict = {
        "overloaded": len(refused) > 0.2 * len(outcomes),
        "memory_flat": report.rss_growth_mib < 16 and report.rss_peak_mib - start / MiB < 64,
        "server_p99_within_budget": late_fraction <= 0.01,
        "client_ok_p99_within_budget_plus_slack": report.ok_p99_ms <= budget_ms + slack_ms,
        "refusals_fast": report.refused_p99_ms <= budget_ms,
        "no_other_errors": not other,
    }
    return report


def run(
    *,
    seconds: float = 30.0,
    factor: float = 2.0,
    budget_ms: float = 25.0,
    rows: int = 16,
    capacity_seconds: float = 4.0,
    slack_ms: float = 15.0,
    source: Path | None = None,
    log: bool = True,
) -> Report:
    with tempfile.TemporaryDirectory(prefix="inferd-overload-") as tmp:
        repo = prepare_repository(Path(tmp), budget_ms, source)
        with ServerProcess(repo) as server:
            capacity = asyncio.run(measure_capacity(server.address, capacity_seconds, rows))
            if log:
                print(f"capacity: {capacity:.0f} req/s of {rows} rows", file=sys.stderr)
            offered = factor * capacity
            outcomes, rss, sent_rps = asyncio.run(
                open_loop(server.address, offered, seconds, rows, server)
            )
            server.stop()
            counts = server_counts(server.lines)
    return summarize(
        outcomes,
        rss,
        counts,
        budget_ms=budget_ms,
        seconds=seconds,
        rows=rows,
        capacity=capacity,
        offered=offered,
        sent_rps=sent_rps,
        slack_ms=slack_ms,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--factor", type=float, default=2.0, help="offered load / capacity")
    parser.add_argument("--budget-ms", type=float, default=25.0)
    parser.add_argument("--slack-ms", type=float, default=15.0)
    parser.add_argument("--rows", type=int, default=16, help="rows per request (1..32)")
    parser.add_argument("--json", type=Path, help="also write the report here")
    opts = parser.parse_args(argv)
    report = run(
        seconds=opts.seconds,
        factor=opts.factor,
        budget_ms=opts.budget_ms,
        slack_ms=opts.slack_ms,
        rows=opts.rows,
    )
    text = json.dumps(asdict(report), indent=2)
    print(text)
    if opts.json:
        opts.json.write_text(text + "\n")
    return 0 if all(report.verdict.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
