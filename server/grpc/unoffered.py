"""The ``GRPCInferenceService`` RPCs inferd does not offer: each answers
UNIMPLEMENTED naming what is missing."""

from __future__ import annotations

from typing import Any

from inferd.server.errors import Unimplemented
from inferd.server.grpc.rpc import rpc


def _unimplemented(what: str) -> Unimplemented:
    return Unimplemented(f"{what} is not supported by inferd")


class UnofferedRpcs:
    @rpc
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        raise _unimplemented("system shared memory")

    @rpc
    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        raise _unimplemented("system shared memory")

    @rpc
    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        raise _unimplemented("system shared memory")

    @rpc
    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        raise _unimplemented("CUDA shared memory")

    @rpc
    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        raise _unimplemented("CUDA shared memory")

    @rpc
    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        raise _unimplemented("CUDA shared memory")

    @rpc
    async def TraceSetting(self, request: Any, context: Any) -> Any:
        raise _unimplemented("TraceSetting")

    @rpc
    async def LogSettings(self, request: Any, context: Any) -> Any:
        raise _unimplemented("LogSettings")
