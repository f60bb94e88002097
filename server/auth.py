"""Authentication and authorization, in one ``grpc.aio`` server interceptor.

Credentials travel as gRPC metadata ``authorization: Bearer <token>``. A token
is either

- a static token from the tokens file (``--auth-tokens``), a JSON object that
  maps each token, or ``"sha256:<hex digest>"`` of it, to its holder::

      {"sha256:9f86d081884c7d65...": {"name": "ci", "roles": ["infer"]},
       "a-long-random-token":       {"name": "ops", "roles": ["infer", "admin"]}}

  Only digests are kept in memory; a presented token is hashed and looked up.
- a JWT (``--jwt-keys``, ``--jwt-issuer``, ``--jwt-audience``), signed with
  an asymmetric key from the keys file (PEM public keys or certificates, or a
  JWKS ``{"keys": [...]}``; a ``kid`` header picks the key). ``exp``, ``iss``,
  ``aud`` and ``sub`` are required; ``sub`` names the caller, the ``roles``
  claim (a list, or the space-separated ``scope`` claim) gives the roles.
  HMAC and ``none`` are refused: the keys file holds public keys only.

Both files are re-read when they change (checked at most once a second) and
on SIGHUP; a file that fails to parse keeps the previous contents in force.

Authorization is a table keyed by full method name (``MethodPolicy``): each
method needs ``PUBLIC`` (no credential: health checks), ``AUTHENTICATED``
(any valid credential), or a role (``infer``, ``admin``). A method missing
from the table needs ``admin`` (fail closed), so a newly registered service
is admin-only until it registers its own entries. Roles are independent:
give a caller ``["infer", "admin"]`` for both. A model's ``allowed_roles``
config parameter further limits who may use it (checked by the data plane).

Failures: no, malformed, unknown, expired or badly signed credential ->
UNAUTHENTICATED; valid credential without the role -> PERMISSION_DENIED.
Messages say what is wrong with the credential, never why a key failed.
The interceptor sets ``server.identity``'s principal for the handler.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import functools
import hashlib
import inspect
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from inferd.server.errors import InferdError, PermissionDenied, Unauthenticated
from inferd.server.grpc.rpc import GRPC_CODES
from inferd.server.identity import ANONYMOUS, Principal, reset_principal, set_principal

log = logging.getLogger("inferd.auth")

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

#: Longest token accepted; a JWT with a few roles is well under 2 KiB.
MAX_TOKEN_CHARS = 8192
#: Verified JWTs remembered (until they expire) so a stream of calls with one
#: token verifies its signature once.
_JWT_CACHE = 1024


class AuthConfigError(Exception):
    """A tokens or keys file cannot be used; one line for the operator."""


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


# -- watched files ---------------------------------------------------------------------------


class _WatchedFile:
    """A file re-read when its mtime/size/inode change, checked at most every ``interval`` s."""

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path = path
        self._interval = interval
        self._checked = 0.0
        self._stamp: tuple[int, int, int] | None = None

    def stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self, *, force: bool = False) -> bool:
        """True (once) when the file changed since the last ``read``."""
        now = time.monotonic()
        if not force and now - self._checked < self._interval:
            return False
        self._checked = now
        return force or self.stamp() != self._stamp

    def read(self) -> str:
        stamp = self.stamp()
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthConfigError(f"cannot read {self.path}: {exc}") from None
        self._stamp = stamp
        return text


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _roles(value: object, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(r, str) and r for r in value):
        raise AuthConfigError(f"{where}: 'roles' must be a list of role names")
    return frozenset(value)


def parse_tokens(text: str, source: str = "tokens file") -> dict[bytes, Principal]:
    """The tokens file's JSON -> {sha256 digest: principal}."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuthConfigError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise AuthConfigError(f"{source}: expected an object mapping tokens to holders")
    out: dict[bytes, Principal] = {}
    for i, (key, holder) in enumerate(data.items()):
        where = f"{source}: entry {i + 1}"
        if not isinstance(holder, dict) or not isinstance(holder.get("name"), str):
            raise AuthConfigError(f"{where}: expected {{'name': ..., 'roles': [...]}}")
        principal = Principal(holder["name"], _roles(holder.get("roles", []), where))
        if key.startswith("sha256:"):
            try:
                digest = bytes.fromhex(key[len("sha256:") :])
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise AuthConfigError(f"{where}: 'sha256:' must be followed by 64 hex digits")
        else:
            if len(key) < 16:
                raise AuthConfigError(f"{where}: tokens must be at least 16 characters")
            digest = _digest(key)
        out[digest] = principal
    return out


