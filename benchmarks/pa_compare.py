"""inferd against the bare grpc.aio ceiling with Triton's own perf_analyzer,
side by side in one run (the yardstick the issue's MLServer figures used).

    python -m benchmarks.pa_compare [--concurrency 8 32] [--interval-ms 4000] [--rounds 1]
        [--pytriton PEER_PYTHON] [--mlserver PEER_PYTHON] [--bare-engine thread]
        [--modes unary streaming] [--rev NAME=REV ...]

Prints, per server and mode, throughput, p99 and the server's CPU per request:
its process CPU time (all threads, /proc) over the whole perf_analyzer run
divided by the requests perf_analyzer counted (issue 24's yardstick), for
unary calls and for ModelStreamInfer (the bare server streams too). The runs
are ~6 s each, one after the other: on a shared host use ``--rounds`` so the
servers take turns, and read the medians. ``--pytriton PYTHON`` adds the real
Triton front end (2.51 through PyTriton 0.7, benchmarks.pytriton_server) run by
that interpreter; its CPU is summed over its processes (launcher, tritonserver,
Python stub). ``--mlserver PYTHON`` adds Seldon MLServer 1.7
(benchmarks.mlserver_server: a custom onnxruntime runtime, inference in its
main process) the same way; MLServer's ModelStreamInfer is not Triton's, so its
streaming runs show as failed. ``--rev NAME=REV`` (repeatable) serves inferd
from git revision REV under the name NAME (``.``: this tree as it is), so two
revisions are measured side by side; without it, this tree runs as "inferd".

Needs the perf_analyzer binary (from the tritonclient wheel, plus Debian's
libb64-0d and pip's nvidia-cuda-runtime-cu12); 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.revisions import checkout, parse_rev
from benchmarks.server_cpu import cpu_seconds, free_port, tree_cpu_seconds
from inferd.clients import InferenceClient

ROOT = Path(__file__).resolve().parent.parent


def perf_analyzer_env() -> dict[str, str]:
    """This environment, with the CUDA runtime the perf_analyzer binary links on its path."""
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime as rt  # type: ignore[import-not-found]

        lib = str(Path(next(iter(rt.__path__))) / "lib")
        env["LD_LIBRARY_PATH"] = lib + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    except ImportError:
        pass
    return env


def wait_model_ready(
    address: str, proc: subprocess.Popen[bytes], model: str = "digits_mlp"
) -> None:
    """Return once the server at ``address`` says it and ``model`` are ready."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            with InferenceClient(address) as client:
                if client.is_server_ready(timeout=1) and client.is_model_ready(model, timeout=1):
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


def perf_analyzer() -> str:
    """The perf_analyzer binary: on PATH, else the tritonclient wheel's beside this interpreter."""
    return shutil.which("perf_analyzer") or str(Path(sys.executable).parent / "perf_analyzer")


def _failure_line(out: str) -> str:
    """The line of perf_analyzer's output that says why it measured nothing:
    its last error line, else its last line (its settings banner is noise)."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"error|fail|unavailable", line, re.I)]
    return (errors or lines or ["(no output)"])[-1][:300]


def read_perf(out: str) -> tuple[float, float, int]:
    """(infer/s, p99 ms, request count) from perf_analyzer's output; with
    ``-b N`` its infer/s counts rows."""
    thr = re.search(r"Throughput: ([\d.]+) infer/sec", out)
    p99 = re.search(r"p99 latency: (\d+) usec", out)
    count = re.search(r"Request count: (\d+)", out)
    if not thr or not p99 or not count:
        raise RuntimeError(f"perf_analyzer output not understood: {_failure_line(out)}")
    return float(thr.group(1)), int(p99.group(1)) / 1000, int(count.group(1))


def run_perf(
    port: int, model: str, concurrency: int, interval_ms: int, *, streaming: bool = False,
    rows: int = 1,
) -> tuple[float, float, int]:  # fmt: skip
    """One perf_analyzer run against 127.0.0.1:``port`` (``read_perf``'s figures)."""
    cmd = [perf_analyzer(), "-i", "grpc", "-u", f"127.0.0.1:{port}", "-m", model,
           "-b", str(rows), "--concurrency-range", str(concurrency),
           "--measurement-interval", str(interval_ms), "--stability-percentage", "100",
           *(["--streaming"] if streaming else [])]  # fmt: skip
    timeout = max(60, 15 * interval_ms // 1000)
    env = perf_analyzer_env()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout).stdout
    return read_perf(out)


def _perf(server: Server, concurrency: int, interval_ms: int, streaming: bool) -> Figures:
    """(requests/s, p99 ms, server CPU us per request) of one perf_analyzer run."""
    cpu = server.cpu()
    thr, p99, count = run_perf(server.port, "digits_mlp", concurrency, interval_ms,
                               streaming=streaming)  # fmt: skip
    cpu = server.cpu() - cpu
    return thr, p99, cpu / count * 1e6 if count else 0.0


#: One perf_analyzer run: requests/s, p99 ms, server CPU us per request.
Figures = tuple[float, float, float]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    #: Its CPU seconds so far: the process's, or its whole tree's (PyTriton, MLServer).
    cpu: Callable[[], float]


def _try_perf(
    server: Server, concurrency: int, interval_ms: int, streaming: bool
) -> Figures | None:
    """``_perf``, or None (and why, on stderr) when perf_analyzer hangs or fails:
    the other servers' runs still count."""
    try:
        return _perf(server, concurrency, interval_ms, streaming)
    except (subprocess.TimeoutExpired, RuntimeError) as exc:
        print(f"{server.name} c={concurrency}: {str(exc)[:300]}", file=sys.stderr, flush=True)
        return None


def _median(runs: list[Figures]) -> Figures | None:
    if not runs:
        return None
    return (
        statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs),
        statistics.median(r[2] for r in runs),
    )


