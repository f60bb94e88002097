"""Input quality counters (NaN, Inf, empty BYTES, out of the reference's
range) and the feature age histogram, read from a real server's /metrics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from monitoring_helpers import metric, wait_until

from inferd.clients import InferenceClient, InferenceServerError

TEXT = "text_stats"


def _text_rows(
    rows: int, *, ids: int = 50, weight: float = 0.5, tag: bytes = b"t"
) -> dict[str, Any]:
    return {
        "token_ids": np.full((rows, 8), ids, np.int64),
        "weights": np.full((rows, 8), weight, np.float16),
        "tag": np.array([[tag]] * rows, dtype=object),
    }


def _bad(port: int, problem: str, tensor: str) -> float:
    return metric(port, "inferd_input_bad_rows_total", model=TEXT, input=tensor, problem=problem)


def test_nan_inf_empty_and_out_of_range_rows_are_counted(
    demo_repository: Path, make_server: Any
) -> None:
    server = make_server(
        demo_repository,
        metrics_port=0,
        monitor_sample_rate=1.0,
        monitor_reference_rows=40,
        monitor_interval_s=0.05,
    )
    port = server.server.metrics_port
    sampled = lambda: metric(port, "inferd_input_sampled_rows_total", model=TEXT)  # noqa: E731
    with InferenceClient(server.address) as client:
        # Clean rows: they make the captured reference (ids 0..99, weights 0..1).
        for start in range(0, 40, 20):
            batch = _text_rows(20)
            batch["token_ids"] = np.arange(start * 8, (start + 20) * 8).reshape(20, 8) % 100
            client.infer(TEXT, batch)
        wait_until(lambda: metric(port, "inferd_drift_reference_rows", model=TEXT) == 40)
        assert sampled() == 40
        for problem in ("nan", "inf", "empty", "out_of_range"):
            assert _bad(port, problem, "weights") + _bad(port, problem, "tag") == 0

        # A spike: of 20 rows, 3 carry a NaN, 2 an infinity, 4 an empty tag
        # and 5 a token id never seen in the reference.
        batch = _text_rows(20)
        batch["weights"][:3, 1] = np.nan
        batch["weights"][3:5, 7] = np.inf
        batch["tag"][5:9, 0] = b""
        batch["token_ids"][9:14, 2] = 5000
        client.infer(TEXT, batch)
        wait_until(lambda: sampled() == 60)
    assert _bad(port, "nan", "weights") == 3
    assert _bad(port, "inf", "weights") == 2
    assert _bad(port, "empty", "tag") == 4
    assert _bad(port, "out_of_range", "token_ids") == 5
    # NaN is not also out of range; an empty tag has no range.
    assert _bad(port, "out_of_range", "weights") == 2  # the infinities are


def test_feature_age_is_observed_only_for_requests_that_carry_a_timestamp(
    demo_repository: Path, make_server: Any
) -> None:
    server = make_server(demo_repository, metrics_port=0, monitor_sample_rate=0.0)
    port = server.server.metrics_port
    count = lambda: metric(port, "inferd_feature_age_seconds_count", model="digits_mlp")  # noqa: E731
    pixels = {"pixels": np.ones((1, 64), np.float32)}
    with InferenceClient(server.address) as client:
        client.infer("digits_mlp", pixels)
        assert count() == 0
        stamp = time.time() - 120  # features computed two minutes ago
        client.infer("digits_mlp", pixels, parameters={"feature_timestamp": stamp})
        client.infer("digits_mlp", pixels, parameters={"feature_timestamp": int(stamp)})
        assert count() == 2
        total = metric(port, "inferd_feature_age_seconds_sum", model="digits_mlp")
        assert 2 * 119 < total < 2 * 200
        # Stale: the 60 s bucket holds none of them, the 300 s bucket both.
        le = {"model": "digits_mlp"}
        assert metric(port, "inferd_feature_age_seconds_bucket", le="60.0", **le) == 0
        assert metric(port, "inferd_feature_age_seconds_bucket", le="300.0", **le) == 2
        # A clock ahead of ours: age 0, not negative.
        client.infer("digits_mlp", pixels, parameters={"feature_timestamp": time.time() + 30})
        assert metric(port, "inferd_feature_age_seconds_bucket", le="0.1", **le) == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1700000000", "must be a non-negative number"),
        (-5, "must be a non-negative number"),
        (True, "must be a non-negative number"),
        (1_700_000_000_000, "looks like milliseconds"),
    ],
)
def test_a_bad_feature_timestamp_is_refused_with_the_reason(
    demo_server: Any, value: object, message: str
) -> None:
    with (
        InferenceClient(demo_server.address) as client,
        pytest.raises(InferenceServerError) as caught,
    ):
        client.infer(
            "digits_mlp",
            {"pixels": np.ones((1, 64), np.float32)},
            parameters={"feature_timestamp": value},
        )
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "feature_timestamp" in caught.value.details and message in caught.value.details
