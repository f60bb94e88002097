"""benchmarks.deadline_overload: how outcomes are told apart and summed."""

from __future__ import annotations

from typing import Any

import grpc

from benchmarks.deadline_overload import Outcome, classify, summarize


class _Error:
    """Stands in for grpc.aio.AioRpcError: a code and details."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_the_clients_own_deadline_is_unanswered_and_the_servers_refusals_are_not() -> None:
    def kind(code: grpc.StatusCode, details: str) -> str:
        error: Any = _Error(code, details)
        return classify(error)[1]

    assert kind(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") == "unanswered"
    assert kind(grpc.StatusCode.DEADLINE_EXCEEDED, "cannot finish in time") == "predicted-late"
    assert kind(grpc.StatusCode.UNAVAILABLE, "queue is full; retry") == "queue-full"
    assert (
        kind(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit of 2 reached") == "rpc-limit"
    )


def test_summary_leaves_out_the_warm_up_and_counts_each_kind() -> None:
    outcomes = [
        Outcome(0.5, 0.01, "OK", ""),  # warm-up: left out
        Outcome(1.5, 0.02, "OK", ""),
        Outcome(2.0, 0.04, "OK", ""),
        Outcome(2.5, 0.001, "DEADLINE_EXCEEDED", "predicted-late"),
        Outcome(3.0, 0.1, "DEADLINE_EXCEEDED", "unanswered"),
    ]
    phase = summarize(outcomes, callers=4, seconds=3.0)
    assert phase.goodput_rps == 1.0  # two OK in the two seconds after warm-up
    assert phase.unanswered == 1
    assert phase.refused == {"DEADLINE_EXCEEDED:predicted-late": 1}
    assert phase.other == {}
