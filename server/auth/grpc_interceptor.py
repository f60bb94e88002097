"""The gRPC (``grpc.aio``) server interceptor: authenticates each call,
checks the method's role (``auth.policy``) and sets ``server.identity``'s
principal while the handler runs."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from inferd.server.auth.authenticator import Authenticator
from inferd.server.auth.policy import AUTHENTICATED, PUBLIC, MethodPolicy
from inferd.server.errors import InferdError, PermissionDenied
from inferd.server.grpc.rpc import GRPC_CODES
from inferd.server.identity import ANONYMOUS, Principal, reset_principal, set_principal


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1] or method


Admit = Callable[[grpc.aio.ServicerContext[Any, Any]], Principal]


if TYPE_CHECKING:  # grpc-stubs makes it generic; at run time it is not
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class AuthInterceptor(_ServerInterceptor):
    """Authenticates each call, checks the method's role, and sets the
    principal (``server.identity``) while the handler runs.

    ``authenticator`` None: nothing is checked (no auth configured); with
    ``peer_certificates`` (mutual TLS) the principal is the client
    certificate's common name, without roles."""

    def __init__(
        self,
        authenticator: Authenticator | None,
        policy: MethodPolicy | None = None,
        *,
        peer_certificates: bool = False,
    ) -> None:
        self.authenticator = authenticator
        self.policy = policy or MethodPolicy()
        self.peer_certificates = peer_certificates

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return _wrap(handler, functools.partial(self._admit, handler_call_details.method))

    def _admit(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        if self.authenticator is None:
            return self._peer(context) or ANONYMOUS
        required = self.policy.required(method)
        if required == PUBLIC:
            return ANONYMOUS
        principal = self.authenticator.authenticate(context.invocation_metadata())
        if required != AUTHENTICATED and required not in principal.roles:
            raise PermissionDenied(
                f"'{principal.name}' lacks the '{required}' role that {_short(method)} needs"
            )
        return principal

    def _peer(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal | None:
        if not self.peer_certificates:
            return None
        names = list(context.auth_context().get("x509_common_name") or ())
        if not names:
            return None
        return Principal(names[0].decode("utf-8", "replace"))


async def _enter(admit: Admit, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
    try:
        principal = admit(context)
    except InferdError as exc:
        await context.abort(GRPC_CODES[exc.code], exc.message)
    return set_principal(principal)


def _leave(token: Any) -> None:
    # ValueError: finalised in another context (an abandoned stream).
    with contextlib.suppress(ValueError):
        reset_principal(token)


def _wrap_behavior(behavior: Callable[..., Any], admit: Admit) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            token = await _enter(admit, context)
            try:
                async for item in behavior(request, context):
                    yield item
            finally:
                _leave(token)

        return stream

    async def call(request: Any, context: Any) -> Any:
        token = await _enter(admit, context)
        try:
            result = behavior(request, context)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            _leave(token)

    return call


def _wrap(
    handler: grpc.RpcMethodHandler[Any, Any], admit: Admit
) -> grpc.RpcMethodHandler[Any, Any]:
    kinds: list[tuple[str, Callable[..., grpc.RpcMethodHandler[Any, Any]]]] = [
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ]
    for attribute, make in kinds:
        behavior = getattr(handler, attribute)
        if behavior is not None:
            return make(
                _wrap_behavior(behavior, admit),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
