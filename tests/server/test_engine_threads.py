"""Engine threads chosen at warmup when a model's config names none: the
rule for the pool worth trying, the measurement that keeps it only when it
pays, and a real server that logs its choice and leaves a config's own
count alone."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
from conftest import ServerThread
from engine_doubles import DoublingEngine

from inferd.server.model_io import ModelIO, TensorInfo
from inferd.server.scheduler.options import BatchingOptions
from inferd.server.scheduler.warmup import (
    MAX_AUTO_THREADS,
    choose_intra_op_threads,
    host_cpus,
    thread_candidate,
)


class SleepingEngine(DoublingEngine):
    """Takes ``seconds`` per call; remembers whether it was closed."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.closed = False

    def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        time.sleep(self.seconds)
        return {"y": inputs["x"] * 2}

    def close(self) -> None:
        self.closed = True


IO = ModelIO(
    {"x": TensorInfo("x", "FP32", (-1, 2))},
    {"y": TensorInfo("y", "FP32", (-1, 2))},
    max_batch_size=4,
)
OPTIONS = BatchingOptions(max_batch_size=4, warmup_rounds=3)


def test_the_pool_tried_shares_the_hosts_cpus_but_the_loops_among_instances() -> None:
    assert thread_candidate(2, 1) == 1  # the other core is the event loop's
    assert thread_candidate(3, 1) == 2
    assert thread_candidate(5, 2) == 2
    assert thread_candidate(6, 4) == 1  # one CPU each at most: nothing to try
    assert thread_candidate(1, 1) == 1
    assert thread_candidate(64, 1) == MAX_AUTO_THREADS


@pytest.mark.parametrize(("pooled_s", "kept_threads"), [(0.001, 2), (0.006, 1)])
def test_a_pool_is_kept_only_when_it_runs_the_largest_batch_clearly_faster(
    pooled_s: float, kept_threads: int
) -> None:
    one = SleepingEngine(0.006)
    pooled = SleepingEngine(pooled_s)
    loaded: list[int] = []

    def load(threads: int) -> SleepingEngine:
        loaded.append(threads)
        return pooled

    kept, threads, why = choose_intra_op_threads(one, load, IO, OPTIONS, 2)
    assert loaded == [2] and threads == kept_threads and "batch of 4" in why
    assert kept is (pooled if kept_threads == 2 else one)
    assert one.closed == (kept_threads == 2) and pooled.closed == (kept_threads == 1)


def test_one_cpu_per_instance_keeps_one_thread_without_measuring() -> None:
    one = SleepingEngine(0.0)

    def load(threads: int) -> SleepingEngine:
        raise AssertionError("nothing to measure")

    kept, threads, why = choose_intra_op_threads(one, load, IO, OPTIONS, 1)
    assert kept is one and threads == 1 and not one.closed and "CPU(s)" in why


def _thread_logs(caplog: pytest.LogCaptureFixture, model: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if getattr(r, "event", "") == "engine_threads" and getattr(r, "model", "") == model
    ]


def test_a_plain_triton_config_gets_threads_chosen_and_logged(
    demo_repository: Path,
    tmp_path: Path,
    make_server: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    repository = tmp_path / "models"
    shutil.copytree(demo_repository / "digits_mlp", repository / "digits_mlp")
    config = repository / "digits_mlp" / "config.pbtxt"
    text = config.read_text()
    plain = text.split('parameters {\n  key: "intra_op_thread_count"')[0]
    assert plain != text  # the demo config names a count; this copy must not
    config.write_text(plain)
    caplog.set_level(logging.INFO, logger="inferd.models")
    make_server(repository)
    (record,) = _thread_logs(caplog, "digits_mlp")
    candidate = thread_candidate(host_cpus(), 1)
    assert record.__dict__["intra_op_threads"] in {1, candidate}
    assert "intra_op_thread_count overrides" in record.getMessage()
    if candidate > 1:
        assert "batch of 64" in record.__dict__["reason"]


def test_a_thread_count_in_the_config_is_taken_as_given(
    demo_repository: Path,
    make_server: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="inferd.models")
    make_server(demo_repository)  # every demo config names intra_op_thread_count
    assert "intra_op_thread_count" in (demo_repository / "digits_mlp" / "config.pbtxt").read_text()
    assert not _thread_logs(caplog, "digits_mlp")
