"""inferd against the bare grpc.aio ceiling with Triton's own perf_analyzer,
side by side in one run (the yardstick the issue's MLServer figures used).

    python -m benchmarks.pa_compare [--concurrency 8 32] [--interval-ms 4000] [--rounds 1]

Prints, per server and mode, throughput, p99 and the server's CPU per request:
its process CPU time (all threads, /proc) over the whole perf_analyzer run
divided by the requests perf_analyzer counted (issue 24's yardstick), for
unary calls and for ModelStreamInfer (the bare server streams too). The runs
are ~6 s each, one after the other: on a shared host use ``--rounds`` so bare
and inferd take turns, and read the medians.

Needs the perf_analyzer binary (from the tritonclient wheel, plus Debian's
libb64-0d and pip's nvidia-cuda-runtime-cu12); 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.server_cpu import cpu_seconds
from inferd.clients import InferenceClient


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime as rt  # type: ignore[import-not-found]

        lib = str(Path(next(iter(rt.__path__))) / "lib")
        env["LD_LIBRARY_PATH"] = lib + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    except ImportError:
        pass
    return env


def _wait(address: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            with InferenceClient(address) as client:
                if client.is_server_ready(timeout=1):
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


def _perf(
    binary: str, port: int, concurrency: int, interval_ms: int, streaming: bool, pid: int
) -> tuple[float, float, float]:
    """(requests/s, p99 ms, server CPU us per request) of one perf_analyzer run."""
    cmd = [binary, "-i", "grpc", "-u", f"127.0.0.1:{port}", "-m", "digits_mlp",
           "--concurrency-range", str(concurrency), "--measurement-interval", str(interval_ms),
           "--stability-percentage", "100"]  # fmt: skip
    if streaming:
        cmd.append("--streaming")
    cpu = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300).stdout
    cpu = cpu_seconds(pid) - cpu
    thr = re.search(r"Throughput: ([\d.]+) infer/sec", out)
    p99 = re.search(r"p99 latency: (\d+) usec", out)
    count = re.search(r"Request count: (\d+)", out)
    if not thr or not p99 or not count:
        raise RuntimeError("perf_analyzer output not understood:\n" + out[-2000:])
    per_request = cpu / int(count.group(1)) * 1e6 if int(count.group(1)) else 0.0
    return float(thr.group(1)), int(p99.group(1)) / 1000, per_request


#: One perf_analyzer run: requests/s, p99 ms, server CPU us per request.
Figures = tuple[float, float, float]


def _median(runs: list[Figures]) -> Figures:
    return (
        statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs),
        statistics.median(r[2] for r in runs),
    )


def _row(c: int, mode: str, bare: Figures, inferd: Figures) -> str:
    (b_thr, b_p99, b_cpu), (i_thr, i_p99, i_cpu) = bare, inferd
    return (
        f"c={c:<3} {mode + ':':10} bare {b_thr:6.0f}/s p99 {b_p99:6.2f} ms {b_cpu:4.0f} us/req"
        f" | inferd {i_thr:6.0f}/s p99 {i_p99:6.2f} ms {i_cpu:4.0f} us/req"
        f" ({i_thr / b_thr:4.0%} of bare's req/s, {i_cpu / b_cpu:4.2f}x its CPU)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--interval-ms", type=int, default=4000)
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="repeat every run, bare and inferd taking turns, and print medians",
    )  # fmt: skip
    opts = parser.parse_args(argv)
    binary = shutil.which("perf_analyzer") or str(Path(sys.executable).parent / "perf_analyzer")
    from inferd.server.cli import default_demo_repository
    from inferd.server.demo_models import build_demo_repository

    repo = build_demo_repository(default_demo_repository())
    bare_port, inferd_port = _port(), _port()
    bare = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bare_server", "--port", str(bare_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    inferd = subprocess.Popen(
        [sys.executable, "-m", "inferd", "serve", "--model-repository", str(repo),
         "--grpc-port", str(inferd_port), "--log-level", "WARNING"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    #: (concurrency, mode) -> per round: (bare, inferd) figures of one perf_analyzer run each.
    runs: dict[tuple[int, str], list[tuple[Figures, Figures]]] = {}
    try:
        _wait(f"127.0.0.1:{inferd_port}", inferd)
        time.sleep(1)
        for round_no in range(opts.rounds):
            for c in opts.concurrency:
                for mode in ("unary", "streaming"):
                    streaming = mode == "streaming"
                    pair = (
                        _perf(binary, bare_port, c, opts.interval_ms, streaming, bare.pid),
                        _perf(binary, inferd_port, c, opts.interval_ms, streaming, inferd.pid),
                    )
                    runs.setdefault((c, mode), []).append(pair)
                    print(f"round {round_no + 1} {_row(c, mode, *pair)}", flush=True)
        if opts.rounds > 1:
            print("medians:")
            for (c, mode), pairs in runs.items():
                bare_med, inferd_med = (_median([p[i] for p in pairs]) for i in (0, 1))
                print(_row(c, mode, bare_med, inferd_med), flush=True)
    finally:
        for proc in (bare, inferd):
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
