"""``python -m benchmarks`` / ``inferd bench``.

    python -m benchmarks SCENARIO [--results DIR] [--duration-scale F] [--workers N]
    python -m benchmarks list
    python -m benchmarks load --url 127.0.0.1:8001 --model digits_mlp --concurrency 8
    python -m benchmarks load --url ... --rate 500 [--arrival poisson|bursty] [--deadline-ms 25]

A scenario run exits 0 when every target is met, 1 when one is missed (or
with ``--fail-on-invalid``, when a point is invalid), 2 when it could not run.
``load`` sends to a running server; targets other than loopback are refused
unless ``--allow-remote HOST`` names that host.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.loadgen import CLIENT_PRIORITY
from benchmarks.scenarios import MODEL_INPUTS, MODEL_OUTPUTS, SCENARIOS


def _scenario_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="inferd bench", description="run a benchmark scenario against a fresh inferd"
    )
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument(
        "--results", type=Path, help="output folder (default results/<scenario>-<timestamp>)"
    )
    parser.add_argument(
        "--duration-scale", type=float, default=1.0, help="multiply every load duration"
    )
    parser.add_argument("--workers", type=int, default=1, help="load-generator processes")
    parser.add_argument(
        "--lag-limit-ms", type=float, default=1.0,
        help="open loop: a point whose p99 send lag exceeds this is invalid (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--client-priority", choices=["realtime", "nice", "normal"], default=CLIENT_PRIORITY,
        help="scheduling of the load workers (default realtime, falling back to nice -10, "
        "then normal, without permission): keeps the client on schedule on a busy machine",
    )  # fmt: skip
    parser.add_argument(
        "--models", type=Path, metavar="DIR",
        help="model repository to serve (default: the bundled demo models, built on first use; "
        "when it lacks batching_reference, that model is generated in a repository of its own)",
    )  # fmt: skip
    parser.add_argument("--fail-on-invalid", action="store_true", help="exit 1 on invalid points")
    opts = parser.parse_args(argv)
    if opts.duration_scale <= 0 or opts.workers < 1:
        parser.error("--duration-scale must be > 0 and --workers >= 1")
    if opts.models is not None and not opts.models.is_dir():
        parser.error(f"--models {opts.models}: not a directory")

    from benchmarks.report import format_table, write_report
    from benchmarks.runner import run_scenario

    scenario = SCENARIOS[opts.scenario]
    out = opts.results or Path("results") / f"{scenario.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    report = run_scenario(
        scenario, out, duration_scale=opts.duration_scale, workers=opts.workers,
        lag_limit_ms=opts.lag_limit_ms, client_priority=opts.client_priority,
        source_repository=opts.models,
    )  # fmt: skip
    files = write_report(report, out)
    print(format_table(report))
    print(f"results: {', '.join(str(f) for f in files)}")
    for line in report.invalid:
        print(f"INVALID: {line}", file=sys.stderr)
    for line in report.misses:
        print(f"target missed: {line}", file=sys.stderr)
    if report.errors:
        return 2
    if report.misses or (opts.fail_on_invalid and report.invalid):
        return 1
    return 0


def _load_main(argv: Sequence[str]) -> int:
    from benchmarks.loadgen import (
        Bursty,
        InputSpec,
        Poisson,
        TargetRefused,
        Workload,
        check_target,
        run_closed,
        run_open,
    )
    from benchmarks.report import plain

    parser = argparse.ArgumentParser(prog="inferd bench load", description="one load point")
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--allow-remote", metavar="HOST", help="allow this non-loopback host")
    parser.add_argument("--model", default="digits_mlp", choices=sorted(MODEL_INPUTS))
    parser.add_argument("--batch", type=int, default=1)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--concurrency", type=int, help="closed loop: requests in flight")
    mode.add_argument("--rate", type=float, help="open loop: offered requests/s")
    parser.add_argument("--arrival", choices=["poisson", "bursty"], default="poisson")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds (hard-stopped)")
    parser.add_argument("--deadline-ms", type=float)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--lag-limit-ms", type=float, default=1.0)
    parser.add_argument(
        "--client-priority", choices=["realtime", "nice", "normal"], default=CLIENT_PRIORITY
    )
    opts = parser.parse_args(argv)
    try:
        check_target(opts.url, opts.allow_remote)  # before any process starts
    except TargetRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    name, features, high = MODEL_INPUTS[opts.model]
    wl = Workload(
        opts.model, (InputSpec(name, (opts.batch, features), high=high),),
        outputs=MODEL_OUTPUTS[opts.model], deadline_ms=opts.deadline_ms,
    )  # fmt: skip
    if opts.concurrency is not None:
        result = run_closed(
            opts.url, wl, concurrency=opts.concurrency, duration_s=opts.duration,
            workers=opts.workers, allow_remote=opts.allow_remote, priority=opts.client_priority,
        )  # fmt: skip
    else:
        arrival = Bursty(opts.rate) if opts.arrival == "bursty" else Poisson(opts.rate)
        result = run_open(
            opts.url, wl, arrival=arrival, duration_s=opts.duration, workers=opts.workers,
            allow_remote=opts.allow_remote, priority=opts.client_priority,
        )  # fmt: skip
    summary = result.summary(opts.lag_limit_ms)
    print(json.dumps(plain(dataclasses.asdict(summary)), indent=2))
    return 0 if summary.valid else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "load":
        return _load_main(args[1:])
    if args and args[0] == "list":
        for s in SCENARIOS.values():
            print(f"{s.name:<18} {s.description}")
        return 0
    return _scenario_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
