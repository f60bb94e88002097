"""clients.balancing: the service config our clients send, and its checks."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest

from inferd.clients import AsyncInferenceClient, InferenceClient, RetryPolicy
from inferd.clients.balancing import RETRIED_METHODS, balancing_options, service_config


def test_round_robin_with_retries_and_health_checks() -> None:
    config = service_config("round_robin", RetryPolicy())
    assert config == {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [
            {
                "name": [
                    {"service": "inference.GRPCInferenceService", "method": m}
                    for m in RETRIED_METHODS
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2.0,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }


def test_only_idempotent_unary_methods_are_retried() -> None:
    assert "ModelInfer" in RETRIED_METHODS
    for method in ("ModelStreamInfer", "RepositoryModelLoad", "RepositoryModelUnload"):
        assert method not in RETRIED_METHODS


def test_nothing_to_set_is_no_service_config() -> None:
    assert service_config() is None
    assert balancing_options((), None, None, None) == []
    # pick_first has no health checking: none asked for by default...
    assert service_config("pick_first") == {"loadBalancingConfig": [{"pick_first": {}}]}
    # ...and asking for it is an error rather than silently ignored.
    with pytest.raises(ValueError, match="round_robin"):
        service_config("pick_first", health_check=True)
    with pytest.raises(ValueError, match="round_robin"):
        service_config(None, health_check=True)
    assert "healthCheckConfig" not in (service_config("round_robin", health_check=False) or {})


def test_retries_without_a_policy_name() -> None:
    config = service_config(retry=RetryPolicy(max_attempts=3))
    assert config is not None and "loadBalancingConfig" not in config
    assert config["methodConfig"][0]["retryPolicy"]["maxAttempts"] == 3


def test_throttling_is_opt_in() -> None:
    assert "retryThrottling" not in (service_config(retry=RetryPolicy()) or {})
    config = service_config(retry=RetryPolicy(throttle=(10, 0.1)))
    assert config is not None
    assert config["retryThrottling"] == {"maxTokens": 10, "tokenRatio": 0.1}


def test_durations_are_protobuf_json() -> None:
    policy = RetryPolicy(initial_backoff_s=0.001, max_backoff_s=2.5)
    assert policy.to_json()["initialBackoff"] == "0.001s"
    assert policy.to_json()["maxBackoff"] == "2.5s"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_attempts": 1}, ValueError),  # gRPC needs 2..5
        ({"max_attempts": 6}, ValueError),  # gRPC would cap it silently
        ({"max_attempts": 2.0}, TypeError),
        ({"max_attempts": True}, TypeError),
        ({"initial_backoff_s": 0}, ValueError),
        ({"initial_backoff_s": float("nan")}, ValueError),
        ({"initial_backoff_s": 1e-10}, ValueError),  # rounds to 0 ns
        ({"max_backoff_s": -1}, ValueError),
        ({"initial_backoff_s": 2, "max_backoff_s": 1}, ValueError),
        ({"backoff_multiplier": 0}, ValueError),
        ({"status_codes": ()}, ValueError),
        ({"status_codes": ("UNAVAILABLE",)}, ValueError),
        ({"status_codes": (grpc.StatusCode.OK,)}, ValueError),
        ({"throttle": (0, 0.1)}, ValueError),
        ({"throttle": (10, 0)}, ValueError),
    ],
)
def test_policy_values_grpc_would_reject_fail_early(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        RetryPolicy(**kwargs)


def test_status_codes_are_kept_as_a_tuple() -> None:
    codes = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED]
    policy = RetryPolicy(status_codes=codes)
    codes.clear()
    assert policy.to_json()["retryableStatusCodes"] == ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]


def test_unknown_policy_and_wrong_retry_type() -> None:
    with pytest.raises(ValueError, match="round_robin"):
        service_config("least_busy")
    with pytest.raises(TypeError):
        service_config(retry={"maxAttempts": 3})  # type: ignore[arg-type]


def test_client_options_carry_the_config_and_explicit_options_win() -> None:
    options = dict(balancing_options((), "round_robin", RetryPolicy(), None))
    assert json.loads(options["grpc.service_config"])["loadBalancingConfig"]
    assert options["grpc.enable_retries"] == 1
    # A service config given both ways is ambiguous: refused.
    with pytest.raises(ValueError, match="not both"):
        InferenceClient(
            "127.0.0.1:1",
            load_balancing="round_robin",
            channel_options=[("grpc.service_config", "{}")],
        )
    # Without balancing arguments a hand-written service config passes through.
    InferenceClient("127.0.0.1:1", channel_options=[("grpc.service_config", "{}")]).close()


async def test_async_client_takes_the_same_arguments() -> None:
    async with AsyncInferenceClient(
        "ipv4:127.0.0.1:1,127.0.0.1:2", load_balancing="round_robin", retry=RetryPolicy()
    ):
        pass
    with pytest.raises(ValueError):
        AsyncInferenceClient("127.0.0.1:1", load_balancing="random")


def test_explicit_channel_options_override_the_balancing_defaults() -> None:
    from inferd.clients import _codec

    options = _codec.channel_options(
        1 << 20,
        [("grpc.enable_retries", 0)],
        balancing_options((), None, RetryPolicy(), None),
    )
    assert [v for k, v in options if k == "grpc.enable_retries"] == [0]
    assert any(k == "grpc.service_config" for k, _ in options)
