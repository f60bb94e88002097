"""benchmarks.stream_limit_clients: how failures are named and counted."""

from __future__ import annotations

import grpc

from benchmarks.stream_limit_clients import _failure, summary
from inferd.clients import InferenceServerError

REFUSED = "Stream removed (RST_STREAM (Received RST_STREAM with error code 7))"


class _RpcError(Exception):
    """Stands in for grpc's errors: code() and details() methods."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return REFUSED


def test_failures_of_every_client_kind_read_the_same() -> None:
    plain = _failure(_RpcError())
    ours = _failure(InferenceServerError(grpc.StatusCode.UNAVAILABLE, REFUSED))
    assert plain == ours == f"UNAVAILABLE: {REFUSED[:70]}"
    assert _failure(ValueError("bad")) == "ValueError: bad"


def test_summary_counts_failures_and_those_before_settings_could_arrive() -> None:
    sink = [(0.01, "OK"), (0.05, "UNAVAILABLE: x"), (0.5, "UNAVAILABLE: x"), (1.0, "OK")]
    result = summary(sink, seconds=2.0)
    assert result["ok_per_s"] == 1.0
    assert result["sent"] == 4
    assert result["failed"] == 2
    assert result["failed_in_first_100ms"] == 1
    assert result["failures"] == {"UNAVAILABLE: x": 2}
