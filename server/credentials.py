"""TLS certificates and caller authentication, loaded from a ``ServerConfig``.

Which combinations are allowed is checked with the other settings
(server.settings.checks); here the files are read, so a bad one fails at
start instead of at the first handshake or call.
"""

from __future__ import annotations

from inferd.server.auth import (
    Authenticator,
    AuthInterceptor,
    JwtVerifier,
    TokenStore,
)
from inferd.server.auth.certificate_roles import CertificateRoles
from inferd.server.auth.gate import AuthGate
from inferd.server.settings import ServerConfig
from inferd.server.tls import CertificateFiles


def load_certificates(config: ServerConfig) -> CertificateFiles | None:
    """The server's certificates, or None for plaintext; raises TlsConfigError."""
    if config.tls_cert_file is None or config.tls_key_file is None:
        return None
    files = CertificateFiles(config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file)
    files.load()
    return files


def load_authenticator(config: ServerConfig) -> Authenticator | None:
    """Tokens and JWT keys, or None when neither is configured; raises AuthConfigError."""
    if not config.auth_enabled:
        return None
    tokens = TokenStore(config.auth_tokens_file) if config.auth_tokens_file else None
    jwts = None
    if config.jwt_keys_file is not None:
        jwts = JwtVerifier(
            config.jwt_keys_file,
            issuer=config.jwt_issuer or "",
            audience=config.jwt_audience or "",
            leeway_s=config.jwt_leeway_s,
        )
    return Authenticator(tokens, jwts)


def load_certificate_roles(config: ServerConfig) -> CertificateRoles | None:
    """Roles for client certificates, or None; raises AuthConfigError."""
    if config.tls_client_roles_file is None:
        return None
    return CertificateRoles(config.tls_client_roles_file)


def auth_interceptor(
    gate: AuthGate, certificates: CertificateFiles | None
) -> AuthInterceptor | None:
    """The interceptor that refuses callers who may not call, if one is needed."""
    mutual = certificates is not None and certificates.mutual
    if gate.open_admin and not mutual:
        return None  # everything is open: nothing to decide, no principal to name
    return AuthInterceptor(gate, peer_certificates=mutual)


def transport_name(certificates: CertificateFiles | None) -> str:
    if certificates is None:
        return "plaintext"
    return "mutual TLS" if certificates.mutual else "TLS"
