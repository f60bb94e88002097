"""Server CPU per request: revisions of inferd next to the bare grpc.aio handler.

    python -m benchmarks.cpu_per_request [--rev before=HEAD~1 --rev after=.]
        [--env after:INFERD_METRICS_PORT=0] [--model digits_mlp] [--seconds 8]
        [--concurrency 16] [--rounds 3]

``--stream`` sends the requests over one ModelStreamInfer stream instead of
unary calls. Every server is up at once (an idle one costs no CPU) and at each round they
take turns under the same closed loop from one asyncio client, so that the
host's drift hits every variant alike. Reports, per variant, the median server
CPU time per answered request (user + system of the server process, /proc)
and its ratio to the bare handler's, plus throughput and latency. ``--bare-engine
thread`` adds a bare server that runs the model through one engine thread
(``inline``: on the loop), the floor of a server with fault isolation. ``--rev``
checks a git revision out into a temporary worktree (``.``: this tree as it
is); revisions from before the ``inferd`` import root run as ``server.cli``.
``--env NAME:VAR=VALUE`` sets a variable in variant NAME's server only, so two
variants of one tree can differ by a setting (``INFERD_*``);
``--repository-for NAME=PATH`` serves variant NAME from its own repository, so
they can differ by a model config. 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.revisions import checkout, parse_rev  # noqa: E402
from benchmarks.server_cpu import (  # noqa: E402
    INPUTS,
    Result,
    closed_loop,
    free_port,
    stream_loop,
    wait_ready,
)

BARE = "bare grpc.aio"


@dataclass
class Variant:
    name: str
    command: list[str]
    cwd: Path
    results: list[Result] = field(default_factory=list)
    #: Rows per engine batch in each round (None: the server keeps no statistics).
    rows_per_batch: list[float] = field(default_factory=list)
    #: Variables set for this variant's server on top of ours.
    env: dict[str, str] = field(default_factory=dict)
    #: The model repository it serves (None: the shared one).
    repository: Path | None = None

    def server_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}


def parse_env(text: str) -> tuple[str, str, str]:
    """``NAME:VAR=VALUE`` -> (variant, variable, value)."""
    name, sep, assignment = text.partition(":")
    var, eq, value = assignment.partition("=")
    if not sep or not name or not eq or not var:
        raise argparse.ArgumentTypeError(f"expected NAME:VAR=VALUE, got {text!r}")
    return name, var, value


def parse_repository_for(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (variant, repository)."""
    name, eq, path = text.partition("=")
    if not eq or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def batch_counts(address: str, model: str) -> tuple[int, int] | None:
    """(rows inferred, engine batches) so far by the model's statistics; None
    from a server without them (the bare handler)."""
    from inferd.clients import InferenceClient

    try:
        with InferenceClient(address) as client:
            versions = client.model_statistics(model, timeout=5.0)["model_stats"]
        return (
            sum(int(v.get("inference_count", 0)) for v in versions),
            sum(int(v.get("execution_count", 0)) for v in versions),
        )
    except Exception:
        return None


def inferd_command(root: Path, repository: Path, port: int) -> list[str]:
    module = "inferd" if (root / "inferd" / "__main__.py").exists() else "server.cli"
    return [
        sys.executable, "-m", module, "serve", "--model-repository", str(repository),
        "--grpc-port", str(port), "--host", "127.0.0.1", "--log-level", "WARNING",
    ]  # fmt: skip


