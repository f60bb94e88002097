"""JWT verification against the keys file: signature, ``exp``/``iss``/``aud``/
``sub``, and the caller's roles from the ``roles`` (or ``scope``) claim.
Verified tokens are remembered until they expire."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jwt

from inferd.server.auth.jwt_keys import parse_jwt_keys
from inferd.server.auth.watched_file import AuthConfigError, WatchedFile
from inferd.server.errors import Unauthenticated
from inferd.server.identity import Principal

log = logging.getLogger("inferd.auth")

#: Verified JWTs remembered (until they expire) so a stream of calls with one
#: token verifies its signature once.
_JWT_CACHE = 1024


def _claim_roles(claims: Mapping[str, Any]) -> frozenset[str]:
    roles = claims.get("roles")
    if isinstance(roles, list):
        return frozenset(r for r in roles if isinstance(r, str) and r)
    if isinstance(roles, str):
        return frozenset(roles.split())
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    return frozenset()


class JwtVerifier:
    def __init__(
        self, keys_path: Path, *, issuer: str, audience: str, leeway_s: float = 30.0
    ) -> None:
        if not issuer or not audience:
            raise AuthConfigError("JWT verification needs both an issuer and an audience")
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self._file = WatchedFile(keys_path)
        self._keys = parse_jwt_keys(self._file.read(), str(keys_path))
        self._cache: collections.OrderedDict[str, tuple[Principal, float]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def reload(self, *, force: bool = False) -> None:
        if not self._file.changed(force=force):
            return
        try:
            self._keys = parse_jwt_keys(self._file.read(), str(self._file.path))
        except AuthConfigError as exc:
            log.error("JWT keys not reloaded, the previous keys stay in force: %s", exc)
            return
        with self._lock:
            self._cache.clear()
        log.info("JWT keys reloaded: %d key(s)", len(self._keys))

    def verify(self, token: str) -> Principal:
        self.reload()
        now = time.time()
        with self._lock:
            hit = self._cache.get(token)
            if hit is not None and hit[1] > now:
                self._cache.move_to_end(token)
                return hit[0]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        kid = header.get("kid")
        keys = [
            k
            for k in self._keys
            if isinstance(alg, str)
            and alg in k.algorithms
            and (kid is None or k.kid is None or k.kid == kid)
        ]
        if not keys:
            raise Unauthenticated("JWT algorithm or key id is not accepted by this server")
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[str(alg)],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway_s,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                raise Unauthenticated("JWT has expired") from None
            except jwt.ImmatureSignatureError:
                raise Unauthenticated("JWT is not valid yet (nbf/iat in the future)") from None
            except jwt.InvalidAudienceError:
                raise Unauthenticated("JWT audience is not accepted by this server") from None
            except jwt.InvalidIssuerError:
                raise Unauthenticated("JWT issuer is not accepted by this server") from None
            except jwt.MissingRequiredClaimError as exc:
                raise Unauthenticated(f"JWT lacks the required '{exc.claim}' claim") from None
            except jwt.PyJWTError:
                raise Unauthenticated("JWT is malformed or its claims are invalid") from None
        if claims is None:
            raise Unauthenticated("JWT signature is not valid")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("JWT 'sub' claim must name the caller")
        principal = Principal(subject, _claim_roles(claims))
        expires = float(claims["exp"])
        with self._lock:
            self._cache[token] = (principal, expires)
            if len(self._cache) > _JWT_CACHE:
                self._cache.popitem(last=False)
        return principal
