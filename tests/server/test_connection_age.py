"""Server-side max connection age: clients are sent away now and then, so
long-lived connections rebalance over replicas."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from inferd.clients import InferenceClient, InferenceServerError
from inferd.server.app import InferdServer, ServerConfig, StartupError
from inferd.server.cli import main as cli_main
from inferd.server.settings import connection_age_options


@pytest.mark.parametrize(
    ("age", "grace", "expected"),
    [
        (None, None, []),
        (300, None, [("grpc.max_connection_age_ms", 300_000)]),
        (
            0.5,
            0,
            [("grpc.max_connection_age_ms", 500), ("grpc.max_connection_age_grace_ms", 0)],
        ),
        (
            2.0004,
            30,
            [("grpc.max_connection_age_ms", 2000), ("grpc.max_connection_age_grace_ms", 30_000)],
        ),
    ],
)
def test_options(age: float | None, grace: float | None, expected: list[tuple[str, int]]) -> None:
    assert connection_age_options(age, grace) == expected


@pytest.mark.parametrize(
    ("age", "grace", "message"),
    [
        (None, 5, "needs a max connection age"),  # grace alone would do nothing
        (0, None, "at least 1 ms"),  # 0 ms: GOAWAY at once, a reconnect storm
        (0.0004, None, "at least 1 ms"),  # rounds to 0 ms
        (-1, None, "non-negative"),
        (float("nan"), None, "non-negative"),
        (float("inf"), None, "non-negative"),
        (3e6, None, "at most"),  # past a C int of milliseconds
        (60, -1, "non-negative"),
        (60, 3e6, "at most"),
    ],
)
def test_values_grpc_would_misread_are_refused(
    age: float | None, grace: float | None, message: str, demo_repository: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        connection_age_options(age, grace)
    config = ServerConfig(
        model_repository=demo_repository,
        max_connection_age_s=age,
        max_connection_age_grace_s=grace,
    )
    with pytest.raises(StartupError, match=message):
        InferdServer(config)


def test_cli_flags_refuse_bad_values_with_one_line(
    demo_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["serve", "--model-repository", str(demo_repository), "--grpc-port", "0"]
    assert cli_main([*base, "--max-connection-age-grace-s", "5"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: max connection age grace needs a max connection age"
    )
    assert cli_main([*base, "--max-connection-age-s", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: max connection age must be at least 1 ms")


def _watch(address: str, log: list[tuple[str, float]]) -> grpc.Channel:
    # A local subchannel pool: each channel gets its own connection.
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    channel.subscribe(lambda state: log.append((state.name, time.monotonic())), True)
    return channel


def test_connections_get_goaway_after_the_age_with_jitter(
    make_server: Any, demo_repository: Path
) -> None:
    """Each connection is sent away after age * U(0.9, 1.1) (gRPC core's own
    jitter, so reconnects after a deploy do not come in one wave)."""
    age = 3.0
    server = make_server(demo_repository, max_connection_age_s=age, max_connection_age_grace_s=0.5)
    logs: list[list[tuple[str, float]]] = [[] for _ in range(24)]
    channels = [_watch(server.address, log) for log in logs]
    try:
        time.sleep(age * 1.1 + 1.5)
    finally:
        for channel in channels:
            channel.close()
    ages = []
    for log in logs:
        ready = [t for state, t in log if state == "READY"]
        idle = [t for state, t in log if state == "IDLE" and ready and t > ready[0]]
        assert ready and idle, log
        ages.append(idle[0] - ready[0])
    # Measured from the client's READY, which comes a little after the
    # server starts the clock, and late by scheduling noise on a busy host.
    assert min(ages) > 0.9 * age - 0.3, ages
    assert max(ages) < 1.1 * age + 1.0, ages
    # 24 draws from a 0.6 s wide window spread far more than noise does.
    assert max(ages) - min(ages) > 0.2, ages


def test_a_call_on_an_aged_connection_gets_the_grace_then_the_connection_closes(
    make_server: Any, demo_repository: Path
) -> None:
    """A stream opened before the GOAWAY keeps working during the grace, then
    is cut with UNAVAILABLE (so a client re-opens it, on a new connection)."""
    server = make_server(demo_repository, max_connection_age_s=0.5, max_connection_age_grace_s=1.5)
    pixels = np.zeros((1, 64), np.float32)
    done = threading.Event()

    def requests() -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        yield "before", {"pixels": pixels}
        time.sleep(1.0)  # past the GOAWAY (0.45..0.55 s), inside the grace
        yield "during-grace", {"pixels": pixels}
        done.wait(10)

    answered = []
    start = time.monotonic()
    with InferenceClient(server.address) as client:
        with pytest.raises(InferenceServerError) as failure:
            try:
                for reply in client.stream_infer("digits_mlp", requests(), timeout=8):
                    assert not isinstance(reply, InferenceServerError), reply
                    answered.append(reply.id)
            finally:
                done.set()
        elapsed = time.monotonic() - start
        assert failure.value.code == grpc.StatusCode.UNAVAILABLE, failure.value
        assert answered == ["before", "during-grace"]
        assert 1.5 < elapsed < 6, elapsed
        # The client reconnects by itself.
        assert client.infer("digits_mlp", {"pixels": pixels}, timeout=10)["label"].shape == (1, 1)
