"""TLS and mutual TLS for the gRPC port, with certificates reloaded live.

``grpc.dynamic_ssl_server_credentials`` asks ``CertificateFiles.fetch`` for
a new configuration before every TLS handshake. ``fetch`` compares the
files' (mtime, size, inode) with the ones in use and answers None (keep the
current configuration) unless they changed or a reload was requested
(SIGHUP). A rotation therefore takes effect on the next connection without a
restart; established connections keep the certificate they started with.

A new set is only swapped in when it parses and the key matches the
certificate, so a half-written rotation (new certificate, old key) keeps the
old pair serving and is retried on the next handshake after the files change
again. With a client CA (mutual TLS), connections without a certificate
signed by it fail in the TLS handshake: the client sees UNAVAILABLE, the
server never sees a call.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger("inferd.tls")


class TlsConfigError(Exception):
    """The certificate files cannot be used; one line for the operator."""


_Stamp = tuple[tuple[int, int, int] | None, ...]


class CertificateFiles:
    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self._lock = threading.Lock()
        self._force = False
        self._stamp: _Stamp = ()
        #: Successful reloads since start (for tests and logs).
        self.reloads = 0

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def _paths(self) -> list[Path]:
        return [p for p in (self.cert, self.key, self.client_ca) if p is not None]

    def _current_stamp(self) -> _Stamp:
        stamps: list[tuple[int, int, int] | None] = []
        for path in self._paths():
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamps.append(None)
        return tuple(stamps)

    def load(self) -> grpc.ServerCertificateConfiguration:
        """Read and check the files; raises TlsConfigError."""
        try:
            cert_pem = self.cert.read_bytes()
            key_pem = self.key.read_bytes()
            ca_pem = self.client_ca.read_bytes() if self.client_ca is not None else None
        except OSError as exc:
            raise TlsConfigError(f"cannot read TLS file: {exc}") from None
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError:
            raise TlsConfigError(f"{self.cert}: not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError):
            raise TlsConfigError(f"{self.key}: not an unencrypted PEM private key") from None
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if cert.public_key().public_bytes(der, public) != key.public_key().public_bytes(
            der, public
        ):
            raise TlsConfigError(f"{self.key} does not match the certificate {self.cert}")
        if ca_pem is not None:
            try:
                x509.load_pem_x509_certificates(ca_pem)
            except ValueError:
                raise TlsConfigError(f"{self.client_ca}: no PEM CA certificate") from None
        return grpc.ssl_server_certificate_configuration(
            [(key_pem, cert_pem)], root_certificates=ca_pem
        )

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for ``add_secure_port``; raises TlsConfigError."""
        with self._lock:
            stamp = self._current_stamp()
            initial = self.load()
            self._stamp = stamp
        # grpc documents None as "no change"; grpc-stubs types the fetcher without it.
        return grpc.dynamic_ssl_server_credentials(
            initial,
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )

    def request_reload(self) -> None:
        """Re-read the files before the next handshake (SIGHUP)."""
        self._force = True

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC (on one of its threads) before each handshake."""
        try:
            with self._lock:
                stamp = self._current_stamp()
                if stamp == self._stamp and not self._force:
                    return None
                self._force = False
                self._stamp = stamp  # retried when the files change again
                config = self.load()
                self.reloads += 1
            log.info("TLS certificates reloaded from %s", self.cert)
            return config
        except TlsConfigError as exc:
            log.error("TLS certificates not reloaded, the current ones stay in use: %s", exc)
        except Exception:
            log.exception("TLS certificates not reloaded")
        return None
