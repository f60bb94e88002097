"""The auth decision and the call limit as one interceptor (server.grpc.call_gate):
a caller refused by auth takes no call slot; one let in takes one until its task ends."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import grpc

from inferd.server.admission_limits import AdmissionLimits
from inferd.server.auth import AuthInterceptor, MethodPolicy
from inferd.server.auth.gate import AuthGate
from inferd.server.grpc.call_gate import CallGate
from inferd.server.grpc.call_limit import CallLimit
from inferd.server.request_bytes import RequestBytes

LOAD = "/inference.GRPCInferenceService/RepositoryModelLoad"  # needs the admin role
INFER = "/inference.GRPCInferenceService/ModelInfer"


async def answer(request: Any, context: Any) -> None:
    return None


HANDLER = grpc.unary_unary_rpc_method_handler(answer)


def details(method: str) -> Any:
    return SimpleNamespace(method=method, invocation_metadata=())


def gate(limits: AdmissionLimits) -> CallGate:
    # Nothing authenticates and unauthenticated admin is not allowed: model
    # load is refused, inference is open.
    auth = AuthInterceptor(AuthGate(None, None, MethodPolicy()))
    return CallGate(auth, CallLimit(limits))


async def found(_details: Any) -> Any:
    return HANDLER


def test_a_caller_refused_by_auth_takes_no_call_slot() -> None:
    limits = AdmissionLimits(1, RequestBytes(1 << 20))

    async def call() -> tuple[Any, int]:
        handler = await gate(limits).intercept_service(found, details(LOAD))
        return handler, limits.active  # still on the call's task

    handler, active = asyncio.run(call())
    assert handler is not HANDLER  # a refusal, PERMISSION_DENIED
    assert active == 0
    assert limits.active == 0


def test_a_caller_let_in_holds_a_slot_until_its_task_ends() -> None:
    limits = AdmissionLimits(1, RequestBytes(1 << 20))

    async def main() -> None:
        async def call(method: str) -> tuple[Any, int]:
            return await gate(limits).intercept_service(found, details(method)), limits.active

        first = asyncio.create_task(call(INFER))
        handler, active = await first
        assert handler is HANDLER and active == 1
        await asyncio.sleep(0)  # the task's done callbacks run
        assert limits.active == 0
        # At the limit, the next caller gets RESOURCE_EXHAUSTED, not the handler.
        assert limits.admit() is None
        refused, _ = await asyncio.create_task(call(INFER))
        assert refused is not HANDLER
        limits.release()

    asyncio.run(main())


def test_without_auth_only_the_limit_decides() -> None:
    limits = AdmissionLimits(None, RequestBytes(1 << 20))
    gate = CallGate(None, CallLimit(limits))
    handler = asyncio.run(gate.intercept_service(found, details(LOAD)))
    assert handler is HANDLER
