"""Validation of a ``ServerConfig``: the one place that says which values
and combinations the server refuses, for the command line, the environment
and embedding code alike.

Messages name each setting the way its value was given (``--grpc-port``,
``INFERD_GRPC_PORT``, or the field name for a ``ServerConfig`` built in
code): ``check`` takes that naming as ``name``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from inferd.server.settings.options import Setting, settings

if TYPE_CHECKING:
    from inferd.server.settings.config import ServerConfig

#: gRPC channel arguments are C ints.
_INT32_MAX = 2**31 - 1
#: Checked by ``connection_age_options``, with messages of their own.
_CONNECTION_AGE = frozenset({"max_connection_age_s", "max_connection_age_grace_s"})


class SettingsError(ValueError):
    """A setting's value, or a combination of them, the server refuses; the
    message is one line for the operator."""


def check(config: ServerConfig, name: Callable[[str], str] = str) -> None:
    """Raise SettingsError for the first value or combination refused."""
    for setting in settings(type(config)):
        problem = _value_problem(setting, getattr(config, setting.name), name(setting.name))
        if problem:
            raise SettingsError(problem)
    problem = _combination_problem(config, name)
    if problem:
        raise SettingsError(problem)


def _value_problem(setting: Setting, value: Any, shown: str) -> str | None:
    if value is None or setting.name in _CONNECTION_AGE:
        return None
    choices = setting.option.choices
    if choices and value not in choices:
        return f"{shown} {value!r} is not one of {', '.join(choices)}"
    if setting.name.endswith("_port"):
        return None if 0 <= value <= 65535 else f"{shown} {value} is not a port number"
    if setting.name == "gil_switch_interval_s":
        # 0 leaves Python's setting; past a second the loop would starve the engines.
        if math.isfinite(value) and 0 <= value <= 1:
            return None
        return f"{shown} {value:g} must be between 0 and 1 (seconds)"
    minimum = setting.option.minimum
    if setting.kind is float and (
        not math.isfinite(value) or (value <= 0 if minimum is None else value < minimum)
    ):
        what = "positive" if minimum is None else "non-negative"
        return f"{shown} {value:g} must be a {what} number of seconds"
    if setting.kind is int and not isinstance(value, bool):
        if minimum is None and setting.is_size:
            minimum = 1
        if minimum is not None and value < minimum:
            return f"{shown} {value} must be at least {minimum:g}"
    return None


def _combination_problem(config: ServerConfig, name: Callable[[str], str]) -> str | None:
    if config.load_models and config.model_control_mode != "explicit":
        return f"{name('load_models')} needs {name('model_control_mode')} explicit"
    if config.triton_metrics and config.metrics_port is None:
        return f"{name('triton_metrics')} needs {name('metrics_port')}"
    if config.tls_cert_file is None and config.tls_key_file is None:
        if config.tls_client_ca_file is not None:
            return "a TLS client CA needs a server certificate and key as well"
    elif config.tls_cert_file is None or config.tls_key_file is None:
        return "TLS needs both a certificate and a key file"
    if config.jwt_keys_file is not None and not (config.jwt_issuer and config.jwt_audience):
        return (
            f"{name('jwt_keys_file')} needs an issuer and an audience "
            f"({name('jwt_issuer')}, {name('jwt_audience')})"
        )
    if config.tls_client_roles_file is not None and config.tls_client_ca_file is None:
        return f"{name('tls_client_roles_file')} needs {name('tls_client_ca_file')}"
    if not config.auth_enabled and (config.jwt_issuer or config.jwt_audience):
        return "a JWT issuer or audience needs a JWT keys file"
    try:
        config.connection_age_options()
    except ValueError as exc:
        return str(exc)
    return None


def connection_age_options(age_s: float | None, grace_s: float | None) -> list[tuple[str, int]]:
    """``grpc.max_connection_age_ms`` / ``grpc.max_connection_age_grace_ms``;
    raises ValueError (naming the setting) for values gRPC would misread."""
    if age_s is None:
        if grace_s is not None:
            raise ValueError("max connection age grace needs a max connection age")
        return []
    options = [("grpc.max_connection_age_ms", _millis(age_s, "max connection age", minimum=1))]
    if grace_s is not None:
        grace_ms = _millis(grace_s, "max connection age grace", minimum=0)
        options.append(("grpc.max_connection_age_grace_ms", grace_ms))
    return options


def _millis(seconds: float, name: str, *, minimum: int) -> int:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, not {seconds!r}")
    millis = round(seconds * 1000)
    if millis < minimum:
        raise ValueError(f"{name} must be at least {minimum} ms, not {seconds!r} s")
    if millis > _INT32_MAX:
        raise ValueError(f"{name} must be at most {_INT32_MAX // 1000} s, not {seconds!r} s")
    return millis
