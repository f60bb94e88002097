"""/metrics of a real server on 127.0.0.1, scraped and parsed as Prometheus does."""

from __future__ import annotations

import asyncio
import bisect
import math
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from telemetry_helpers import (
    Inferd,
    buckets,
    fake_gpus,
    free_port,
    histogram_quantile,
    scrape,
    series,
    value,
)

from inferd.clients import AsyncInferenceClient, InferenceClient, InferenceServerError
from inferd.server.app import StartupError
from inferd.server.telemetry.metrics import LATENCY_BUCKETS, GpuCollector

MakeServer = Callable[..., Any]
PIXELS = np.ones((1, 64), np.float32)


def _copy_models(demo: Path, root: Path, *names: str) -> Path:
    for name in names:
        shutil.copytree(demo / name, root / name)
    return root


def _code(exc: InferenceServerError) -> str:
    return str(exc.code.name)


async def _traffic(
    address: str, ok: int, concurrency: int, latencies: list[float], codes: Counter[str]
) -> None:
    """``ok`` good digits_mlp requests from ``concurrency`` loops, each loop
    also sending one bad request of every kind."""

    async def loop(client: AsyncInferenceClient, n: int) -> None:
        for _ in range(n):
            start = time.perf_counter()
            await client.infer("digits_mlp", {"pixels": PIXELS})
            latencies.append(time.perf_counter() - start)
            codes["OK"] += 1
        for model, version, inputs in (
            ("digits_mlp", "", {"pixels": np.ones((1, 3), np.float32)}),  # INVALID_ARGUMENT
            ("digits_mlp", "7", {"pixels": PIXELS}),  # NOT_FOUND: no such version
            ("no_such_model", "", {"pixels": PIXELS}),  # NOT_FOUND: no such model
        ):
            try:
                await client.infer(model, inputs, version=version)
            except InferenceServerError as exc:
                codes[f"{model}:{version}:{_code(exc)}"] += 1

    async with AsyncInferenceClient(address) as client:
        share = [ok // concurrency + (i < ok % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(loop(client, n) for n in share))


def test_scraped_histograms_count_every_request_by_status_and_match_client_latencies(
    demo_repository: Path, make_server: MakeServer
) -> None:
    server = make_server(demo_repository, metrics_port=0)
    port = server.server.metrics_port
    assert port > 0
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    scrapes: list[float] = []
    done = threading.Event()

    def scraper() -> None:  # scrape and parse while the traffic runs
        while not done.is_set():
            families = scrape(port)
            scrapes.append(value(families, "inferd_requests_total", model="digits_mlp"))
            time.sleep(0.02)

    thread = threading.Thread(target=scraper)
    thread.start()
    try:
        asyncio.run(
            _traffic(server.address, ok=400, concurrency=4, latencies=latencies, codes=codes)
        )
    finally:
        done.set()
        thread.join(10)
    assert len(scrapes) >= 3 and scrapes == sorted(scrapes)  # counters never go back
    assert codes == {
        "OK": 400,
        "digits_mlp::INVALID_ARGUMENT": 4,
        "digits_mlp:7:NOT_FOUND": 4,
        "no_such_model::NOT_FOUND": 4,
    }

    families = scrape(port)
    expected = {
        ("digits_mlp", "1", "OK"): 400,
        ("digits_mlp", "1", "INVALID_ARGUMENT"): 4,
        ("digits_mlp", "", "NOT_FOUND"): 4,  # a known model, a version it does not have
        ("_unknown", "", "NOT_FOUND"): 4,  # request names never become label values
    }
    seen = {
        (s["model"], s["version"], s["code"])
        for s in series(families, "inferd_requests_total")
        if value(families, "inferd_requests_total", **s) > 0
    }
    assert seen == set(expected)
    for (model, version, code), n in expected.items():
        labels = {"model": model, "version": version, "code": code}
        assert value(families, "inferd_requests_total", **labels) == n
        assert value(families, "inferd_request_duration_seconds_count", **labels) == n
        cumulative = buckets(families, "inferd_request_duration_seconds", **labels)
        assert [le for le, _ in cumulative] == [*LATENCY_BUCKETS, math.inf]
        counts = [c for _, c in cumulative]
        assert counts == sorted(counts) and counts[-1] == n

    # Server time is inside client time for every request, so at every bucket
    # bound the server has counted at least as many requests as the client saw.
    ok = buckets(families, "inferd_request_duration_seconds", model="digits_mlp", code="OK")
    client = sorted(latencies)
    for le, count in ok:
        assert count >= bisect.bisect_right(client, le), f"bucket le={le}"
    # Quantiles from the buckets: never above the client's (up to the bucket
    # holding it), and not wildly below it.
    bounds = [*LATENCY_BUCKETS, math.inf]
    for q in (0.5, 0.9, 0.99):
        estimate = histogram_quantile(q, ok)
        client_q = client[min(len(client) - 1, math.ceil(q * len(client)) - 1)]
        upper = bounds[bisect.bisect_left(bounds, client_q)]
        assert 0 < estimate <= upper, (q, estimate, client_q)
        assert estimate >= client_q / 20, (q, estimate, client_q)


def test_model_statistics_agree_with_the_metrics(
    demo_repository: Path, make_server: MakeServer
) -> None:
    server = make_server(demo_repository, metrics_port=0)
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    asyncio.run(_traffic(server.address, ok=120, concurrency=12, latencies=latencies, codes=codes))
    with InferenceClient(server.address) as client:
        # Several rows per request, so rows and requests differ.
        client.infer("digits_mlp", {"pixels": np.ones((5, 64), np.float32)})
        (stats,) = client.model_statistics("digits_mlp", "1")["model_stats"]
    families = scrape(server.server.metrics_port)
    mv = {"model": "digits_mlp", "version": "1"}

    def metric(name: str, **labels: str) -> float:
        return value(families, name, **mv, **labels)

    inference = stats["inference_stats"]
    assert inference["success"]["count"] == metric("inferd_requests_total", code="OK") == 121
    failed = sum(
        value(families, "inferd_requests_total", **s)
        for s in series(families, "inferd_requests_total")
        if s["model"] == "digits_mlp" and s["version"] == "1" and s["code"] != "OK"
    )
    assert inference["fail"]["count"] == failed == 12
    assert stats["inference_count"] == metric("inferd_inferences_total") == 125
    executions = stats["execution_count"]
    assert executions == metric("inferd_batch_size_count")
    assert executions == metric("inferd_compute_duration_seconds_count")
    assert executions == metric("inferd_batches_total")
    assert inference["queue"]["count"] == metric("inferd_queue_duration_seconds_count") == 121
    assert metric("inferd_queue_duration_seconds_sum") == pytest.approx(
        inference["queue"]["ns"] / 1e9, rel=1e-6, abs=1e-6
    )
    batch_stats = stats["batch_stats"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batch_stats) == metric(
        "inferd_batch_size_sum"
    )
    assert metric("inferd_compute_duration_seconds_sum") == pytest.approx(
        sum(b["compute_infer"]["ns"] for b in batch_stats) / 1e9, rel=1e-6, abs=1e-6
    )
    total_ns = inference["success"]["ns"] + inference["fail"]["ns"]
    assert metric("inferd_request_duration_seconds_sum") == pytest.approx(
        total_ns / 1e9, rel=1e-6, abs=1e-6
    )
    assert metric("inferd_pending_requests") == 0


def test_refusals_are_counted_by_reason(
    demo_repository: Path, make_server: MakeServer, tmp_path: Path
) -> None:
    repo = _copy_models(demo_repository, tmp_path / "models", "dense_reference")
    config = repo / "dense_reference" / "config.pbtxt"
    config.write_text(
        config.read_text() + 'parameters { key: "max_queue_size" value { string_value: "1" } }\n'
    )
    server = make_server(repo, metrics_port=0)
    x = np.ones((1, 1024), np.float32)
    outcomes: Counter[str] = Counter()

    async def flood() -> None:
        async with AsyncInferenceClient(server.address) as client:

            async def one(params: dict[str, Any] | None) -> None:
                try:
                    await client.infer("dense_reference", {"x": x}, parameters=params)
                    outcomes["OK"] += 1
                except InferenceServerError as exc:
                    outcomes[_code(exc)] += 1

            for _ in range(20):  # until the one-slot queue has overflowed
                await asyncio.gather(*(one(None) for _ in range(24)))
                if outcomes["UNAVAILABLE"]:
                    break
            await asyncio.gather(*(one({"timeout": 1}) for _ in range(5)))  # 1 µs budget

    asyncio.run(flood())
    assert outcomes["UNAVAILABLE"] > 0, outcomes
    families = scrape(server.server.metrics_port)
    mv = {"model": "dense_reference", "version": "1"}
    refused = {
        s["reason"]: value(families, "inferd_requests_refused_total", **s)
        for s in series(families, "inferd_requests_refused_total")
    }
    assert refused.get("queue_full", 0) == outcomes["UNAVAILABLE"]
    assert (
        refused.get("expired_on_arrival", 0) + refused.get("deadline", 0)
        == outcomes["DEADLINE_EXCEEDED"]
    )
    assert outcomes["DEADLINE_EXCEEDED"] == 5
    for code, n in outcomes.items():
        assert value(families, "inferd_requests_total", **mv, code=code) == n
    assert value(families, "inferd_requests_expired_total", **mv) == 0
    assert value(families, "inferd_pending_requests", **mv) == 0


def test_load_failures_and_readiness_per_model(
    demo_repository: Path, make_server: MakeServer, tmp_path: Path
) -> None:
    repo = _copy_models(demo_repository, tmp_path / "models", "digits_mlp")
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    server = make_server(repo, metrics_port=0)
    port = server.server.metrics_port
    families = scrape(port)
    assert value(families, "inferd_model_load_failures_total", model="broken") == 1
    assert value(families, "inferd_model_load_failures_total", model="digits_mlp") == 0
    assert value(families, "inferd_model_ready_versions", model="broken") == 0
    assert value(families, "inferd_model_ready_versions", model="digits_mlp") == 1
    # Requests for the broken model are labelled with its (repository) name.
    with InferenceClient(server.address) as client, pytest.raises(InferenceServerError):
        client.infer("broken", {"pixels": PIXELS})
    families = scrape(port)
    assert (
        value(families, "inferd_requests_total", model="broken", version="", code="UNAVAILABLE")
        == 1
    )
    server.call(server.server.models.unload("digits_mlp"))
    assert value(scrape(port), "inferd_model_ready_versions", model="digits_mlp") == 0
    server.call(server.server.models.load("digits_mlp"))
    assert value(scrape(port), "inferd_model_ready_versions", model="digits_mlp") == 1


def test_request_names_cannot_mint_series(demo_repository: Path, make_server: MakeServer) -> None:
    server = make_server(demo_repository, metrics_port=0)
    with InferenceClient(server.address) as client:
        for i in range(25):
            with pytest.raises(InferenceServerError):
                client.infer(f"attacker_{i}", {"pixels": PIXELS}, version=str(i))
    families = scrape(server.server.metrics_port)
    labels = [s.labels for f in families for s in f.samples]
    models = {s["model"] for s in labels if "model" in s}
    assert models == {"digits_mlp", "text_stats", "dense_reference", "_unknown"}
    versions = {s["version"] for s in labels if "version" in s}
    assert versions == {"1", ""}


def test_process_metrics_and_no_gpu_series_without_a_gpu(
    demo_repository: Path, make_server: MakeServer
) -> None:
    if Path("/dev/nvidia0").exists():
        pytest.skip("this machine has a GPU: GPU series are expected")
    server = make_server(demo_repository, metrics_port=0)
    families = scrape(server.server.metrics_port)
    assert value(families, "process_cpu_seconds_total") > 0
    assert value(families, "process_resident_memory_bytes") > 10 << 20
    assert not [f.name for f in families if f.name.startswith("inferd_gpu")]


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (fake_gpus, {"0": 0.40, "1": 0.41}),
        (lambda: fake_gpus(broken=0), {"1": 0.41}),  # an unreadable GPU is left out
        (lambda: None, {}),  # no NVML, no driver or no GPU: no series at all
    ],
)
def test_gpu_metrics_on_the_scrape(
    demo_repository: Path,
    make_server: MakeServer,
    monkeypatch: pytest.MonkeyPatch,
    snapshot: Callable[[], Any],
    expected: dict[str, float],
) -> None:
    import inferd.server.app as server_app

    monkeypatch.setattr(server_app, "GpuCollector", lambda: GpuCollector(snapshot))
    srv = make_server(demo_repository, metrics_port=0)
    families = scrape(srv.server.metrics_port)
    util = {
        s["gpu"]: value(families, "inferd_gpu_utilization_ratio", **s)
        for s in series(families, "inferd_gpu_utilization_ratio")
    }
    assert util == pytest.approx(expected)
    for gpu in expected:
        labels = {"gpu": gpu, "name": "NVIDIA H100"}
        assert value(families, "inferd_gpu_memory_used_bytes", **labels) == (int(gpu) + 1) << 30
        assert value(families, "inferd_gpu_memory_total_bytes", **labels) == 80 << 30
        assert value(families, "inferd_gpu_memory_utilization_ratio", **labels) == 0.10
    if not expected:
        assert not [f.name for f in families if f.name.startswith("inferd_gpu")]