def run(opts: argparse.Namespace) -> list[Variant]:
    repository = opts.repository
    if repository is None:
        from inferd.server.cli import default_demo_repository
        from inferd.server.demo_models import build_demo_repository

        repository = build_demo_repository(default_demo_repository())
    with contextlib.ExitStack() as stack:
        parent = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cpu-req-")))
        variants = [Variant(BARE, ["-m", "benchmarks.bare_server"], ROOT)]
        onnx_file = Path(repository) / opts.model / "1" / "model.onnx"
        if opts.bare_generic:
            variants.append(Variant(
                "bare, 2 named", ["-m", "benchmarks.bare_server", "--generic"], ROOT
            ))  # fmt: skip
        for mode in opts.bare_engine:
            variants.append(Variant(
                f"bare+{mode} ORT", ["-m", "benchmarks.bare_server", "--engine", mode,
                                     "--model", str(onnx_file)], ROOT,
            ))  # fmt: skip
        for name, rev in opts.rev:
            root = stack.enter_context(checkout(rev, parent))
            env = {var: value for variant, var, value in opts.env if variant == name}
            own = dict(opts.repository_for).get(name)
            variants.append(Variant(name, [], root, env=env, repository=own))
        procs: list[tuple[Variant, subprocess.Popen[bytes], str]] = []
        try:
            for variant in variants:
                port = free_port()
                if variant.command:  # a bare server
                    command = [sys.executable, *variant.command, "--host", "127.0.0.1",
                               "--port", str(port)]  # fmt: skip
                else:
                    command = inferd_command(variant.cwd, variant.repository or repository, port)
                proc = subprocess.Popen(
                    command,
                    cwd=variant.cwd,
                    env=variant.server_env(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                procs.append((variant, proc, f"127.0.0.1:{port}"))
            for _, proc, address in procs:
                wait_ready(proc, address)
            for round_no in range(opts.rounds):
                for variant, proc, address in procs:
                    loop = stream_loop if opts.stream else closed_loop
                    counts = batch_counts(address, opts.model)
                    result = asyncio.run(
                        loop(address, opts.model, opts.concurrency, opts.seconds, 1.0, proc.pid)
                    )
                    variant.results.append(result)
                    after = batch_counts(address, opts.model)
                    per_batch = ""
                    if counts and after and after[1] > counts[1]:
                        rows = (after[0] - counts[0]) / (after[1] - counts[1])
                        variant.rows_per_batch.append(rows)
                        per_batch = f", {rows:5.2f} rows/batch"
                    print(
                        f"round {round_no + 1} {variant.name:>14}: {result.rate:8.1f} req/s, "
                        f"{result.cpu_us_per_request:6.0f} server CPU us/request{per_batch}",
                        flush=True,
                    )
        finally:
            for _, proc, _ in procs:
                proc.terminate()
            for _, proc, _ in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return variants


def report(variants: Sequence[Variant], opts: argparse.Namespace) -> None:
    bare = statistics.median(r.cpu_us_per_request for r in variants[0].results)
    print(
        f"\nmodel {opts.model}, {'one stream, ' if opts.stream else ''}"
        f"{opts.concurrency} in flight, {opts.seconds:g} s x "
        f"{opts.rounds} round(s) per variant (medians)"
    )
    print(
        f"{'variant':>14} {'CPU us/req':>10} {'x bare':>7} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7}"
        f" {'rows/batch':>10}"
    )
    for variant in variants:
        runs = variant.results
        cpu = statistics.median(r.cpu_us_per_request for r in runs)
        pooled = Result(latencies=[x for r in runs for x in r.latencies])
        print(
            f"{variant.name:>14} {cpu:10.0f} {cpu / bare:7.2f} "
            f"{statistics.median(r.rate for r in runs):9.1f} "
            f"{pooled.percentile_ms(0.5):7.2f} {pooled.percentile_ms(0.99):7.2f} "
            + (f"{statistics.median(variant.rows_per_batch):10.2f}" if variant.rows_per_batch
               else f"{'-':>10}")
        )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rev", type=parse_rev, action="append", metavar="NAME=REV",
        help="a revision of inferd to serve (repeatable; default: now=.)",
    )  # fmt: skip
    parser.add_argument(
        "--env", type=parse_env, action="append", default=[], metavar="NAME:VAR=VALUE",
        help="an environment variable for variant NAME's server only (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--repository-for", type=parse_repository_for, action="append", default=[],
        metavar="NAME=PATH", help="a model repository for variant NAME's server only",
    )  # fmt: skip
    parser.add_argument("--model", default="digits_mlp", choices=sorted(INPUTS))
    parser.add_argument("--seconds", type=float, default=8.0, help="per variant and round (<=60)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--bare-engine",
        action="append",
        default=[],
        choices=("inline", "thread"),
        help="also a bare server that runs the model on the loop or one engine thread (repeatable)",
    )
    parser.add_argument(
        "--bare-generic",
        action="store_true",
        help="also a bare server with only the inference methods registered by name",
    )
    parser.add_argument(
        "--stream", action="store_true",
        help="one ModelStreamInfer stream per variant (the bare server streams too)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repository", type=Path, default=None)
    opts = parser.parse_args(argv)
    opts.rev = opts.rev or [("now", ".")]
    unknown = {name for name, _, _ in opts.env} - {name for name, _ in opts.rev}
    unknown |= {name for name, _ in opts.repository_for} - {name for name, _ in opts.rev}
    if unknown:
        parser.error(f"--env/--repository-for name no --rev variant: {', '.join(sorted(unknown))}")
    opts.seconds = min(max(opts.seconds, 1.0), 60.0)
    if opts.rounds < 1 or opts.concurrency < 1:
        parser.error("--rounds and --concurrency must be at least 1")
    report(run(opts), opts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
