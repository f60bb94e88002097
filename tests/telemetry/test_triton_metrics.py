"""``--triton-metrics``: Triton's metric families on a real server's /metrics."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from telemetry_helpers import Inferd, free_port, scrape, scrape_text, series, value

from inferd.clients import AsyncInferenceClient, InferenceClient, InferenceServerError
from inferd.server.app import StartupError
from inferd.server.telemetry.triton_metrics import FAILURE_REASONS, failure_reason

MakeServer = Callable[..., Any]
PIXELS = np.ones((1, 64), np.float32)

#: Triton's families as exposed (counters are gauges here: see triton_metrics).
COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)
SUMMARIES = (
    "nv_inference_request_summary_us",
    "nv_inference_queue_summary_us",
    "nv_inference_compute_input_summary_us",
    "nv_inference_compute_infer_summary_us",
    "nv_inference_compute_output_summary_us",
)
HISTOGRAM = "nv_inference_first_response_histogram_ms"


async def _traffic(address: str, single: int, triple: int, outcomes: Counter[str]) -> None:
    """``single`` one-row and ``triple`` three-row good requests, all at once
    (so the batcher merges them), then failures of several kinds."""
    async with AsyncInferenceClient(address) as client:

        async def one(model: str, inputs: dict[str, np.ndarray], **kw: Any) -> None:
            try:
                await client.infer(model, inputs, **kw)
                outcomes["OK"] += 1
            except InferenceServerError as exc:
                outcomes[f"{model}:{exc.code.name}"] += 1

        good = [one("digits_mlp", {"pixels": PIXELS}) for _ in range(single)]
        good += [one("digits_mlp", {"pixels": np.ones((3, 64), np.float32)}) for _ in range(triple)]
        await asyncio.gather(*good)
        bad_shape = {"pixels": np.ones((1, 3), np.float32)}
        for _ in range(3):
            await one("digits_mlp", bad_shape)  # INVALID_ARGUMENT: reason OTHER
        for _ in range(2):  # a 1 µs budget: DEADLINE_EXCEEDED, reason REJECTED
            await one("digits_mlp", {"pixels": PIXELS}, parameters={"timeout": 1})
        await one("no_such_model", {"pixels": PIXELS})  # reaches no version
        await one("digits_mlp", {"pixels": PIXELS}, version="7")


def _batching_repository(demo: Path, root: Path) -> Path:
    """digits_mlp, with Triton's batcher holding up to 200 ms for 4 rows, so
    concurrent requests surely share executions even on a busy machine."""
    shutil.copytree(demo / "digits_mlp", root / "digits_mlp")
    config = root / "digits_mlp" / "config.pbtxt"
    text = config.read_text().replace(
        "max_queue_delay_microseconds: 500",
        "max_queue_delay_microseconds: 200000\n  preferred_batch_size: 4",
    )
    config.write_text(
        text + 'parameters { key: "batching_policy" value { string_value: "static" } }\n'
    )
    return root


def test_triton_families_count_the_requests_sent_and_agree_with_model_statistics(
    demo_repository: Path, make_server: MakeServer, tmp_path: Path
) -> None:
    repo = _batching_repository(demo_repository, tmp_path / "models")
    server = make_server(repo, metrics_port=0, triton_metrics=True)
    outcomes: Counter[str] = Counter()
    asyncio.run(_traffic(server.address, single=40, triple=8, outcomes=outcomes))
    assert outcomes == {
        "OK": 48,
        "digits_mlp:INVALID_ARGUMENT": 3,
        "digits_mlp:DEADLINE_EXCEEDED": 2,
        "no_such_model:NOT_FOUND": 1,
        "digits_mlp:NOT_FOUND": 1,
    }
    with InferenceClient(server.address) as client:
        (stats,) = client.model_statistics("digits_mlp", "1")["model_stats"]
    families = scrape(server.server.metrics_port)
    mv = {"model": "digits_mlp", "version": "1"}

    def metric(name: str, **labels: str) -> float:
        return value(families, name, **mv, **labels)

    # Every family is there, labelled as Triton labels it, for every loaded version only.
    text = scrape_text(server.server.metrics_port)
    for name in COUNTERS:
        extra = {"reason"} if name == "nv_inference_request_failure" else set()
        labels = series(families, name)
        assert labels, name
        assert all(set(s) == {"model", "version"} | extra for s in labels), (name, labels)
        assert {(s["model"], s["version"]) for s in labels} == {("digits_mlp", "1")}
        assert f"\n{name}{{" in text  # Triton's sample name: no _total suffix
    for name in SUMMARIES:
        assert all(set(s) == {"model", "version"} for s in series(families, f"{name}_count"))
        assert metric(f"{name}_count") > 0, name
    assert {s["le"] for s in series(families, f"{HISTOGRAM}_bucket")} >= {
        "100.0",
        "500.0",
        "2000.0",
        "5000.0",
        "+Inf",
    }

    inference = stats["inference_stats"]
    # Requests: each counted once, whatever its rows.
    assert metric("nv_inference_request_success") == inference["success"]["count"] == 48
    failures = {r: metric("nv_inference_request_failure", reason=r) for r in FAILURE_REASONS}
    assert failures == {"REJECTED": 2, "CANCELED": 0, "BACKEND": 0, "OTHER": 3}
    assert sum(failures.values()) == inference["fail"]["count"]
    # Inferences are rows; executions are batches.
    assert metric("nv_inference_count") == stats["inference_count"] == 40 + 3 * 8
    executions = metric("nv_inference_exec_count")
    assert executions == stats["execution_count"]
    assert 0 < executions < 48  # some requests were batched together
    # Cumulative microseconds: ModelStatistics' nanoseconds / 1000 (which
    # truncates each observation to a whole nanosecond: 1e-3 µs apiece).
    for family, stat in (
        ("nv_inference_request_duration_us", inference["success"]),
        ("nv_inference_queue_duration_us", inference["queue"]),
        ("nv_inference_compute_input_duration_us", inference["compute_input"]),
        ("nv_inference_compute_infer_duration_us", inference["compute_infer"]),
        ("nv_inference_compute_output_duration_us", inference["compute_output"]),
    ):
        assert metric(family) > 0, family
        tolerance = 1e-3 * (stat["count"] + 1)
        assert metric(family) == pytest.approx(stat["ns"] / 1e3, rel=1e-9, abs=tolerance), family
    # Summaries: the counters' observations one by one.
    for summary, counter, stat in (
        ("nv_inference_request_summary_us", "nv_inference_request_duration_us", "success"),
        ("nv_inference_queue_summary_us", "nv_inference_queue_duration_us", "queue"),
        ("nv_inference_compute_input_summary_us", "nv_inference_compute_input_duration_us",
         "compute_input"),
        ("nv_inference_compute_infer_summary_us", "nv_inference_compute_infer_duration_us",
         "compute_infer"),
        ("nv_inference_compute_output_summary_us", "nv_inference_compute_output_duration_us",
         "compute_output"),
    ):  # fmt: skip
        assert metric(f"{summary}_count") == inference[stat]["count"], summary
        assert metric(f"{summary}_sum") == pytest.approx(metric(counter), rel=1e-6), summary
    # Every answer a version gave (OK or not) is a first response.
    assert metric(f"{HISTOGRAM}_count") == 48 + 3 + 2
    assert metric(f"{HISTOGRAM}_sum") > 0
    # Requests that reached no version appear nowhere in Triton's families.
    nv_models = {
        s.labels.get("model") for f in families if f.name.startswith("nv_") for s in f.samples
    }
    assert nv_models == {"digits_mlp"}
    # Ours are still there beside them.
    assert metric("inferd_requests_total", code="OK") == 48


def test_failure_reasons_follow_tritons_categories() -> None:
    assert failure_reason("DEADLINE_EXCEEDED") == "REJECTED"
    assert failure_reason("CANCELLED") == "CANCELED"
    assert failure_reason("INTERNAL") == "BACKEND"
    assert failure_reason("UNKNOWN") == "BACKEND"
    for code in ("INVALID_ARGUMENT", "UNAVAILABLE", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED"):
        assert failure_reason(code) == "OTHER"


def test_off_by_default(demo_repository: Path, make_server: MakeServer) -> None:
    server = make_server(demo_repository, metrics_port=0)
    with InferenceClient(server.address) as client:
        client.infer("digits_mlp", {"pixels": PIXELS})
    families = scrape(server.server.metrics_port)
    assert value(families, "inferd_requests_total", model="digits_mlp", code="OK") == 1
    assert not [f.name for f in families if f.name.startswith("nv_")]


def test_triton_metrics_without_a_metrics_port_is_refused(
    demo_repository: Path, make_server: MakeServer, tmp_path: Path
) -> None:
    with pytest.raises(StartupError, match="triton_metrics needs metrics_port"):
        make_server(demo_repository, triton_metrics=True)
    cli = Inferd(demo_repository, tmp_path / "err.log", env={"INFERD_TRITON_METRICS": "1"})
    assert cli.proc.wait(60) == 2
    cli.stop()
    assert cli.log_lines()[-1] == "error: INFERD_TRITON_METRICS needs --metrics-port"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_two_workers_add_up_in_one_scrape(demo_repository: Path, tmp_path: Path) -> None:
    metrics_port = free_port()
    multiproc = tmp_path / "multiproc"
    server = Inferd(
        demo_repository,
        tmp_path / "stderr.log",
        "--workers",
        "2",
        "--metrics-port",
        str(metrics_port),
        "--triton-metrics",
        "--log-format",
        "json",
        env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
    )
    try:
        server.wait_workers_ready(2)
        sent = 0
        deadline = time.monotonic() + 30
        # New channels are new connections, spread by the kernel over the
        # workers: go on until both have answered.
        while time.monotonic() < deadline:
            for _ in range(8):
                with InferenceClient(server.address) as client:
                    client.infer("digits_mlp", {"pixels": np.ones((2, 64), np.float32)})
                sent += 1
            pids = {p.stem.rsplit("_", 1)[1] for p in multiproc.glob("*.db")}
            served = [
                pid
                for pid in pids
                if _own_success(multiproc, pid) > 0  # this worker answered some
            ]
            if len(served) >= 2:
                break
        assert len(served) == 2, served
        families = scrape(metrics_port)
        mv = {"model": "digits_mlp", "version": "1"}
        assert value(families, "nv_inference_request_success", **mv) == sent
        assert value(families, "nv_inference_count", **mv) == 2 * sent
        assert 0 < value(families, "nv_inference_exec_count", **mv) <= sent
        assert value(families, "nv_inference_request_summary_us_count", **mv) == sent
        assert value(families, f"{HISTOGRAM}_count", **mv) == sent
        assert value(families, "nv_inference_queue_duration_us", **mv) > 0
        assert value(families, "nv_inference_request_failure", **mv) == 0
        reasons = {s["reason"] for s in series(families, "nv_inference_request_failure")}
        assert reasons == set(FAILURE_REASONS)
        assert value(families, "inferd_requests_total", **mv, code="OK") == sent
    finally:
        assert server.stop() == 0


def _own_success(multiproc: Path, pid: str) -> float:
    """nv_inference_request_success of digits_mlp as one worker's files say."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    own = multiproc.parent / f"only-{pid}"
    own.mkdir(exist_ok=True)
    for f in multiproc.glob(f"*_{pid}.db"):
        shutil.copy(f, own / f.name)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(own))  # type: ignore[no-untyped-call]
    total = sum(
        s.value
        for fam in registry.collect()
        for s in fam.samples
        if s.name == "nv_inference_request_success" and s.labels.get("model") == "digits_mlp"
    )
    shutil.rmtree(own)
    return total
