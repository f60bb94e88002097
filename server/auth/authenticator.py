"""From a call's ``authorization: Bearer <token>`` metadata to a principal:
static tokens first, then JWTs."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable

from inferd.server.auth.bearer_tokens import TokenStore
from inferd.server.auth.jwt_verifier import JwtVerifier
from inferd.server.errors import Unauthenticated
from inferd.server.identity import Principal

#: Longest token accepted; a JWT with a few roles is well under 2 KiB.
MAX_TOKEN_CHARS = 8192


def _looks_like_jwt(token: str) -> bool:
    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
    except (binascii.Error, ValueError):
        return False
    return True


class Authenticator:
    """Turns a call's metadata into a principal, or raises Unauthenticated."""

    def __init__(self, tokens: TokenStore | None = None, jwts: JwtVerifier | None = None) -> None:
        if tokens is None and jwts is None:
            raise ValueError("an Authenticator needs a tokens file or JWT keys")
        self.tokens = tokens
        self.jwts = jwts

    def reload(self) -> None:
        """Re-read the tokens and keys files now (SIGHUP)."""
        if self.tokens is not None:
            self.tokens.reload(force=True)
        if self.jwts is not None:
            self.jwts.reload(force=True)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Principal:
        values = [v for k, v in metadata or () if k == "authorization"]
        if not values:
            raise Unauthenticated(
                "missing credentials: send metadata 'authorization: Bearer <token>'"
            )
        if len(values) > 1:
            raise Unauthenticated("more than one 'authorization' metadata entry")
        value = values[0]
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("'authorization' metadata must be 'Bearer <token>'")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(f"bearer token is longer than {MAX_TOKEN_CHARS} characters")
        if self.tokens is not None:
            principal = self.tokens.lookup(token)
            if principal is not None:
                return principal
        if self.jwts is not None and _looks_like_jwt(token):
            return self.jwts.verify(token)
        raise Unauthenticated("bearer token is not recognised")
