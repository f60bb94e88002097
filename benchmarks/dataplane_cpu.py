"""CPU per request of inferd's own request path, with gRPC's transport taken out.

    python -m benchmarks.dataplane_cpu [--rev before=HEAD~1 --rev after=.]
        [--tasks 1 16] [--requests 5000] [--rounds 3] [--profile]

Each revision's server starts in a process of its own (its code from a ``git
worktree``; ``.``: this tree as it is) on the demo repository, and N asyncio
tasks on uvloop call its servicer's ``ModelInfer`` directly, one request after
another each (digits_mlp, one row): decode, data plane, scheduler, engine
thread, encode; no sockets, no HTTP/2, no gRPC threads. Reports per revision
and task count the process CPU per request (all threads), the event loop
thread's alone, and the rows per engine batch, medians over rounds in which
the revisions take turns.

Why: over gRPC the server CPU per request swings by 5-10% between runs on a
shared host, because of the transport's own cost and its threads; in process
it repeats within ~2%, so a change to the request path of a few percent shows.
One task sends one request at a time (every request is a batch: per-request
plus per-batch cost); sixteen fill batches (mostly per-request cost).
``--profile`` adds, for the first revision, the Python function calls per
request and the functions with the most own time (cProfile; its timings are
inflated, the counts are not).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import grpc

ROOT = Path(__file__).resolve().parent.parent

MODEL = "digits_mlp"


@dataclass
class Figures:
    """One revision at one task count: one entry per round."""

    cpu_us: list[float] = field(default_factory=list)
    loop_us: list[float] = field(default_factory=list)
    rows_per_batch: list[float] = field(default_factory=list)


class _Context:
    """What ``ModelInfer`` reads of a gRPC call: no deadline, no metadata."""

    def time_remaining(self) -> None:
        return None

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def code(self) -> None:
        return None

    async def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(f"{code}: {message}")


async def _measure(
    repository: str, tasks: Sequence[int], requests: int, profile: bool
) -> dict[str, Any]:
    """In the worker: per task count, CPU per request and rows per batch."""
    import numpy as np

    from inferd.protos import grpc_service_pb2 as pb
    from inferd.server.app import InferdServer
    from inferd.server.settings import ServerConfig

    config = ServerConfig(model_repository=Path(repository), grpc_port=0, host="127.0.0.1")
    server = InferdServer(config)
    await server.start()
    servicer, context = server.servicer, cast("grpc.aio.ServicerContext[Any, Any]", _Context())
    msg = pb.ModelInferRequest(model_name=MODEL)
    msg.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    msg.raw_input_contents.append(np.ones((1, 64), np.float32).tobytes())
    stats = server.dataplane.version(MODEL).stats
    out: dict[str, Any] = {"tasks": {}}
    try:

        async def drive(n_tasks: int, count: int) -> None:
            left = count

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    await servicer.ModelInfer(msg, context)

            await asyncio.gather(*(worker() for _ in range(n_tasks)))

        for n_tasks in tasks:
            await drive(n_tasks, min(requests, 1000))  # warm: batch sizes seen, caches filled
            rows0, batches0 = stats.inference_count, stats.execution_count
            cpu0, loop0 = time.process_time(), time.thread_time()
            await drive(n_tasks, requests)
            cpu, loop = time.process_time() - cpu0, time.thread_time() - loop0
            batches = stats.execution_count - batches0
            out["tasks"][str(n_tasks)] = {
                "cpu_us": cpu / requests * 1e6,
                "loop_us": loop / requests * 1e6,
                "rows_per_batch": (stats.inference_count - rows0) / max(batches, 1),
            }
        if profile:
            out["profile"] = await _profile(drive, tasks[-1], requests)
    finally:
        await server.stop(0)
    return out


async def _profile(drive: Any, n_tasks: int, requests: int) -> dict[str, Any]:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    await drive(n_tasks, requests)
    profiler.disable()
    table = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    calls = sum(entry[1] for entry in table.values())
    top = sorted(table.items(), key=lambda item: -item[1][2])[:15]
    return {
        "tasks": n_tasks,
        "calls_per_request": calls / requests,
        "top": [
            [f"{Path(k[0]).name}:{k[1]}:{k[2]}", v[1] / requests, v[2] / requests * 1e6]
            for k, v in top
        ],
    }


def worker_main(argv: Sequence[str]) -> int:
    """``--worker REPOSITORY TASKS REQUESTS PROFILE``: measure, print JSON."""
    repository, tasks, requests, profile = argv
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(
        _measure(repository, [int(t) for t in tasks.split(",")], int(requests), profile == "1")
    )
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run_worker(
    root: Path, repository: Path, tasks: Sequence[int], requests: int, profile: bool
) -> dict[str, Any]:
    """One round of one revision, in a process of its own: that revision's
    ``inferd`` first on the path, this file's code measuring it (an older
    revision's ``benchmarks`` package may not have this module)."""
    command = [
        sys.executable, "-c",
        "import importlib.util, sys; sys.path.insert(0, sys.argv[1]); "
        "spec = importlib.util.spec_from_file_location('dataplane_cpu', sys.argv[2]); "
        "module = sys.modules['dataplane_cpu'] = importlib.util.module_from_spec(spec); "
        "spec.loader.exec_module(module); "
        "raise SystemExit(module.worker_main(sys.argv[3:]))",
        str(root), __file__, str(repository), ",".join(map(str, tasks)), str(requests),
        "1" if profile else "0",
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise RuntimeError(f"the measuring process failed (exit {proc.returncode}): {tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from benchmarks.revisions import parse_rev

    parser.add_argument(
        "--rev", type=parse_rev, action="append", metavar="NAME=REV",
        help="a revision of inferd to measure (repeatable; default: now=.)",
    )  # fmt: skip
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--requests", type=int, default=5000, help="per task count and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repository", type=Path, default=None)
    parser.add_argument("--profile", action="store_true")
    opts = parser.parse_args(argv)
    from benchmarks.revisions import checkout

    if any(t < 1 for t in opts.tasks) or opts.requests < 1 or opts.rounds < 1:
        parser.error("--tasks, --requests and --rounds must be at least 1")
    revs = opts.rev or [("now", ".")]
    repository = opts.repository
    if repository is None:
        from inferd.server.cli import default_demo_repository
        from inferd.server.demo_models import build_demo_repository

        repository = build_demo_repository(default_demo_repository())
    figures = {(name, t): Figures() for name, _ in revs for t in opts.tasks}
    profile: dict[str, Any] | None = None
    with contextlib.ExitStack() as stack:
        parent = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dataplane-cpu-")))
        roots = {name: stack.enter_context(checkout(rev, parent)) for name, rev in revs}
        for round_no in range(opts.rounds):
            for name, _ in revs:
                want_profile = opts.profile and profile is None and name == revs[0][0]
                result = run_worker(
                    roots[name], repository, opts.tasks, opts.requests, want_profile
                )
                profile = result.get("profile", profile)
                for t in opts.tasks:
                    got, into = result["tasks"][str(t)], figures[(name, t)]
                    into.cpu_us.append(got["cpu_us"])
                    into.loop_us.append(got["loop_us"])
                    into.rows_per_batch.append(got["rows_per_batch"])
                    print(
                        f"round {round_no + 1} {name:>10} {t:3d} task(s): "
                        f"{got['cpu_us']:7.1f} us CPU/request (loop {got['loop_us']:6.1f}), "
                        f"{got['rows_per_batch']:5.2f} rows/batch",
                        flush=True,
                    )
    report(revs, opts.tasks, figures, opts.requests, opts.rounds)
    if profile is not None:
        print(
            f"\n{revs[0][0]}, {profile['tasks']} task(s), cProfile: "
            f"{profile['calls_per_request']:.0f} Python calls/request; most own time:"
        )
        for where, calls, own_us in profile["top"]:
            print(f"  {own_us:7.1f} us {calls:6.2f} calls/request  {where}")
    return 0


def report(
    revs: Sequence[tuple[str, str]],
    tasks: Sequence[int],
    figures: dict[tuple[str, int], Figures],
    requests: int,
    rounds: int,
) -> None:
    first = revs[0][0]
    print(f"\n{MODEL}, one row, {requests} requests x {rounds} round(s), medians, no gRPC")
    print(f"{'variant':>10} {'tasks':>5} {'CPU us/req':>10} {'loop us/req':>11} "
          f"{'rows/batch':>10} {'x ' + first:>10}")  # fmt: skip
    for t in tasks:
        base = statistics.median(figures[(first, t)].cpu_us)
        for name, _ in revs:
            f = figures[(name, t)]
            cpu = statistics.median(f.cpu_us)
            print(
                f"{name:>10} {t:5d} {cpu:10.1f} {statistics.median(f.loop_us):11.1f} "
                f"{statistics.median(f.rows_per_batch):10.2f} {cpu / base:10.3f}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