def _row(c: int, mode: str, name: str, figures: Figures | None, bare: Figures | None) -> str:
    head = f"c={c:<3} {mode + ':':10} {name:>11}"
    if figures is None:
        return f"{head} failed (perf_analyzer hung or could not measure)"
    thr, p99, cpu = figures
    row = f"{head} {thr:6.0f}/s p99 {p99:6.2f} ms {cpu:4.0f} us/req"
    if bare is None or figures is bare:
        return row
    b_thr, _, b_cpu = bare
    return f"{row}  ({thr / b_thr:4.0%} of bare's req/s, {cpu / b_cpu:4.2f}x its CPU)"


def _start(
    name: str, command: list[str], port: int, tree: bool = False, cwd: Path = ROOT
) -> Server:
    # A session of its own: stopping it stops every process it started.
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid = proc.pid
    cpu = (lambda: tree_cpu_seconds(pid)) if tree else (lambda: cpu_seconds(pid))
    return Server(name, proc, port, cpu)


def _stop(server: Server) -> None:
    """SIGTERM to the server's process group (PyTriton's tritonserver and its
    stubs too), SIGKILL to what is left after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--interval-ms", type=int, default=4000)
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="repeat every run, the servers taking turns, and print medians",
    )  # fmt: skip
    parser.add_argument(
        "--pytriton", metavar="PYTHON",
        help="an interpreter with nvidia-pytriton and onnxruntime: adds Triton 2.51 "
        "through PyTriton (benchmarks.pytriton_server) as a peer",
    )  # fmt: skip
    parser.add_argument(
        "--mlserver", metavar="PYTHON",
        help="an interpreter with mlserver and onnxruntime: adds Seldon MLServer "
        "(benchmarks.mlserver_server) as a peer",
    )  # fmt: skip
    parser.add_argument(
        "--bare-engine", action="append", default=[], choices=("inline", "thread"),
        help="also a bare server that runs the model per request (benchmarks.bare_server)",
    )  # fmt: skip
    parser.add_argument("--modes", nargs="+", default=["unary", "streaming"],
                        choices=("unary", "streaming"))  # fmt: skip
    parser.add_argument(
        "--rev", action="append", type=parse_rev, default=[], metavar="NAME=REV",
        help="serve inferd at git revision REV as NAME ('.': this tree); repeatable",
    )  # fmt: skip
    opts = parser.parse_args(argv)
    from inferd.server.cli import default_demo_repository
    from inferd.server.demo_models import build_demo_repository

    repo = build_demo_repository(default_demo_repository())
    servers: list[Server] = []
    stack = contextlib.ExitStack()
    parent = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pa-compare-")))
    try:
        port = free_port()
        servers.append(_start("bare", [sys.executable, "-m", "benchmarks.bare_server",
                                       "--port", str(port)], port))  # fmt: skip
        for mode in opts.bare_engine:
            port = free_port()
            servers.append(_start(f"bare+{mode}", [
                sys.executable, "-m", "benchmarks.bare_server", "--port", str(port),
                "--engine", mode, "--model", str(repo / "digits_mlp" / "1" / "model.onnx"),
            ], port))  # fmt: skip
        for name, rev in opts.rev or [("inferd", ".")]:
            root = stack.enter_context(checkout(rev, parent))
            port = free_port()
            servers.append(_start(name, [
                sys.executable, "-m", "inferd", "serve", "--model-repository", str(repo),
                "--grpc-port", str(port), "--log-level", "WARNING",
            ], port, cwd=root))  # fmt: skip
        if opts.pytriton:
            port = free_port()
            servers.append(_start("pytriton", [
                opts.pytriton, "-m", "benchmarks.pytriton_server",
                "--model", str(repo / "digits_mlp" / "1" / "model.onnx"),
                "--grpc-port", str(port), "--http-port", str(free_port()),
                "--metrics-port", str(free_port()),
            ], port, tree=True))  # fmt: skip
        if opts.mlserver:
            port = free_port()
            servers.append(_start("mlserver", [
                opts.mlserver, "-m", "benchmarks.mlserver_server",
                "--model", str(repo / "digits_mlp" / "1" / "model.onnx"),
                "--grpc-port", str(port), "--http-port", str(free_port()),
                "--metrics-port", str(free_port()),
            ], port, tree=True))  # fmt: skip
        for server in servers:
            wait_model_ready(f"127.0.0.1:{server.port}", server.proc)
        time.sleep(1)
        #: (concurrency, mode) -> per round: each server's figures of one run.
        runs: dict[tuple[int, str], list[list[Figures]]] = {}
        for round_no in range(opts.rounds):
            for c in opts.concurrency:
                for mode in opts.modes:
                    streaming = mode == "streaming"
                    figures = [_try_perf(s, c, opts.interval_ms, streaming) for s in servers]
                    runs.setdefault((c, mode), []).append(figures)
                    for server, f in zip(servers, figures, strict=True):
                        print(f"round {round_no + 1} {_row(c, mode, server.name, f, figures[0])}",
                              flush=True)  # fmt: skip
        if opts.rounds > 1:
            print("medians:")
            for (c, mode), rounds in runs.items():
                medians = [
                    _median([f for r in rounds if (f := r[i]) is not None])
                    for i in range(len(servers))
                ]
                for server, m in zip(servers, medians, strict=True):
                    print(_row(c, mode, server.name, m, medians[0]), flush=True)
    finally:
        for server in servers:
            _stop(server)
        stack.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
