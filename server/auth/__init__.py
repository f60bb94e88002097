"""Authentication and authorization for the gRPC front end.

Credentials travel as gRPC metadata ``authorization: Bearer <token>``. A token
is either

- a static token from the tokens file (``--auth-tokens-file``), a JSON object that
  maps each token, or ``"sha256:<hex digest>"`` of it, to its holder::

      {"sha256:9f86d081884c7d65...": {"name": "ci", "roles": ["infer"]},
       "a-long-random-token":       {"name": "ops", "roles": ["infer", "admin"]}}

  Only digests are kept in memory; a presented token is hashed and looked up
  (``auth.bearer_tokens``).
- a JWT (``--jwt-keys-file``, ``--jwt-issuer``, ``--jwt-audience``), signed with
  an asymmetric key from the keys file (PEM public keys or certificates, or a
  JWKS ``{"keys": [...]}``; a ``kid`` header picks the key; ``auth.jwt_keys``).
  ``exp``, ``iss``, ``aud`` and ``sub`` are required; ``sub`` names the
  caller, the ``roles`` claim (a list, or the space-separated ``scope``
  claim) gives the roles (``auth.jwt_verifier``). HMAC and ``none`` are
  refused: the keys file holds public keys only.

Both files are re-read when they change (checked at most once a second) and
on SIGHUP; a file that fails to parse keeps the previous contents in force
(``auth.watched_file``).

Client certificates (mutual TLS) get roles from the roles file
(``--tls-client-roles-file``, ``auth.certificate_roles``). With no way to
authenticate configured, the control plane is refused unless
``--allow-unauthenticated-admin`` (``auth.gate``, one decision for gRPC and
HTTP).

Authorization is a table keyed by full method name (``MethodPolicy``,
``auth.policy``): each method needs ``PUBLIC`` (no credential: health
checks), ``AUTHENTICATED`` (any valid credential), or a role (``infer``,
``admin``). A method missing from the table needs ``admin`` (fail closed), so
a newly registered service is admin-only until it registers its own entries.
Roles are independent: give a caller ``["infer", "admin"]`` for both. A
model's ``allowed_roles`` config parameter further limits who may use it
(checked by the data plane).

Failures: no, malformed, unknown, expired or badly signed credential ->
UNAUTHENTICATED; valid credential without the role -> PERMISSION_DENIED.
Messages say what is wrong with the credential, never why a key failed.
The gRPC interceptor (``auth.grpc_interceptor``) sets ``server.identity``'s
principal for the handler.
"""

from inferd.server.auth.authenticator import MAX_TOKEN_CHARS, Authenticator
from inferd.server.auth.bearer_tokens import TokenStore, parse_tokens
from inferd.server.auth.grpc_interceptor import AuthInterceptor
from inferd.server.auth.jwt_keys import JwtKey, parse_jwt_keys
from inferd.server.auth.jwt_verifier import JwtVerifier
from inferd.server.auth.policy import (
    AUTHENTICATED,
    DEFAULT_METHOD_ROLES,
    PUBLIC,
    ROLE_ADMIN,
    ROLE_INFER,
    MethodPolicy,
)
from inferd.server.auth.watched_file import AuthConfigError

__all__ = [
    "AUTHENTICATED",
    "DEFAULT_METHOD_ROLES",
    "MAX_TOKEN_CHARS",
    "PUBLIC",
    "ROLE_ADMIN",
    "ROLE_INFER",
    "AuthConfigError",
    "AuthInterceptor",
    "Authenticator",
    "JwtKey",
    "JwtVerifier",
    "MethodPolicy",
    "TokenStore",
    "parse_jwt_keys",
    "parse_tokens",
]