def test_a_failing_gpu_reading_never_fails_the_scrape() -> None:
    def broken() -> None:
        raise RuntimeError("NVML went away")

    assert list(GpuCollector(broken).collect()) == []


def test_no_metrics_port_means_no_metrics(demo_repository: Path, make_server: MakeServer) -> None:
    server = make_server(demo_repository)
    assert server.server.metrics is None and server.server.metrics_port == 0


def test_metrics_port_in_use_is_a_startup_error(
    demo_repository: Path, make_server: MakeServer, tmp_path: Path
) -> None:
    first = make_server(demo_repository, metrics_port=0)
    taken = first.server.metrics_port
    with pytest.raises(StartupError, match=f"cannot serve metrics on 127.0.0.1:{taken}"):
        make_server(demo_repository, metrics_port=taken)
    cli = Inferd(demo_repository, tmp_path / "err.log", "--metrics-port", str(taken))
    assert cli.proc.wait(60) == 2
    cli.stop()
    lines = cli.log_lines()
    assert lines[-1].startswith(f"error: cannot serve metrics on 127.0.0.1:{taken}")
    assert "Traceback" not in "\n".join(lines)


def test_bad_metrics_port_exits_2(demo_repository: Path, tmp_path: Path) -> None:
    cli = Inferd(demo_repository, tmp_path / "err.log", "--metrics-port", "70000")
    assert cli.proc.wait(60) == 2
    cli.stop()
    assert cli.log_lines()[-1] == "error: --metrics-port 70000 is not a port number"


