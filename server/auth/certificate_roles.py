"""Roles for client certificates (mutual TLS): the roles file (``--tls-client-roles-file``).

A JSON object that maps a certificate identity to its holder::

    {"uri:spiffe://example.org/ns/ci/sa/deployer": {"roles": ["infer", "admin"]},
     "dns:batch.example.org":                      {"name": "batch", "roles": ["infer"]},
     "cn:alice":                                   {"roles": ["infer"]}}

A certificate's identities are tried in that order: its URI subject
alternative names, its DNS names, then its subject common name; the first
one in the file gives the roles (``name`` defaults to the identity). A
certificate from the client CA that matches no entry is authenticated but has
no roles. The file is re-read when it changes and on SIGHUP, like the tokens
file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

from inferd.server.auth.watched_file import AuthConfigError, WatchedFile
from inferd.server.identity import Principal

log = logging.getLogger("inferd.auth")

#: Identity kinds, in the order they are tried.
KINDS = ("uri", "dns", "cn")

#: A certificate identity: (kind, value), e.g. ("uri", "spiffe://example.org/ci").
Identity = tuple[str, str]


def grpc_identities(auth_context: Mapping[str, Iterable[bytes]]) -> list[Identity]:
    """A gRPC call's peer identities (``context.auth_context()``), in lookup order."""
    keys = {"uri": "peer_uri", "dns": "peer_dns", "cn": "x509_common_name"}
    return [
        (kind, value.decode("utf-8", "replace"))
        for kind in KINDS
        for value in auth_context.get(keys[kind]) or ()
    ]


def peercert_identities(cert: Mapping[str, object] | None) -> list[Identity]:
    """The identities of ``ssl.SSLSocket.getpeercert()``'s dict, in lookup order."""
    if not cert:
        return []
    found: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for entry in cert.get("subjectAltName") or ():  # type: ignore[attr-defined]
        kind, value = entry
        if kind == "URI":
            found["uri"].append(str(value))
        elif kind == "DNS":
            found["dns"].append(str(value))
    for rdn in cert.get("subject") or ():  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                found["cn"].append(str(value))
    return [(kind, value) for kind in KINDS for value in found[kind]]


def parse_certificate_roles(text: str, source: str = "roles file") -> dict[Identity, Principal]:
    """The roles file's JSON -> {(kind, value): principal}."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthConfigError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise AuthConfigError(f"{source}: expected an object mapping identities to holders")
    out: dict[Identity, Principal] = {}
    for i, (key, holder) in enumerate(data.items()):
        where = f"{source}: entry {i + 1}"
        kind, _, value = key.partition(":")
        if kind not in KINDS or not value:
            raise AuthConfigError(f"{where}: the key must be 'uri:...', 'dns:...' or 'cn:...'")
        if not isinstance(holder, dict):
            raise AuthConfigError(f"{where}: expected {{'roles': [...]}}")
        roles = holder.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
            raise AuthConfigError(f"{where}: 'roles' must be a list of role names")
        name = holder.get("name", value)
        if not isinstance(name, str) or not name:
            raise AuthConfigError(f"{where}: 'name' must be a non-empty string")
        out[(kind, value)] = Principal(name, frozenset(roles))
    return out


class CertificateRoles:
    """The roles file, re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self._file = WatchedFile(path)
        self._roles = parse_certificate_roles(self._file.read(), str(path))

    def reload(self, *, force: bool = False) -> None:
        if not self._file.changed(force=force):
            return
        try:
            self._roles = parse_certificate_roles(self._file.read(), str(self._file.path))
        except AuthConfigError as exc:
            log.error("roles file not reloaded, the previous roles stay in force: %s", exc)
            return
        log.info("client certificate roles file reloaded: %d identities", len(self._roles))

    def principal(self, identities: list[Identity]) -> Principal:
        """The first identity in the file, or one without roles named after the certificate."""
        self.reload()
        for identity in identities:
            found = self._roles.get(identity)
            if found is not None:
                return found
        return Principal(identities[0][1])
