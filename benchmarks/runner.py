"""Run a scenario: start inferd as a subprocess per server config, drive the
load points from load-generator processes, collect server statistics, and
build the report.

The server, the load generator and this runner are separate processes so
none of them shares a GIL with another; on a small machine they still share
cores, which the report records (load average, client CPU).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from benchmarks.loadgen import (
    CLIENT_PRIORITY,
    Arrival,
    Bursty,
    InputSpec,
    LoadResult,
    Poisson,
    Step,
    Summary,
    Workload,
    run_closed,
    run_open,
)
from benchmarks.raw_engine import measure_engine, nearest
from benchmarks.report import PointResult, RunReport, check_targets, judge_goodput_goal
from benchmarks.scenarios import MODEL_INPUTS, MODEL_OUTPUTS, Policy, Scaled, Scenario, scaled

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 90.0
RAW_BATCHES = {
    "batching_reference": (1, 4, 8, 16),
    "dense_reference": (1, 2, 4, 8, 12, 16, 20, 24, 28, 32),
    "digits_mlp": (1, 2, 4, 8, 16, 32, 64),
}


REFERENCE = "bare grpc.aio (no model)"
#: Client CPU (cores per worker) above which a point may be client-bound.
CLIENT_BUSY = 0.7


class RunError(RuntimeError):
    """The run could not go on (a server did not start)."""


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server_process(
    command: list[str], port: int, log_path: Path, cwd: Path = ROOT
) -> Iterator[str]:
    """Start ``command`` (a gRPC server on 127.0.0.1:``port``) in ``cwd`` (a
    ``python -m`` command runs the code found there), wait for ServerReady,
    yield its address; always stopped (SIGTERM, then SIGKILL)."""
    from inferd.clients import InferenceClient, InferenceServerError

    address = f"127.0.0.1:{port}"
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            with InferenceClient(address) as client:
                while True:
                    if proc.poll() is not None:
                        raise RunError(f"server exited with {proc.returncode}: {_tail(log_path)}")
                    with contextlib.suppress(InferenceServerError):
                        if client.is_server_ready(timeout=1.0):
                            break
                    if time.monotonic() > deadline:
                        raise RunError(f"server not ready after {READY_TIMEOUT_S:.0f} s")
                    time.sleep(0.1)
            yield address
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _tail(path: Path, lines: int = 5) -> str:
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def inferd_command(repository: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "inferd", "serve", "--model-repository", str(repository),
        "--grpc-port", str(port), "--host", "127.0.0.1", "--log-level", "WARNING",
        "--grace-s", "2",
    ]  # fmt: skip


def bare_command(port: int) -> list[str] | None:
    """The bare grpc.aio reference server (``benchmarks.bare_server``), if present."""
    if importlib.util.find_spec("benchmarks.bare_server") is None:
        return None
    return [sys.executable, "-m", "benchmarks.bare_server", "--host", "127.0.0.1",
            "--port", str(port)]  # fmt: skip


def prepare_repository(source: Path, model: str, policy: Policy, dest: Path) -> Path:
    """A repository holding only ``model`` with ``policy``'s config edits
    (model files linked, not copied, where the filesystem allows)."""
    from google.protobuf import text_format

    from inferd.protos import model_config_pb2

    src, dst = source / model, dest / model
    shutil.copytree(src, dst, copy_function=_link_or_copy)
    config_path = dst / "config.pbtxt"
    config = text_format.Parse(config_path.read_text(), model_config_pb2.ModelConfig())
    apply_policy(config, policy)
    config_path.unlink()  # it may be a link into the source repository
    config_path.write_text(text_format.MessageToString(config))
    return dest


def apply_policy(config: Any, policy: Policy) -> None:
    """Edit a ``ModelConfig`` in place: ``policy``'s parameters and Triton
    ``dynamic_batching`` settings."""
    for key, value in policy.params:
        config.parameters[key].string_value = value
    if policy.preferred_batch_size:
        del config.dynamic_batching.preferred_batch_size[:]
        config.dynamic_batching.preferred_batch_size.extend(policy.preferred_batch_size)
    if policy.max_queue_delay_us is not None:
        config.dynamic_batching.max_queue_delay_microseconds = policy.max_queue_delay_us


def _link_or_copy(src: str, dst: str) -> object:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def model_counts(address: str, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) summed over the model's versions."""
    from inferd.clients import InferenceClient

    with InferenceClient(address) as client:
        stats = client.model_statistics(model, timeout=5.0)
    versions = stats.get("model_stats", [])
    return (
        sum(int(v.get("inference_count", 0)) for v in versions),
        sum(int(v.get("execution_count", 0)) for v in versions),
    )


