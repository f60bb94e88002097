"""Domain errors, with a transport-neutral status each.

Layers below the front ends raise these; each front end maps ``Status`` to
its own codes (the gRPC one in ``server.grpc.rpc``). Messages are written for
the remote caller: they name the field or model at fault and never carry
paths, internals or stack traces.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """The canonical status codes (gRPC's, which Triton's HTTP mapping
    shares); metrics and logs use their names."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class InferdError(Exception):
    """Base for errors a caller may see. ``code`` is its status."""

    code = Status.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(InferdError):
    code = Status.INVALID_ARGUMENT


class NotFound(InferdError):
    code = Status.NOT_FOUND


class Unavailable(InferdError):
    """Temporarily cannot serve (model loading/unloading, queue full, shutting down)."""

    code = Status.UNAVAILABLE


class DeadlineExceeded(InferdError):
    code = Status.DEADLINE_EXCEEDED


class ResourceExhausted(InferdError):
    code = Status.RESOURCE_EXHAUSTED


class Cancelled(InferdError):
    code = Status.CANCELLED


class FailedPrecondition(InferdError):
    """The request is valid but the server's state does not allow it now
    (a promotion gate, a model control mode, nothing to roll back)."""

    code = Status.FAILED_PRECONDITION


class Unimplemented(InferdError):
    """An RPC of the protocol this server does not offer."""

    code = Status.UNIMPLEMENTED


class Unauthenticated(InferdError):
    """No credential, or one that is wrong, malformed or expired."""

    code = Status.UNAUTHENTICATED


class PermissionDenied(InferdError):
    """A valid credential whose roles do not allow the call."""

    code = Status.PERMISSION_DENIED


class EngineFailure(InferdError):
    """The engine failed on this request's batch; other requests are unaffected."""

    code = Status.INTERNAL


def status_of(exc: BaseException) -> tuple[Status, str]:
    """The status and message to send for ``exc``. Unknown exceptions become
    INTERNAL with a generic message: their text may hold internals."""
    if isinstance(exc, InferdError):
        return exc.code, exc.message
    return Status.INTERNAL, "internal error while serving the request"
