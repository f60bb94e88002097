"""CPU the telemetry hooks spend per request, in process: ``inferd_*`` metrics
alone against metrics plus Triton's families (``--triton-metrics``).

    python -m benchmarks.hook_cost [--batch 1 8] [--requests 200000] [--rounds 5]

Replays what the scheduler and data plane tell telemetry for one request in a
batch of ``--batch`` requests (``on_pending`` twice, its share of
``on_dispatch`` and ``on_executed``, ``on_request``) on real prometheus_client
children, and reports the median process CPU µs per request of each variant,
rounds alternating. A whole server's CPU per request
(``benchmarks.cpu_per_request``) varies on a shared host by far more than
these few microseconds; this isolates them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inferd.server.observer import VersionObserver  # noqa: E402
from inferd.server.scheduler.records import BatchRecord  # noqa: E402
from inferd.server.telemetry import Metrics, Telemetry, TritonMetrics  # noqa: E402


@dataclass
class _Entry:
    """What ``on_dispatch`` reads of a queued request."""

    arrival: float
    request: object = None
    deadline: float = float("inf")
    predicted: float = float("nan")


def observer(triton: bool) -> VersionObserver:
    metrics = Metrics(process=False)
    telemetry = Telemetry(metrics, None, TritonMetrics(metrics.registry) if triton else None)
    return telemetry.version("digits_mlp", 1)


def cpu_us_per_request(hooks: VersionObserver, batch: int, requests: int) -> float:
    entries = [_Entry(time.monotonic()) for _ in range(batch)]
    record = BatchRecord(batch, batch, batch, "full", 0.0, 0.0, 2e-4, input_s=1e-5, output_s=1e-5)
    batches = max(1, requests // batch)
    start = time.process_time()
    for _ in range(batches):
        for _ in range(batch):
            hooks.on_pending(1)
        now = time.monotonic()
        token = hooks.on_dispatch(entries, "full", 0.0, now)
        hooks.on_executed(token, entries, record)
        for _ in range(batch):
            hooks.on_pending(-1)
            hooks.on_request("OK", 1e-3, 1, "grpc")
    return (time.process_time() - start) / (batches * batch) * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args(argv)
    if opts.rounds < 1 or opts.requests < 1 or min(opts.batch) < 1:
        parser.error("--batch, --requests and --rounds must be at least 1")
    print(f"{'batch':>5} {'metrics us':>10} {'+triton us':>10} {'added us':>9}")
    for batch in opts.batch:
        plain, triton = observer(False), observer(True)
        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(opts.rounds):
            runs[False].append(cpu_us_per_request(plain, batch, opts.requests))
            runs[True].append(cpu_us_per_request(triton, batch, opts.requests))
        base, more = statistics.median(runs[False]), statistics.median(runs[True])
        print(f"{batch:5d} {base:10.2f} {more:10.2f} {more - base:9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
