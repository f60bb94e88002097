"""Domain errors and the one place that maps them to gRPC status codes.

Layers below the servicer raise these; the servicer turns them into a status
with ``status_of``. Messages are written for the remote caller: they name the
field or model at fault and never carry paths, internals or stack traces.
"""

from __future__ import annotations

import grpc


class InferdError(Exception):
    """Base for errors a caller may see. ``code`` is the gRPC status."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(InferdError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(InferdError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(InferdError):
    """Temporarily cannot serve (model loading/unloading, queue full, shutting down)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(InferdError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(InferdError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Cancelled(InferdError):
    code = grpc.StatusCode.CANCELLED


class FailedPrecondition(InferdError):
    """The request is valid but the server's state does not allow it now
    (a promotion gate, a model control mode, nothing to roll back)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unimplemented(InferdError):
    """An RPC of the protocol this server does not offer."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Unauthenticated(InferdError):
    """No credential, or one that is wrong, malformed or expired."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(InferdError):
    """A valid credential whose roles do not allow the call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class EngineFailure(InferdError):
    """The engine failed on this request's batch; other requests are unaffected."""

    code = grpc.StatusCode.INTERNAL


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and message to send for ``exc``. Unknown exceptions become
    INTERNAL with a generic message: their text may hold internals."""
    if isinstance(exc, InferdError):
        return exc.code, exc.message
    return grpc.StatusCode.INTERNAL, "internal error while serving the request"
