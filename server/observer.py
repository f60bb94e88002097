"""Hooks the serving layers call so telemetry can watch them.

The scheduler and the model manager know nothing about OpenTelemetry,
Prometheus or gRPC: they call these methods, and ``server.telemetry``
implements them. The base classes do nothing, so a server without telemetry
pays one no-op call per event. Hooks run on the event loop thread and must
not block or raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from inferd.server.request import InferRequest
    from inferd.server.scheduler.records import BatchRecord


class Queued(Protocol):
    """A request as the scheduler queued it."""

    @property
    def request(self) -> InferRequest: ...

    #: ``time.monotonic()`` at admission.
    @property
    def arrival(self) -> float: ...

    #: ``time.monotonic()`` by which the answer is due (inf: none).
    @property
    def deadline(self) -> float: ...

    #: Engine seconds admission predicted until this request's batch would
    #: finish, before its margin (NaN: nothing was predicted: no deadline, the
    #: static policy).
    @property
    def predicted(self) -> float: ...


class VersionObserver:
    """Events about one model version. Times are ``time.monotonic()`` seconds."""

    __slots__ = ()

    # -- request level (the data plane) ----------------------------------------------

    def on_request(self, code: str, seconds: float, rows: int, protocol: str) -> None:
        """One inference request answered with gRPC status ``code`` (its name,
        e.g. ``"OK"``) after ``seconds`` in the server; ``rows`` counts only on OK.
        ``protocol`` is the front end that took it (``"grpc"`` or ``"http"``)."""

    def on_cache(self, hit: bool) -> None:
        """A response cache lookup for this version (only versions with a cache)."""

    def on_answer(self, request: InferRequest, outputs: dict[str, np.ndarray]) -> None:
        """A request was answered with ``outputs`` (monitoring samples some);
        also called for a shadow challenger's answers, which reach nobody."""

    # -- scheduler ---------------------------------------------------------------------

    def on_pending(self, delta: int) -> None:
        """Requests admitted and not yet answered changed by ``delta``."""

    def on_refused(self, reason: str) -> None:
        """A request was refused before queueing (``deadline``,
        ``batch_deadline``, ``overtakes``, ``queue_full``, ``unloading``,
        ``draining``, ``expired_on_arrival``)."""

    def on_expired(self, entry: Queued, reason: str, now: float) -> None:
        """A queued request was answered DEADLINE_EXCEEDED without running
        (``deadline_passed`` or ``cannot_finish``)."""

    def on_cancelled(self, entry: Queued, now: float) -> None:
        """The caller gave up on a request still in the queue."""

    def on_dispatch(
        self, entries: Sequence[Queued], reason: str, slack: float, now: float
    ) -> object:
        """A batch leaves the queue; the value returned comes back with the
        batch's outcome (``on_executed`` / ``on_failed``)."""
        return None

    def on_executed(self, token: object, entries: Sequence[Queued], record: BatchRecord) -> None:
        """The batch ran; ``record`` says how (and how many answers were late)."""

    def on_failed(
        self, token: object, entries: Sequence[Queued], error: BaseException, now: float
    ) -> None:
        """The batch's execution failed; every request in it gets ``error``."""


NULL_VERSION_OBSERVER = VersionObserver()


class ServerObserver:
    """Server-wide events; hands out one ``VersionObserver`` per model version."""

    def version(self, name: str, version: int, device: str = "cpu") -> VersionObserver:
        """``device``: where the version's engine runs, ``"cpu"`` or ``"gpu"``."""
        return NULL_VERSION_OBSERVER

    def unrouted(self, name: str) -> VersionObserver:
        """For a request that never reached a version (unknown model or version,
        model not ready). ``name`` is untrusted: use it only if it is known."""
        return NULL_VERSION_OBSERVER

    def on_model_state(self, name: str, ready_versions: int) -> None:
        """``name`` now serves ``ready_versions`` versions (0: not ready)."""

    def on_load_failed(self, name: str) -> None:
        """A load of ``name`` (or of one of its versions) failed."""

    def on_cache_change(self, size_bytes: int, entries: int, evicted: int) -> None:
        """The response cache now holds ``entries`` answers in ``size_bytes``;
        ``evicted`` were pushed out (least recently used) to make room."""

    def on_shadow(self, name: str, version: int, outcome: str) -> None:
        """A request mirrored to challenger ``version`` of ``name`` ended:
        ``agree`` or ``disagree`` (its outputs against the champion's answer),
        ``error`` (the challenger failed it), ``dropped`` (it never ran: too
        many mirrored in flight, or the challenger was unloading)."""

    def on_guardrail_trip(self, name: str, version: int) -> None:
        """A guardrail stopped challenger ``version`` of ``name`` on this replica."""
