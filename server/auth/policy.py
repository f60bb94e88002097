"""Authorization policy: the role each gRPC method needs.

A method missing from the table needs ``admin`` (fail closed), so a newly
registered service is admin-only until it registers its own entries.
"""

from __future__ import annotations

from collections.abc import Mapping

ROLE_INFER = "infer"
ROLE_ADMIN = "admin"
#: Needs no credential.
PUBLIC = "<public>"
#: Needs a valid credential, whatever its roles.
AUTHENTICATED = "<authenticated>"

_V2 = "/inference.GRPCInferenceService/"

#: The default table. Health probes need nothing; reading metadata needs a
#: valid credential; inference needs ``infer``; changing the server needs ``admin``.
DEFAULT_METHOD_ROLES: dict[str, str] = {
    "/grpc.health.v1.Health/Check": PUBLIC,
    "/grpc.health.v1.Health/Watch": PUBLIC,
    _V2 + "ServerLive": PUBLIC,
    _V2 + "ServerReady": PUBLIC,
    _V2 + "ModelReady": AUTHENTICATED,
    _V2 + "ServerMetadata": AUTHENTICATED,
    _V2 + "ModelMetadata": AUTHENTICATED,
    _V2 + "ModelConfig": AUTHENTICATED,
    _V2 + "ModelStatistics": AUTHENTICATED,
    _V2 + "RepositoryIndex": AUTHENTICATED,
    _V2 + "ModelInfer": ROLE_INFER,
    _V2 + "ModelStreamInfer": ROLE_INFER,
    _V2 + "RepositoryModelLoad": ROLE_ADMIN,
    _V2 + "RepositoryModelUnload": ROLE_ADMIN,
    _V2 + "SystemSharedMemoryStatus": ROLE_ADMIN,
    _V2 + "SystemSharedMemoryRegister": ROLE_ADMIN,
    _V2 + "SystemSharedMemoryUnregister": ROLE_ADMIN,
    _V2 + "CudaSharedMemoryStatus": ROLE_ADMIN,
    _V2 + "CudaSharedMemoryRegister": ROLE_ADMIN,
    _V2 + "CudaSharedMemoryUnregister": ROLE_ADMIN,
    _V2 + "TraceSetting": ROLE_ADMIN,
    _V2 + "LogSettings": ROLE_ADMIN,
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": AUTHENTICATED,
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": AUTHENTICATED,
}


class MethodPolicy:
    """Required role per full method name (``/package.Service/Method``)."""

    def __init__(self, roles: Mapping[str, str] | None = None) -> None:
        self._roles = dict(DEFAULT_METHOD_ROLES if roles is None else roles)

    def register(self, roles: Mapping[str, str]) -> None:
        """Add or replace entries, e.g. an admin service's methods:
        ``policy.register({"/inferd.admin.v1.Admin/Drain": ROLE_ADMIN})``."""
        self._roles.update(roles)

    def required(self, method: str) -> str:
        return self._roles.get(method, ROLE_ADMIN)

    def items(self) -> list[tuple[str, str]]:
        return sorted(self._roles.items())