# --------------------------------------------------------------------------- progress


class Progress:
    """One line on stderr, rewritten in place on a terminal; elsewhere one
    line per point so CI logs stay short."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.index = total, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.label = ""

    def start(self, label: str) -> None:
        self.index += 1
        self.label = label
        self.update(None)

    def update(self, rows_per_s: float | None) -> None:
        if not self.tty:
            return
        rate = "" if rows_per_s is None else f"  {rows_per_s:8.0f} rows/s"
        line = f"[{self.index}/{self.total}] {self.label}  {self._elapsed()}{rate}"
        self.stream.write("\r\033[K" + line)
        self.stream.flush()

    def done(self, summary: Summary) -> None:
        line = (
            f"[{self.index}/{self.total}] {self.label}  {self._elapsed()}  "
            f"{summary.rows_per_s:8.0f} rows/s  p99 {summary.latency_ms.get('p99', 0):.2f} ms"
            + ("" if summary.valid else "  INVALID")
        )
        self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
        self.stream.flush()

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.t0:6.1f} s"


# --------------------------------------------------------------------------- load points


def workload(scenario: Scenario) -> Workload:
    name, features, high = MODEL_INPUTS[scenario.model]
    return Workload(
        model=scenario.model,
        inputs=(InputSpec(name, (scenario.batch, features), high=high),),
        outputs=MODEL_OUTPUTS.get(scenario.model, ()),
        deadline_ms=scenario.deadline_ms,
        deadline_mix=scenario.deadline_mix,
    )


def capacity_workload(scenario: Scenario) -> Workload:
    """The scenario's requests with no deadline: capacity is saturation."""
    return dataclasses.replace(workload(scenario), deadline_ms=None, deadline_mix=())


def arrival_for(scenario: Scenario, rate: float, duration_s: float) -> Arrival:
    if scenario.arrival == "bursty":
        return Bursty(rate)
    if scenario.arrival == "step":
        pattern = scenario.step_pattern
        return Step(tuple(rate * m for m in pattern), duration_s / len(pattern))
    return Poisson(rate)


