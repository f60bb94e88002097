"""Fixtures for the telemetry tests: tracing into memory, clean OTEL_* variables."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from server.telemetry.tracing import Tracing

MakeTracing = Callable[..., tuple[Tracing, InMemorySpanExporter]]


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's OTEL_* settings must not leak into these tests."""
    import os

    for key in list(os.environ):
        if key.startswith("OTEL_") or key == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(key)


@pytest.fixture
def make_tracing() -> Iterator[MakeTracing]:
    """``make_tracing(max_links=128, sampler=None)``: a Tracing whose spans land
    in the returned InMemorySpanExporter as they end."""
    providers: list[TracerProvider] = []

    def make(
        max_links: int = 128, sampler: Sampler | None = None
    ) -> tuple[Tracing, InMemorySpanExporter]:
        exporter = InMemorySpanExporter()
        provider = TracerProvider(
            resource=Resource.create({"service.name": "inferd-test"}),
            span_limits=SpanLimits(max_links=max_links),
            sampler=sampler,
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        return Tracing(provider, max_links=max_links), exporter

    yield make
    for provider in providers:
        provider.shutdown()
