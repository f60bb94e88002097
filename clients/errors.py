"""The one exception type the inferd clients raise for server-side failures."""

from __future__ import annotations

import grpc


class InferenceServerError(Exception):
    """A call failed: the gRPC status code and the server's message.

    ``str(err)`` reads like ``"NOT_FOUND: model 'x' is not known"``.
    ``request_id`` is set for errors reported inside an inference stream,
    where the server answers a single request without ending the stream.
    """

    def __init__(self, code: grpc.StatusCode, details: str, *, request_id: str = "") -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"

    def __repr__(self) -> str:
        return f"InferenceServerError({self.code.name}, {self.details!r})"


def from_rpc_error(error: grpc.RpcError) -> InferenceServerError:
    """Convert a failed call (sync or ``grpc.aio``) into an InferenceServerError."""
    # A bare grpc.RpcError (no call attached) has neither code() nor details();
    # the sync client's _InactiveRpcError and aio's AioRpcError have both.
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return InferenceServerError(code, details or str(error) or code.name)