@dataclasses.dataclass
class Runner:
    scenario: Scenario
    times: Scaled
    workers: int = 1
    lag_limit_ms: float = 1.0
    progress: Progress | None = None
    client_priority: str = CLIENT_PRIORITY

    def load(
        self,
        address: str,
        point: float,
        *,
        capacity_rps: float | None = None,
        duration_s: float | None = None,
        wl: Workload | None = None,
        closed: bool | None = None,
    ) -> tuple[LoadResult, float | None]:
        """One load point; returns the result and the mean batch size the
        server ran (rows per execution over the point)."""
        sc, t = self.scenario, self.times
        wl = wl or workload(sc)
        duration = duration_s or t.duration_s
        closed = sc.mode == "closed" if closed is None else closed
        call: Callable[[], LoadResult]
        if closed:
            conc = int(point)
            call = lambda: run_closed(  # noqa: E731
                address, wl, concurrency=conc, duration_s=duration, warmup_s=t.warmup_s,
                workers=self.workers, priority=self.client_priority,
            )  # fmt: skip
        else:
            assert capacity_rps is not None
            arrival = arrival_for(sc, point * capacity_rps, t.warmup_s + duration)
            call = lambda: run_open(  # noqa: E731
                address, wl, arrival=arrival, duration_s=duration, warmup_s=t.warmup_s,
                workers=self.workers, priority=self.client_priority,
            )  # fmt: skip
        before = _counts_or_none(address, sc.model)
        result = self._with_progress(address, call)
        after = _counts_or_none(address, sc.model)
        mean_batch = None
        if before and after and after[1] > before[1]:
            mean_batch = (after[0] - before[0]) / (after[1] - before[1])
        return result, mean_batch

    def _with_progress(self, address: str, call: Callable[[], LoadResult]) -> LoadResult:
        """Run the load in a thread; meanwhile poll the server's counters for
        the live rows/s on the progress line."""
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(call)
            last = _counts_or_none(address, self.scenario.model)
            last_t = time.monotonic()
            while not future.done():
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    future.result(timeout=1.0)
                    break
                now_counts = _counts_or_none(address, self.scenario.model)
                now = time.monotonic()
                if self.progress and last and now_counts:
                    self.progress.update((now_counts[0] - last[0]) / (now - last_t))
                last, last_t = now_counts, now
            return future.result()


def _counts_or_none(address: str, model: str) -> tuple[int, int] | None:
    try:
        return model_counts(address, model)
    except Exception:  # statistics are optional (e.g. the bare reference server)
        return None


def _point_label(scenario: Scenario, point: float) -> str:
    return f"c={int(point)}" if scenario.mode == "closed" else f"{point:.2f}x"


def _result(runner: Runner, policy: str, i: int, point: float, res: LoadResult,
            mean_batch: float | None, judge: bool = True) -> PointResult:  # fmt: skip
    summary = res.summary(runner.lag_limit_ms)
    targets = runner.scenario.targets_for(point) if judge else type(runner.scenario.targets)()
    return PointResult(
        policy=policy,
        index=i,
        point=point,
        label=_point_label(runner.scenario, point),
        summary=summary,
        targets=targets,
        misses=check_targets(summary, targets),
        mean_batch=mean_batch,
    )


# --------------------------------------------------------------------------- scenario


def machine_info() -> dict[str, Any]:
    import grpc
    import onnxruntime

    return {
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpc": grpc.__version__,
        "onnxruntime": onnxruntime.__version__,
        "note": "other processes may share this machine; see loadavg_start/loadavg_end",
    }


def model_source(scenario: Scenario, source_repository: Path | None = None) -> Path:
    """The repository holding the scenario's model: ``source_repository``,
    else the demo repository (built if missing); the benchmark-only
    batching_reference model gets a temporary repository of its own."""
    from benchmarks.models import NAME as BATCHING_REFERENCE
    from benchmarks.models import build_batching_reference

    if source_repository is not None:
        source = source_repository
    else:  # the demo models need scikit-learn to train; only imported when used
        from inferd.server.cli import default_demo_repository
        from inferd.server.demo_models import build_demo_repository

        source = build_demo_repository(default_demo_repository())
    if scenario.model == BATCHING_REFERENCE and not (source / BATCHING_REFERENCE).exists():
        source = Path(tempfile.mkdtemp(prefix="inferd-bench-models-"))
        build_batching_reference(source)
    return source


