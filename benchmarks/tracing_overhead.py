"""Throughput with tracing on (100% and 1% sampled) relative to off, in one run.

For each setting: a fresh ``inferd serve`` child process on 127.0.0.1 with
that setting's OTEL_* environment, exporting OTLP/gRPC to a span sink in its
own child process (``benchmarks.otlp_sink``), and a closed loop of
``--concurrency`` requests in flight from one AsyncInferenceClient for
``--seconds``. Settings run in turn, ``--rounds`` times (interleaved, so slow
drift on a shared machine hits every setting alike). Besides throughput it
reports the server's CPU time per request (user + system, from /proc), which
other load on a shared machine disturbs much less than throughput.

    python -m benchmarks.tracing_overhead [--model digits_mlp] [--seconds 10]
        [--concurrency 16] [--rounds 1] [--repository DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.server_cpu import (  # noqa: E402
    INPUTS,
    Result,
    closed_loop,
    free_port,
    wait_ready,
)

SETTINGS: dict[str, float | None] = {"off": None, "on, 100%": 1.0, "on, 1%": 0.01}


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def _start_sink() -> tuple[subprocess.Popen[str], int]:
    sink = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.otlp_sink"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=_clean_env(),
    )
    assert sink.stdout is not None
    return sink, int(sink.stdout.readline())


def _stop_sink(sink: subprocess.Popen[str]) -> int:
    sink.send_signal(signal.SIGTERM)
    out, _ = sink.communicate(timeout=30)
    return int(out.split()[-1])


def _start_server(
    repository: Path, ratio: float | None, sink_port: int
) -> tuple[subprocess.Popen[bytes], str]:
    env = _clean_env()
    if ratio is not None:
        env.update(
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink_port}",
            OTEL_EXPORTER_OTLP_INSECURE="true",
            OTEL_TRACES_SAMPLER="parentbased_traceidratio",
            OTEL_TRACES_SAMPLER_ARG=str(ratio),
            OTEL_SERVICE_NAME="inferd-bench",
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inferd",
            "serve",
            "--model-repository",
            str(repository),
            "--grpc-port",
            str(port),
            "--log-level",
            "WARNING",
            "--grace-s",
            "5",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    address = f"127.0.0.1:{port}"
    wait_ready(proc, address)
    return proc, address


def run(args: argparse.Namespace) -> dict[str, list[Result]]:
    repository = args.repository
    if repository is None:
        from inferd.server.cli import default_demo_repository
        from inferd.server.demo_models import build_demo_repository

        repository = build_demo_repository(default_demo_repository())
    results: dict[str, list[Result]] = {name: [] for name in SETTINGS}
    for round_no in range(args.rounds):
        for name, ratio in SETTINGS.items():
            sink, sink_port = _start_sink()
            proc, address = _start_server(repository, ratio, sink_port)
            try:
                result = asyncio.run(
                    closed_loop(address, args.model, args.concurrency, args.seconds, 1.0, proc.pid)
                )
            finally:
                proc.send_signal(signal.SIGTERM)  # drains and flushes its spans
                proc.wait(30)
                result.spans = _stop_sink(sink)
            results[name].append(result)
            print(
                f"round {round_no + 1} {name:>9}: {result.rate:8.1f} req/s, "
                f"{result.cpu_us_per_request:6.0f} server CPU us/request, "
                f"{result.spans} spans received",
                flush=True,
            )
    return results


def report(results: dict[str, list[Result]], args: argparse.Namespace) -> None:
    base = statistics.mean(r.rate for r in results["off"])
    print(
        f"\nmodel {args.model}, {args.concurrency} in flight, {args.seconds:g} s x "
        f"{args.rounds} round(s) per setting, {os.cpu_count()} CPUs (client, server and "
        "span sink share them)"
    )
    base_cpu = statistics.median(r.cpu_us_per_request for r in results["off"])
    print(
        f"{'tracing':>10} {'req/s':>9} {'vs off':>7} {'CPU us/req':>10} {'vs off':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'spans':>8}"
    )
    for name, runs in results.items():
        rate = statistics.mean(r.rate for r in runs)
        cpu = statistics.median(r.cpu_us_per_request for r in runs)
        lat = sorted(x for r in runs for x in r.latencies)
        p50 = lat[len(lat) // 2] * 1e3
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3
        spans = sum(r.spans for r in runs)
        print(
            f"{name:>10} {rate:9.1f} {rate / base:7.1%} {cpu:10.0f} {cpu / base_cpu:7.1%} "
            f"{p50:7.2f} {p99:7.2f} {spans:8d}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="digits_mlp", choices=sorted(INPUTS))
    parser.add_argument("--seconds", type=float, default=10.0, help="per setting (max 60)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--repository", type=Path, default=None)
    args = parser.parse_args(argv)
    args.seconds = min(max(args.seconds, 1.0), 60.0)
    report(run(args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
