"""The gRPC (``grpc.aio``) server interceptor: authenticates each call,
checks the method's role (``auth.gate``) and sets ``server.identity``'s
principal for the handler."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from inferd.server.auth.certificate_roles import Identity, grpc_identities
from inferd.server.auth.gate import AuthGate
from inferd.server.errors import InferdError
from inferd.server.grpc.call_limit import refusal
from inferd.server.grpc.rpc import GRPC_CODES
from inferd.server.identity import Principal, reset_principal, set_principal

Admit = Callable[[grpc.aio.ServicerContext[Any, Any]], Principal]


if TYPE_CHECKING:  # grpc-stubs makes it generic; at run time it is not
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class _PeerNeeded(Exception):
    """The decision needs the caller's certificate, known only in the handler."""


def _no_peer() -> list[Identity]:
    raise _PeerNeeded


def _no_certificate() -> list[Identity]:
    return []


class AuthInterceptor(_ServerInterceptor):
    """Decides each call (``auth.gate``) from its metadata, before gRPC reads
    the request: a refused caller costs no body read or parse. Only a
    decision that needs the client certificate (mutual TLS, which gRPC shows
    the handler only) is taken in the handler, after the read; such a caller
    holds a certificate from the client CA."""

    def __init__(self, gate: AuthGate, *, peer_certificates: bool = False) -> None:
        self.gate = gate
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
        return self.decide(handler, handler_call_details)[0]

    def decide(
        self,
        handler: grpc.RpcMethodHandler[Any, Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> tuple[grpc.RpcMethodHandler[Any, Any], bool]:
        """The handler to run for this call, and whether it is a refusal. Runs
        on the call's own task, which then runs the handler."""
        method = handler_call_details.method
        peer = _no_peer if self.peer_certificates else _no_certificate
        try:
            principal = self.gate.admit(method, handler_call_details.invocation_metadata, peer)
        except _PeerNeeded:
            return _wrap(handler, functools.partial(self._admit, method)), False
        except InferdError as exc:
            return refusal(GRPC_CODES[exc.code], exc.message), True
        set_principal(principal)
        return handler, False

    def _admit(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        return self.gate.admit(
            method, context.invocation_metadata(), lambda: grpc_identities(context.auth_context())
        )


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