def run_scenario(
    scenario: Scenario,
    out_dir: Path,
    *,
    duration_scale: float = 1.0,
    workers: int = 1,
    lag_limit_ms: float = 1.0,
    client_priority: str = CLIENT_PRIORITY,
    source_repository: Path | None = None,
    stream: TextIO | None = None,
) -> RunReport:
    out_dir.mkdir(parents=True, exist_ok=True)
    times = scaled(scenario, duration_scale)
    report = RunReport(
        scenario=scenario,
        started=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        duration_scale=duration_scale,
        workers=workers,
        machine=machine_info(),
    )
    source = model_source(scenario, source_repository)
    n_points = len(scenario.points) * len(scenario.policies)
    n_points += sum(len(p.candidates) for p in scenario.policies)
    n_points += len(scenario.points) if scenario.reference else 0
    n_points += 1 if scenario.needs_capacity else 0
    progress = Progress(n_points, stream)
    runner = Runner(scenario, times, workers, lag_limit_ms, progress, client_priority)
    tmp = Path(tempfile.mkdtemp(prefix=f"inferd-bench-{scenario.name}-"))
    try:
        if scenario.raw_engine:
            # Before any server runs, so the engine has the cores to itself.
            sizes = RAW_BATCHES.get(scenario.model, (1, 8, 32))
            report.raw_engine = measure_engine(source, scenario.model, sizes, seconds_per_size=0.5)
        _run_policies(runner, report, source, tmp, out_dir)
        if scenario.reference:
            _run_reference(runner, report, out_dir)
    except RunError as exc:
        report.errors.append(str(exc))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        report.machine["loadavg_end"] = list(os.getloadavg())
    _ratios(report)
    _client_notes(report)
    goal = scenario.goodput_goal
    if goal is not None and report.points:
        names = [policy.name for policy in scenario.policies]
        report.goodput_goal = judge_goodput_goal(report.points, names, goal)
    return report


def _client_notes(report: RunReport) -> None:
    busy = [
        f"{p.policy} {p.label} ({p.summary.client_cpu / report.workers:.2f})"
        for p in report.points
        if p.summary.client_cpu / report.workers > CLIENT_BUSY
    ]
    if busy:
        report.notes.append(
            "load generator used more than "
            f"{CLIENT_BUSY:g} of a core per worker at {', '.join(busy)}: the client may "
            "cap these points; try --workers 2 on a machine with spare cores"
        )


def _ratios(report: RunReport) -> None:
    """Served/raw engine at the batch size the scheduler ran, and served/bare
    reference at the same load point."""
    reference = {p.point: p for p in report.points if p.policy == REFERENCE}
    for p in report.points:
        raw = nearest(report.raw_engine, p.mean_batch) if p.mean_batch else None
        if raw is not None:
            p.raw_rows_per_s = raw.rows_per_s
            if report.scenario.mode == "closed":  # open loop: rows/s follow the offer
                p.efficiency = p.summary.rows_per_s / raw.rows_per_s
        ref = reference.get(p.point)
        if p.policy != REFERENCE and ref is not None and ref.summary.rows_per_s > 0:
            p.vs_reference = p.summary.rows_per_s / ref.summary.rows_per_s


def serve(
    source: Path,
    tmp: Path,
    sc: Scenario,
    policy: Policy,
    out_dir: Path,
    *,
    cwd: Path = ROOT,
    label: str | None = None,
) -> Any:
    """A server process for ``sc``'s model with ``policy``'s config, running
    the code in ``cwd``; its log is ``out_dir``/server-<label>.log (label:
    the policy's name by default)."""
    slug = "".join(c if c.isalnum() else "-" for c in label or policy.name)
    repo = prepare_repository(source, sc.model, policy, Path(tempfile.mkdtemp(dir=tmp)))
    port = free_port()
    log = out_dir / f"server-{slug}.log"
    return server_process(inferd_command(repo, port), port, log, cwd=cwd)


def measure_capacity(runner: Runner, source: Path, tmp: Path, out_dir: Path) -> Summary:
    """Saturation on the model's own config, no deadline: what the server can
    do (a closed loop at the scenario's capacity concurrency). Raises
    RunError when nothing was answered."""
    sc = runner.scenario
    with serve(source, tmp, sc, Policy("capacity"), out_dir) as address:
        if runner.progress:
            runner.progress.start(f"capacity c={sc.capacity_concurrency}")
        res, _ = runner.load(
            address, sc.capacity_concurrency, duration_s=runner.times.capacity_s,
            wl=capacity_workload(sc), closed=True,
        )  # fmt: skip
        summary = res.summary(runner.lag_limit_ms)
        if runner.progress:
            runner.progress.done(summary)
    if not summary.throughput_rps:
        raise RunError(f"capacity measurement got no OK answers: {summary.errors}")
    return summary


