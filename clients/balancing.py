"""Client-side load balancing and retries across replicas, as a gRPC service config.

One channel can spread calls over every replica of a service and retry a call
that a replica refused on another one; gRPC does both inside the channel::

    InferenceClient(
        "dns:///inferd-headless.ml.svc.cluster.local:8001",  # every pod's IP
        load_balancing="round_robin",
        retry=RetryPolicy(),
    )

- ``load_balancing="round_robin"`` keeps one connection to every address the
  target resolves to and sends each call to the next connected one.
  ``pick_first`` (gRPC's default) uses one connection. A ``dns:///`` target
  over a headless Service resolves to the pods' IPs; gRPC re-resolves when a
  connection closes, so servers with a max connection age make clients find
  new replicas. ``ipv4:127.0.0.1:p1,127.0.0.1:p2`` names a static list.
- ``retry``: a ``RetryPolicy`` re-sends a call that failed with one of its
  status codes (UNAVAILABLE: a replica draining, a full queue, a connection
  lost before the answer), with exponential backoff; under round robin the
  next attempt goes to the next replica. Retrying inference is safe: a request
  is a pure function of its inputs, so running it twice changes nothing but
  the statistics. Only idempotent unary methods are retried (``RETRIED_METHODS``);
  streams, model load/unload and admin calls are not.
- ``health_check``: the channel watches each replica's ``grpc.health.v1``
  status (service ``""``) and sends nothing to one that reports NOT_SERVING
  (loading, draining). Servers without the health service are assumed healthy.
  Round robin only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

#: The V2 service and the methods that are safe to send again.
SERVICE = "inference.GRPCInferenceService"
RETRIED_METHODS = (
    "ModelInfer",
    "ServerLive",
    "ServerReady",
    "ModelReady",
    "ServerMetadata",
    "ModelMetadata",
    "ModelConfig",
    "ModelStatistics",
    "RepositoryIndex",
)
LOAD_BALANCING_POLICIES = ("pick_first", "round_robin")
#: gRPC caps maxAttempts at 5 (the first attempt included).
MAX_ATTEMPTS_LIMIT = 5
#: The service config key and the channel options it is passed with.
SERVICE_CONFIG_OPTION = "grpc.service_config"


def _duration(seconds: float, name: str) -> str:
    """A google.protobuf.Duration in JSON ("0.05s"); gRPC wants it positive."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, not {seconds!r}")
    if seconds > 315_576_000_000:  # Duration's own range
        raise ValueError(f"{name} is out of range: {seconds!r}")
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    if text == "0":
        raise ValueError(f"{name} must be at least 1 ns, not {seconds!r}")
    return text + "s"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """gRPC's retry policy (gRFC A6) for the idempotent methods.

    ``max_attempts`` counts the first one (2..5; gRPC caps it at 5). The n-th
    retry waits a random time in [0, min(initial * multiplier**(n-1), max)].
    ``status_codes``: what to retry; UNAVAILABLE is the one a replica answers
    when it cannot take the call (draining, queue full) and the one a lost
    connection gives. A call whose response has started is never retried, and
    neither is one the caller cancelled or whose deadline passed (the
    deadline covers all attempts). ``throttle``: gRPC's retry throttling as
    ``(max_tokens, token_ratio)``: every failure spends a token, every success
    earns ``token_ratio``, and retries stop while fewer than half the tokens
    are left, so a service that is down is not hit by a retry storm. Off by
    default (a drain or a lost replica would spend the tokens and turn
    retryable refusals into errors); set it for large client fleets.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    backoff_multiplier: float = 2.0
    status_codes: Sequence[grpc.StatusCode] = field(
        default_factory=lambda: (grpc.StatusCode.UNAVAILABLE,)
    )
    throttle: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError("max_attempts must be an int")
        if not 2 <= self.max_attempts <= MAX_ATTEMPTS_LIMIT:
            raise ValueError(
                f"max_attempts must be 2..{MAX_ATTEMPTS_LIMIT} (gRPC caps it at "
                f"{MAX_ATTEMPTS_LIMIT}), not {self.max_attempts}"
            )
        _duration(self.initial_backoff_s, "initial_backoff_s")
        _duration(self.max_backoff_s, "max_backoff_s")
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be at least initial_backoff_s")
        if not math.isfinite(self.backoff_multiplier) or self.backoff_multiplier <= 0:
            raise ValueError(f"backoff_multiplier must be positive, not {self.backoff_multiplier}")
        codes = tuple(self.status_codes)
        if not codes:
            raise ValueError("status_codes must name at least one status code")
        for code in codes:
            if not isinstance(code, grpc.StatusCode) or code is grpc.StatusCode.OK:
                raise ValueError(f"status_codes holds {code!r}: give non-OK grpc.StatusCode values")
        object.__setattr__(self, "status_codes", codes)
        if self.throttle is not None:
            tokens, ratio = self.throttle
            if not 0 < tokens <= 1000:
                raise ValueError("throttle max_tokens must be in (0, 1000]")
            if not 0 < ratio <= tokens:
                raise ValueError("throttle token_ratio must be positive and at most max_tokens")

    def to_json(self) -> dict[str, Any]:
        """The ``retryPolicy`` object of a method config."""
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": _duration(self.initial_backoff_s, "initial_backoff_s"),
            "maxBackoff": _duration(self.max_backoff_s, "max_backoff_s"),
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": [code.name for code in self.status_codes],
        }


def service_config(
    load_balancing: str | None = None,
    retry: RetryPolicy | None = None,
    health_check: bool | None = None,
) -> dict[str, Any] | None:
    """The service config for these choices, or None when there is nothing to
    set (gRPC's defaults: pick_first, no retries). ``health_check`` None: on
    with round robin, off otherwise."""
    if load_balancing is not None and load_balancing not in LOAD_BALANCING_POLICIES:
        raise ValueError(
            f"load_balancing must be one of {', '.join(LOAD_BALANCING_POLICIES)}, "
            f"not {load_balancing!r}"
        )
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError("retry must be a RetryPolicy (or None)")
    if health_check is None:
        health_check = load_balancing == "round_robin"
    elif health_check and load_balancing != "round_robin":
        # gRPC's pick_first ignores healthCheckConfig: say so instead of pretending.
        raise ValueError("health_check needs load_balancing='round_robin'")
    config: dict[str, Any] = {}
    if load_balancing is not None:
        config["loadBalancingConfig"] = [{load_balancing: {}}]
    if health_check:
        config["healthCheckConfig"] = {"serviceName": ""}
    if retry is not None:
        config["methodConfig"] = [
            {
                "name": [{"service": SERVICE, "method": m} for m in RETRIED_METHODS],
                "retryPolicy": retry.to_json(),
            }
        ]
        if retry.throttle is not None:
            tokens, ratio = retry.throttle
            config["retryThrottling"] = {"maxTokens": tokens, "tokenRatio": ratio}
    return config or None


def balancing_options(
    channel_options: Sequence[tuple[str, Any]],
    load_balancing: str | None,
    retry: RetryPolicy | None,
    health_check: bool | None,
) -> list[tuple[str, Any]]:
    """Channel options carrying the service config for the client constructors."""
    config = service_config(load_balancing, retry, health_check)
    if config is None:
        return []
    if any(key == SERVICE_CONFIG_OPTION for key, _ in channel_options):
        raise ValueError(
            f"pass load_balancing/retry/health_check or a {SERVICE_CONFIG_OPTION!r} "
            "channel option, not both"
        )
    options: list[tuple[str, Any]] = [(SERVICE_CONFIG_OPTION, json.dumps(config))]
    if retry is not None:
        options.append(("grpc.enable_retries", 1))
    return options