class TokenStore:
    """Static bearer tokens from the tokens file."""

    def __init__(self, path: Path) -> None:
        self._file = _WatchedFile(path)
        self._tokens = parse_tokens(self._file.read(), str(path))

    def reload(self, *, force: bool = False) -> None:
        if not self._file.changed(force=force):
            return
        try:
            self._tokens = parse_tokens(self._file.read(), str(self._file.path))
        except AuthConfigError as exc:
            log.error("tokens file not reloaded, the previous tokens stay in force: %s", exc)
            return
        log.info("tokens file reloaded: %d token(s)", len(self._tokens))

    def lookup(self, token: str) -> Principal | None:
        self.reload()
        # A dict keyed by the digest: timing can only reveal digest bytes,
        # which do not help to forge a token.
        return self._tokens.get(_digest(token))


# -- JWT -------------------------------------------------------------------------------------

_PRIVATE_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True, slots=True)
class _Key:
    key: Any
    kid: str | None
    algorithms: frozenset[str]


def _algorithms(key: object) -> frozenset[str]:
    if isinstance(key, rsa.RSAPublicKey):
        return frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
    if isinstance(key, ec.EllipticCurvePublicKey):
        alg = _EC_ALGORITHMS.get(key.curve.name)
        return frozenset({alg} if alg else ())
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def parse_jwt_keys(text: str, source: str = "JWT keys file") -> list[_Key]:
    """PEM public keys / certificates, or a JWKS document."""
    keys: list[_Key] = []
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
            jwks = jwt.PyJWKSet.from_dict(data)
        except (json.JSONDecodeError, jwt.PyJWTError) as exc:
            raise AuthConfigError(f"{source}: not a usable JWKS document ({exc})") from None
        for jwk in jwks.keys:
            if jwk.key_type == "oct":
                raise AuthConfigError(f"{source}: symmetric (oct) keys are not accepted")
            key = jwk.key
            if isinstance(key, _PRIVATE_KEYS):
                raise AuthConfigError(f"{source}: holds a private key; give public keys only")
            keys.append(_Key(key, jwk.key_id, _algorithms(key)))
    else:
        blocks = _pem_blocks(text)
        if not blocks:
            raise AuthConfigError(f"{source}: no PEM public key or certificate found")
        for kind, block in blocks:
            if "PRIVATE" in kind:
                raise AuthConfigError(f"{source}: holds a private key; give public keys only")
            try:
                if kind == "CERTIFICATE":
                    key = x509.load_pem_x509_certificate(block).public_key()
                else:
                    key = serialization.load_pem_public_key(block)
            except ValueError as exc:
                raise AuthConfigError(f"{source}: cannot parse a {kind} block ({exc})") from None
            keys.append(_Key(key, None, _algorithms(key)))
    usable = [k for k in keys if k.algorithms]
    if not usable:
        raise AuthConfigError(f"{source}: no RSA, EC (P-256/384/521) or Ed25519/Ed448 key")
    return usable


def _pem_blocks(text: str) -> list[tuple[str, bytes]]:
    blocks: list[tuple[str, bytes]] = []
    lines: list[str] = []
    kind = ""
    for line in text.splitlines():
        if line.startswith("-----BEGIN ") and line.endswith("-----"):
            kind = line[len("-----BEGIN ") : -5]
            lines = [line]
        elif kind and line.startswith("-----END "):
            lines.append(line)
            blocks.append((kind, ("\n".join(lines) + "\n").encode()))
            kind = ""
        elif kind:
            lines.append(line)
    return blocks


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
        self._file = _WatchedFile(keys_path)
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


# -- the authenticator and the interceptor ----------------------------------------------------


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