def _worker_pids(parent: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{parent}/task").iterdir():
        found.extend(int(t) for t in (task / "children").read_text().split())
    return [c for c in found if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_two_workers_metrics_add_up_in_one_scrape(demo_repository: Path, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    (multiproc / "counter_999999.db").write_bytes(b"stale")  # a previous run's file
    metrics_port = free_port()
    server = Inferd(
        demo_repository,
        tmp_path / "stderr.log",
        "--workers",
        "2",
        "--metrics-port",
        str(metrics_port),
        "--log-format",
        "json",
        env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
    )
    try:
        server.wait_workers_ready(2)
        workers = _worker_pids(server.proc.pid)
        assert len(workers) == 2
        sent = 0
        deadline = time.monotonic() + 30
        # A new channel is a new connection; the kernel spreads them over the
        # workers. Go on until both workers have answered (or time runs out).
        while time.monotonic() < deadline:
            for _ in range(8):
                with InferenceClient(server.address) as client:
                    client.infer("digits_mlp", {"pixels": PIXELS})
                sent += 1
            per_worker = []
            for pid in workers:
                own = tmp_path / f"only-{pid}"
                own.mkdir(exist_ok=True)
                for f in multiproc.glob(f"*_{pid}.db"):
                    shutil.copy(f, own / f.name)
                registry = CollectorRegistry()
                MultiProcessCollector(registry, path=str(own))
                per_worker.append(
                    sum(
                        s.value
                        for fam in registry.collect()
                        for s in fam.samples
                        if s.name == "inferd_requests_total" and s.labels.get("code") == "OK"
                    )
                )
                shutil.rmtree(own)
            if all(n > 0 for n in per_worker):
                break
        assert all(n > 0 for n in per_worker), per_worker
        families = scrape(metrics_port)
        ok = {"model": "digits_mlp", "version": "1", "code": "OK"}
        assert value(families, "inferd_requests_total", **ok) == sent == sum(per_worker)
        assert value(families, "inferd_request_duration_seconds_count", **ok) == sent
        assert value(families, "inferd_model_ready_versions", model="digits_mlp") == 1
        assert value(families, "inferd_pending_requests", model="digits_mlp") == 0
        labelled = {s["worker"] for s in series(families, "process_resident_memory_bytes")}
        assert labelled == {"0", "1", "supervisor"}
        assert not (multiproc / "counter_999999.db").exists()
    finally:
        assert server.stop() == 0


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_workers_metrics_directory_is_temporary_by_default(
    demo_repository: Path, tmp_path: Path
) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    metrics_port = free_port()
    server = Inferd(
        demo_repository,
        tmp_path / "stderr.log",
        "--workers",
        "2",
        "--metrics-port",
        str(metrics_port),
        "--log-format",
        "json",
        env={"TMPDIR": str(tmp)},
    )
    try:
        server.wait_workers_ready(2)
        (made,) = tmp.glob("inferd-metrics-*")
        assert list(made.glob("*.db"))
        with InferenceClient(server.address) as client:
            client.infer("digits_mlp", {"pixels": PIXELS})
        assert value(scrape(metrics_port), "inferd_requests_total", code="OK") == 1
    finally:
        assert server.stop() == 0
    assert list(tmp.glob("inferd-metrics-*")) == []  # removed on exit
