"""The one place domain errors become HTTP statuses and ``{"error": ...}`` bodies.

Statuses follow the canonical gRPC-to-HTTP mapping (google.rpc.Code), so a
caller sees the same failure under either protocol: 400 for a bad request,
404 for an unknown model, 429 over a limit, 503 while unavailable, 504 past
the deadline, 401/403 for credentials and roles, 500 for the server's own faults.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from inferd.server.errors import InferdError, Status, status_of

log = logging.getLogger("inferd.http")

HTTP_STATUS: dict[Status, int] = {
    Status.OK: 200,
    Status.CANCELLED: 499,
    Status.UNKNOWN: 500,
    Status.INVALID_ARGUMENT: 400,
    Status.DEADLINE_EXCEEDED: 504,
    Status.NOT_FOUND: 404,
    Status.PERMISSION_DENIED: 403,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.FAILED_PRECONDITION: 400,
    Status.UNIMPLEMENTED: 501,
    Status.INTERNAL: 500,
    Status.UNAVAILABLE: 503,
    Status.UNAUTHENTICATED: 401,
}


def error_response(status: int, message: str) -> web.Response:
    response = web.Response(
        status=status,
        body=orjson.dumps({"error": message}),
        content_type="application/json",
    )
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def response_for(exc: BaseException) -> web.Response:
    """The answer for an exception a handler raised: a domain error's own
    status and message, anything else a bare 500 (its text may hold internals)."""
    if not isinstance(exc, InferdError):
        log.error("unexpected error in an HTTP handler", exc_info=exc, extra={"event": "error"})
    status, message = status_of(exc)
    return error_response(HTTP_STATUS[status], message)
