"""CPU that model monitoring (server.monitoring) adds per request, in process:
telemetry with monitoring at its defaults against telemetry without it.

    python -m benchmarks.monitoring_cost [--batch 1 8] [--requests 200000] [--rounds 5]

Replays what the data plane and scheduler tell telemetry for one digits_mlp
request (64 FP32 pixels in; 10 probabilities and a label out) in a batch of
``--batch``: ``on_answer`` and ``on_request`` per request, ``on_executed``
per batch; and runs the monitoring thread's work (``Monitoring.tick``: input
checks, reference capture, drift windows, costs) once per 1000 requests, as
the thread would each second at 1000 requests/s. Reports the median process
CPU µs per request of each variant, rounds alternating. Both the loop's and
the thread's work are in the figure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from inferd.server.monitoring.settings import MonitorSettings  # noqa: E402
from inferd.server.monitoring.worker import Monitoring  # noqa: E402
from inferd.server.observer import VersionObserver  # noqa: E402
from inferd.server.request import InferRequest  # noqa: E402
from inferd.server.scheduler.records import BatchRecord  # noqa: E402
from inferd.server.telemetry import Metrics, Telemetry  # noqa: E402

#: Requests between two runs of the monitoring thread's work.
TICK_EVERY = 1000


def setup(monitoring: bool, repository: Path) -> tuple[VersionObserver, Monitoring | None]:
    metrics = Metrics(process=False)
    monitor = Monitoring(MonitorSettings(), metrics.registry, repository) if monitoring else None
    telemetry = Telemetry(metrics, None, None, monitor)
    return telemetry.version("digits_mlp", 1), monitor


def cpu_us_per_request(
    hooks: VersionObserver, monitor: Monitoring | None, batch: int, requests: int
) -> float:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 17, (requests, 1, 64)).astype(np.float32)
    probabilities = rng.dirichlet(np.ones(10), requests).astype(np.float32)[:, None, :]
    labels = probabilities.argmax(axis=2)[:, :, None].astype(np.int64)
    record = BatchRecord(batch, batch, batch, "full", 0.0, 0.0, 2e-4, input_s=1e-5, output_s=1e-5)
    start = time.process_time()
    for i in range(requests):
        request = InferRequest({"pixels": pixels[i]}, (), 1)
        hooks.on_answer(request, {"probabilities": probabilities[i], "label": labels[i]})
        hooks.on_request("OK", 1e-3, 1, "grpc")
        if i % batch == 0:
            hooks.on_executed(None, (), record)
        if monitor is not None and i % TICK_EVERY == TICK_EVERY - 1:
            monitor.tick()
    return (time.process_time() - start) / requests * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args(argv)
    if opts.rounds < 1 or opts.requests < TICK_EVERY or min(opts.batch) < 1:
        parser.error(f"--batch and --rounds must be at least 1, --requests {TICK_EVERY}")
    print(f"{'batch':>5} {'off us':>8} {'on us':>8} {'added us':>9}")
    with tempfile.TemporaryDirectory() as repository:
        for batch in opts.batch:
            runs: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(opts.rounds):
                for on in (False, True):  # fresh each round: capture and drift both run
                    hooks, monitor = setup(on, Path(repository))
                    runs[on].append(cpu_us_per_request(hooks, monitor, batch, opts.requests))
            off, on_ = statistics.median(runs[False]), statistics.median(runs[True])
            print(f"{batch:5d} {off:8.2f} {on_:8.2f} {on_ - off:9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
