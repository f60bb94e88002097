"""JWT verification keys: the keys file (``--jwt-keys-file``), as PEM public keys
and certificates or as a JWKS document. Public keys only; symmetric (HMAC)
and private keys are refused."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from inferd.server.auth.watched_file import AuthConfigError

_PRIVATE_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


@dataclass(frozen=True, slots=True)
class JwtKey:
    """A public key, its JWKS ``kid`` (None from PEM) and the ``alg`` values it verifies."""

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


def parse_jwt_keys(text: str, source: str = "JWT keys file") -> list[JwtKey]:
    """PEM public keys / certificates, or a JWKS document."""
    keys = _jwks_keys(text, source) if text.lstrip().startswith("{") else _pem_keys(text, source)
    usable = [k for k in keys if k.algorithms]
    if not usable:
        raise AuthConfigError(f"{source}: no RSA, EC (P-256/384/521) or Ed25519/Ed448 key")
    return usable


def _jwks_keys(text: str, source: str) -> list[JwtKey]:
    try:
        jwks = jwt.PyJWKSet.from_dict(json.loads(text))
    except (json.JSONDecodeError, jwt.PyJWTError) as exc:
        raise AuthConfigError(f"{source}: not a usable JWKS document ({exc})") from None
    keys: list[JwtKey] = []
    for jwk in jwks.keys:
        if jwk.key_type == "oct":
            raise AuthConfigError(f"{source}: symmetric (oct) keys are not accepted")
        key = jwk.key
        if isinstance(key, _PRIVATE_KEYS):
            raise AuthConfigError(f"{source}: holds a private key; give public keys only")
        keys.append(JwtKey(key, jwk.key_id, _algorithms(key)))
    return keys


def _pem_keys(text: str, source: str) -> list[JwtKey]:
    blocks = pem_blocks(text)
    if not blocks:
        raise AuthConfigError(f"{source}: no PEM public key or certificate found")
    keys: list[JwtKey] = []
    for kind, block in blocks:
        key: Any
        if "PRIVATE" in kind:
            raise AuthConfigError(f"{source}: holds a private key; give public keys only")
        try:
            if kind == "CERTIFICATE":
                key = x509.load_pem_x509_certificate(block).public_key()
            else:
                key = serialization.load_pem_public_key(block)
        except ValueError as exc:
            raise AuthConfigError(f"{source}: cannot parse a {kind} block ({exc})") from None
        keys.append(JwtKey(key, None, _algorithms(key)))
    return keys


def pem_blocks(text: str) -> list[tuple[str, bytes]]:
    """Each ``-----BEGIN <kind>-----`` ... ``-----END`` block as (kind, PEM
    bytes), in order; text outside the blocks is ignored.

    Split here, not by ``cryptography``: its ``load_pem_public_key`` reads
    only the first block of a file, and ``load_pem_x509_certificates`` only
    certificates, so a file that mixes several keys and certificates has no
    loader there; each block found here is parsed by ``cryptography``."""
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
