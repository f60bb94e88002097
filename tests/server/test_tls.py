"""TLS and mutual TLS on the gRPC port (server.tls), certificates generated
here. Rejections of the transport happen in the handshake, so the client
sees UNAVAILABLE; rejections of a credential inside a call (token, JWT) are
UNAUTHENTICATED (test_auth.py)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import ServerThread
from tls_material import Authority, key_pem, write

from benchmarks.server_process import ServerProcess
from inferd.clients import InferenceClient, InferenceServerError
from inferd.server.app import InferdServer, ServerConfig, StartupError
from inferd.server.identity import Principal, current_principal

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
PIXELS = {"pixels": np.zeros((1, 64), np.float32)}


def fresh(*, credentials: grpc.ChannelCredentials | None, address: str, **kw: Any) -> Any:
    # A private subchannel pool: each client makes its own connection (and
    # handshake) instead of reusing one another client opened.
    return InferenceClient(
        address,
        credentials=credentials,
        channel_options=[("grpc.use_local_subchannel_pool", 1)],
        **kw,
    )


def infer(address: str, credentials: grpc.ChannelCredentials | None, **kw: Any) -> Any:
    with fresh(credentials=credentials, address=address, **kw) as client:
        return client.infer("digits_mlp", PIXELS, timeout=10)


def refused(address: str, credentials: grpc.ChannelCredentials | None) -> InferenceServerError:
    with pytest.raises(InferenceServerError) as info:
        infer(address, credentials)
    return info.value


class Pki:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = Authority("inferd test CA")
        self.server = self.ca.issue("inferd-server", server=True)
        self.client = self.ca.issue("alice", server=False)
        self.cert = write(root / "server.pem", self.server.cert_pem)
        self.key = write(root / "server.key", self.server.key_pem)
        self.client_ca = write(root / "clients-ca.pem", self.ca.pem)

    def trust(self, authority: Authority | None = None, client: Any = None) -> Any:
        ca = authority or self.ca
        if client is None:
            return grpc.ssl_channel_credentials(ca.pem)
        return grpc.ssl_channel_credentials(ca.pem, client.key_pem, client.cert_pem)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def test_tls_serves_and_refuses_plaintext_and_strangers(
    demo_repository: Path, pki: Pki, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository, tls_cert_file=pki.cert, tls_key_file=pki.key)
    result = infer(server.address, pki.trust())
    assert result["label"].shape == (1, 1)
    assert refused(server.address, None).code == UNAVAILABLE  # plaintext
    assert refused(server.address, pki.trust(Authority("elsewhere"))).code == UNAVAILABLE


def test_mutual_tls_needs_a_client_certificate_from_the_ca(
    demo_repository: Path, pki: Pki, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(
        demo_repository,
        tls_cert_file=pki.cert,
        tls_key_file=pki.key,
        tls_client_ca_file=pki.client_ca,
    )
    assert server.server is not None
    dataplane = server.server.dataplane
    seen: list[Principal] = []
    original = dataplane.authorize  # called for every admitted inference request

    def spy(version: Any) -> None:
        seen.append(current_principal())
        original(version)

    dataplane.authorize = spy
    try:
        infer(server.address, pki.trust(client=pki.client))
    finally:
        del dataplane.authorize
    # Without tokens the principal is the certificate's common name, no roles.
    assert seen == [Principal("alice")]

    assert refused(server.address, pki.trust()).code == UNAVAILABLE  # no client certificate
    stranger = Authority("other CA").issue("mallory", server=False)
    assert refused(server.address, pki.trust(client=stranger)).code == UNAVAILABLE
    expired = pki.ca.issue("old-alice", server=False, expired=True)
    assert refused(server.address, pki.trust(client=expired)).code == UNAVAILABLE
    infer(server.address, pki.trust(client=pki.client))  # still serving


def test_mutual_tls_with_tokens(
    demo_repository: Path, pki: Pki, tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    token = "tls-token-0123456789abcdef"
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({token: {"name": "svc", "roles": ["infer"]}}))
    server = make_server(
        demo_repository,
        tls_cert_file=pki.cert,
        tls_key_file=pki.key,
        tls_client_ca_file=pki.client_ca,
        auth_tokens_file=tokens,
    )
    creds = pki.trust(client=pki.client)
    infer(server.address, creds, metadata=[("authorization", f"Bearer {token}")])
    with pytest.raises(InferenceServerError) as info:
        infer(server.address, creds)
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_certificates_are_reloaded_when_the_files_change(
    demo_repository: Path, pki: Pki, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(demo_repository, tls_cert_file=pki.cert, tls_key_file=pki.key)
    assert server.server is not None and server.server.certificates is not None
    files = server.server.certificates
    infer(server.address, pki.trust())

    # A half-done rotation (new certificate, old key) is not taken: the old
    # pair keeps serving new connections.
    rotated_ca = Authority("rotated CA")
    rotated = rotated_ca.issue("inferd-server", server=True)
    write(pki.cert, rotated.cert_pem)
    infer(server.address, pki.trust())
    assert files.reloads == 0

    # Key follows: the next handshake uses the new pair.
    write(pki.key, rotated.key_pem)
    infer(server.address, pki.trust(rotated_ca))
    assert files.reloads == 1
    assert refused(server.address, pki.trust()).code == UNAVAILABLE

    # SIGHUP (reload_credentials) re-reads even when nothing looks changed.
    server.server.reload_credentials()
    infer(server.address, pki.trust(rotated_ca))
    assert files.reloads == 2


@pytest.mark.parametrize(
    ("case", "message"),
    [
        pytest.param("no-key", "both a certificate and a key", id="no-key"),
        pytest.param("ca-only", "client CA needs", id="ca-only"),
        pytest.param("missing-file", "cannot read", id="missing-file"),
        pytest.param("mismatch", "does not match", id="key-mismatch"),
        pytest.param("not-pem", "not a PEM certificate", id="not-pem"),
    ],
)
def test_bad_tls_files_stop_start_up(
    demo_repository: Path, pki: Pki, tmp_path: Path, case: str, message: str
) -> None:
    other = pki.ca.issue("x", server=True)
    options: dict[str, Any] = {
        "no-key": {"tls_cert_file": pki.cert},
        "ca-only": {"tls_client_ca_file": pki.client_ca},
        "missing-file": {"tls_cert_file": tmp_path / "nope.pem", "tls_key_file": pki.key},
        "mismatch": {
            "tls_cert_file": pki.cert,
            "tls_key_file": write(tmp_path / "other.key", key_pem(other.key)),
        },
        "not-pem": {
            "tls_cert_file": write(tmp_path / "junk.pem", b"junk"),
            "tls_key_file": pki.key,
        },
    }[case]
    with pytest.raises(StartupError, match=message):
        InferdServer(ServerConfig(model_repository=demo_repository, **options))


def test_sighup_reloads_certificates_in_the_cli_server(demo_repository: Path, pki: Pki) -> None:
    with ServerProcess(
        demo_repository, "--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key)
    ) as server:
        infer(server.address, pki.trust())
        server.signal(signal.SIGHUP)
        assert server.log_has("reloading credentials", timeout=10)
        infer(server.address, pki.trust())
        assert server.log_has("TLS certificates reloaded", timeout=10)
        assert server.stop() == 0


def test_sighup_reaches_every_worker(demo_repository: Path, pki: Pki) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key)]
    with ServerProcess(
        demo_repository, *args, "--grpc-port", str(port), "--workers", "2"
    ) as server:
        assert server.log_has(r"worker 1 starting", timeout=30)
        deadline = time.monotonic() + 60
        while sum("serving" in line for line in server.lines) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        server.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while sum("reloading credentials" in line for line in server.lines) < 2:
            assert time.monotonic() < deadline, server.lines[-10:]
            time.sleep(0.05)
        assert server.stop() == 0
