"""Tracing configured by the standard OTEL_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from telemetry_helpers import Inferd

from inferd.server.telemetry.tracing import Tracing, TracingConfigError, exporter_names, resource


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": " OTLP , console "}, ["otlp", "console"]),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, []),
    ],
)
def test_exporter_names(env: dict[str, str], names: list[str]) -> None:
    assert exporter_names(env) == names


def test_off_unless_asked() -> None:
    assert Tracing.from_env("0.1.0") is None


def test_console_exporter_and_link_limit_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_SPAN_LINK_COUNT_LIMIT", "7")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    tracing = Tracing.from_env("0.1.0")
    assert tracing is not None
    try:
        assert tracing.max_links == 7
        assert "0.25" in tracing.provider.sampler.get_description()
    finally:
        tracing.shutdown()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER names 'zipkin'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_TRACES_SAMPLER": "sometimes"},
            "OTEL_TRACES_SAMPLER='sometimes'",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "1.5",
            },
            "OTEL_TRACES_SAMPLER_ARG='1.5' must be a ratio",
        ),
        (
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": "lots",
            },
            "OTEL_TRACES_SAMPLER_ARG='lots'",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "inferd exports OTLP over grpc",
        ),
    ],
)
def test_unusable_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    with pytest.raises(TracingConfigError, match=message.replace("(", r"\(")):
        Tracing.from_env("0.1.0")


def test_unusable_setting_stops_serve_with_one_line(demo_repository: Path, tmp_path: Path) -> None:
    server = Inferd(demo_repository, tmp_path / "err.log", env={"OTEL_TRACES_EXPORTER": "jaeger"})
    assert server.proc.wait(60) == 2
    server.stop()
    lines = server.log_lines()
    assert lines[-1] == (
        "error: OTEL_TRACES_EXPORTER names 'jaeger'; inferd offers otlp, console, none"
    )
    assert "Traceback" not in "\n".join(lines)


def test_resource_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    attrs = resource("0.1.0").attributes
    assert attrs["service.name"] == "inferd" and attrs["service.version"] == "0.1.0"
    assert attrs["service.instance.id"]  # one per process: tells workers apart
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=ml")
    attrs = resource("0.1.0").attributes
    assert attrs["service.name"] == "from-attrs" and attrs["team"] == "ml"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-name")
    assert resource("0.1.0").attributes["service.name"] == "from-name"
