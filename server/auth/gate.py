"""Who may call what: one decision for gRPC and HTTP alike.

Credentials, in order: a bearer token or JWT (``authorization`` metadata),
then, with a roles file for client certificates, the mutual-TLS certificate.
With no way to authenticate configured at all, nobody is known, so the
control plane (every method that needs ``admin``: model load and unload,
the ``inferd.admin.v1`` service) is refused unless the operator allowed it
(``allow_unauthenticated_admin``); everything else is open, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from inferd.server.auth.authenticator import Authenticator
from inferd.server.auth.certificate_roles import CertificateRoles, Identity
from inferd.server.auth.policy import AUTHENTICATED, PUBLIC, ROLE_ADMIN, MethodPolicy
from inferd.server.errors import PermissionDenied, Unauthenticated
from inferd.server.identity import ANONYMOUS, Principal

Metadata = Iterable[tuple[str, str | bytes]] | None
#: The caller's certificate identities, asked for only when they decide.
Peer = Callable[[], list[Identity]]

ALLOW_FLAG = "--allow-unauthenticated-admin"

log = logging.getLogger("inferd.app")


def short(method: str) -> str:
    return method.rsplit("/", 1)[-1] or method


class AuthGate:
    def __init__(
        self,
        authenticator: Authenticator | None,
        certificate_roles: CertificateRoles | None,
        policy: MethodPolicy,
        *,
        allow_unauthenticated_admin: bool = False,
    ) -> None:
        self.authenticator = authenticator
        self.certificate_roles = certificate_roles
        self.policy = policy
        self.allow_unauthenticated_admin = allow_unauthenticated_admin

    @property
    def configured(self) -> bool:
        """Some way to authenticate a caller is configured."""
        return self.authenticator is not None or self.certificate_roles is not None

    @property
    def open_admin(self) -> bool:
        """The control plane is open to every caller (nothing authenticates, and allowed)."""
        return not self.configured and self.allow_unauthenticated_admin

    def log_control_plane(self) -> None:
        """Say at start-up who may load and unload models: the operator must know."""
        if self.configured:
            return
        if self.allow_unauthenticated_admin:
            log.warning(
                "no authentication configured and %s: every caller may load and unload "
                "models and use the admin service",
                ALLOW_FLAG,
            )
        else:
            log.info(
                "no authentication configured: model load/unload and the admin service are "
                "refused (configure tokens, JWT keys or client-certificate roles, or pass %s)",
                ALLOW_FLAG,
            )

    def admit(self, method: str, metadata: Metadata, peer: Peer) -> Principal:
        """The caller's principal, or InferdError: UNAUTHENTICATED or PERMISSION_DENIED."""
        required = self.policy.required(method)
        if required == PUBLIC:
            return ANONYMOUS
        if not self.configured:
            if required == ROLE_ADMIN and not self.allow_unauthenticated_admin:
                raise PermissionDenied(
                    f"{short(method)} changes the server, and this server authenticates no "
                    "one: its operator must configure tokens, JWT keys or client-certificate "
                    f"roles (docs/security.md), or start it with {ALLOW_FLAG}"
                )
            return _certificate_name(peer()) or ANONYMOUS
        principal = self._authenticate(metadata, peer)
        if required != AUTHENTICATED and required not in principal.roles:
            raise PermissionDenied(
                f"'{principal.name}' lacks the '{required}' role that {short(method)} needs"
            )
        return principal

    def _authenticate(self, metadata: Metadata, peer: Peer) -> Principal:
        if self.authenticator is not None and (
            self.certificate_roles is None or any(k == "authorization" for k, _ in metadata or ())
        ):
            return self.authenticator.authenticate(metadata)
        assert self.certificate_roles is not None
        identities = peer()
        if not identities:
            raise Unauthenticated(
                "missing credentials: send a client certificate"
                + (" or metadata 'authorization: Bearer <token>'" if self.authenticator else "")
            )
        return self.certificate_roles.principal(identities)


def _certificate_name(identities: list[Identity]) -> Principal | None:
    """Without roles configured: the certificate's common name, no roles."""
    for kind, value in identities:
        if kind == "cn":
            return Principal(value)
    return None
