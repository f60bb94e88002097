"""Shared fixtures for the whole test tree."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

# `pytest` (unlike `python -m pytest`) does not put the repository root on
# sys.path; with it there, `inferd` (and the test helpers) are this checkout's.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from inferd.server.app import InferdServer, ServerConfig  # noqa: E402

# `inferd serve` children the tests start serve HTTP/REST on a free port, not
# on Triton's 8000, which another server (or test run) may hold.
os.environ.setdefault("INFERD_HTTP_PORT", "0")
# Servers the tests start authenticate no one; tests load and unload models on
# them, which such a server refuses unless allowed. Tests of the refusal say false.
os.environ.setdefault("INFERD_ALLOW_UNAUTHENTICATED_ADMIN", "true")


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled demo model repository, built once per session (~2 s)."""
    from inferd.server.demo_models import build_demo_repository

    return build_demo_repository(tmp_path_factory.mktemp("demo") / "models")


T = TypeVar("T")


class ServerThread:
    """A real inferd server on 127.0.0.1, port 0, on its own event loop thread,
    so synchronous clients (and child processes) can call it from the test."""

    def __init__(
        self, config: ServerConfig, interceptors: Sequence[Any] = (), **server_options: Any
    ) -> None:
        self.config = config
        self.interceptors = tuple(interceptors)
        #: Passed to InferdServer (e.g. ``tracing=``).
        self.server_options = server_options
        self.server: InferdServer | None = None
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="inferd-test-server", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._started.wait(60):
            raise TimeoutError("server did not start within 60 s")
        if self._error is not None:
            raise self._error
        return self

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop (e.g. to load or unload a model)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(60)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.server = InferdServer(
                self.config, interceptors=self.interceptors, **self.server_options
            )
            self.port = await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        await self._stop.wait()
        await self.server.stop(grace=5)


@pytest.fixture
def make_server() -> Iterator[Callable[..., ServerThread]]:
    """Start servers on given repositories (``make_server(repo, **config)``,
    ``interceptors=[...]`` for the gRPC server, ``tracing=`` for InferdServer);
    all are stopped when the test ends."""
    started: list[ServerThread] = []

    def make(
        repository: Path, interceptors: Sequence[Any] = (), *, tracing: Any = None, **options: Any
    ) -> ServerThread:
        options.setdefault("grpc_port", 0)
        options.setdefault("allow_unauthenticated_admin", True)  # see INFERD_ALLOW_... above
        config = ServerConfig(model_repository=repository, **options)
        thread = ServerThread(config, interceptors, tracing=tracing).start()
        started.append(thread)
        return thread

    yield make
    for thread in started:
        thread.stop()


@pytest.fixture(scope="session")
def demo_server(demo_repository: Path) -> Iterator[ServerThread]:
    """One server on the demo models, shared by the session's read-only tests."""
    config = ServerConfig(
        model_repository=demo_repository, grpc_port=0, allow_unauthenticated_admin=True
    )
    thread = ServerThread(config).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def server_address(demo_server: ServerThread) -> str:
    return demo_server.address


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's OTEL_* (and multiprocess metrics) settings must not leak
    into tests: servers built here trace or export only when a test asks."""
    import os

    for key in list(os.environ):
        if key.startswith("OTEL_") or key == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(key)


@pytest.fixture
def make_tracing() -> Iterator[Callable[..., Any]]:
    """``make_tracing(max_links=128, sampler=None)`` -> ``(Tracing, exporter)``:
    tracing whose spans land in an in-memory exporter as they end, for
    ``make_server(repo, tracing=...)``."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from inferd.server.telemetry.tracing import Tracing

    providers: list[TracerProvider] = []

    def make(max_links: int = 128, sampler: Any = None) -> tuple[Tracing, InMemorySpanExporter]:
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