def _run_policies(
    runner: Runner, report: RunReport, source: Path, tmp: Path, out_dir: Path
) -> None:
    sc, progress = runner.scenario, runner.progress
    assert progress is not None
    capacity_rps: float | None = None
    if sc.needs_capacity:
        summary = measure_capacity(runner, source, tmp, out_dir)
        report.capacity_rows_per_s = summary.rows_per_s
        capacity_rps = summary.throughput_rps
    chosen = [
        _tune(runner, report, policy, capacity_rps, source, tmp, out_dir)
        if policy.candidates
        else policy
        for policy in sc.policies
    ]
    # Every policy's server is up at once (an idle one costs no CPU) and the
    # policies take turns at each point: this host's speed drifts by tens of
    # percent within minutes, so running one policy's points after the
    # other's compared the policies at different host speeds.
    with contextlib.ExitStack() as servers:
        addresses = [servers.enter_context(serve(source, tmp, sc, c, out_dir)) for c in chosen]
        for i, point in enumerate(sc.points):
            for policy, address in zip(sc.policies, addresses, strict=True):
                progress.start(f"{policy.name} {_point_label(sc, point)}")
                res, batch = runner.load(address, point, capacity_rps=capacity_rps)
                result = _result(runner, policy.name, i, point, res, batch)
                report.points.append(result)
                progress.done(result.summary)
    order = {policy.name: k for k, policy in enumerate(sc.policies)}
    report.points.sort(key=lambda p: (order[p.policy], p.index))


def _tune(
    runner: Runner,
    report: RunReport,
    policy: Policy,
    capacity_rps: float | None,
    source: Path,
    tmp: Path,
    out_dir: Path,
) -> Policy:
    """Probe each candidate at the tuning load; the best by goodput (then p99)."""
    sc, progress = runner.scenario, runner.progress
    assert progress is not None
    point = sc.tune_fraction if sc.mode == "open" else max(sc.points)
    scored: list[tuple[float, float, Policy]] = []
    for cand in policy.candidates:
        with serve(source, tmp, sc, cand, out_dir) as address:
            progress.start(f"tune {cand.name} {_point_label(sc, point)}")
            res, batch = runner.load(
                address, point, capacity_rps=capacity_rps, duration_s=runner.times.tune_s
            )
        probe = _result(runner, cand.name, len(report.tuning), point, res, batch, judge=False)
        report.tuning.append(probe)
        progress.done(probe.summary)
        p99 = probe.summary.latency_ms.get("p99", float("inf"))
        scored.append((probe.summary.goodput_rps, -p99 if p99 == p99 else float("-inf"), cand))
    best = max(scored, key=lambda s: (s[0], s[1]))[2]
    report.chosen[policy.name] = f"{best.name} ({best.describe()})"
    return dataclasses.replace(best, name=policy.name, candidates=())


def _run_reference(runner: Runner, report: RunReport, out_dir: Path) -> None:
    sc, progress = runner.scenario, runner.progress
    assert progress is not None
    port = free_port()
    command = bare_command(port)
    if command is None:
        report.notes.append("reference skipped: benchmarks.bare_server is not available")
        return
    with server_process(command, port, out_dir / "server-bare-grpc.log") as address:
        for i, point in enumerate(sc.points):
            progress.start(f"bare grpc.aio {_point_label(sc, point)}")
            res, _ = runner.load(address, point)
            # A reference, not the product: its numbers are never judged.
            result = _result(runner, REFERENCE, i, point, res, None, judge=False)
            report.points.append(result)
            progress.done(result.summary)
