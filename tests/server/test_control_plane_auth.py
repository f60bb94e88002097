"""Who may use the control plane (server.auth.gate): client-certificate
identities map to roles (server.auth.certificate_roles), and a server that
authenticates no one refuses model load/unload and the admin service unless
its operator allowed it."""

from __future__ import annotations

import json
import logging
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import ServerThread
from cryptography import x509
from tls_material import Authority, Issued, write

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.protos.inferd.admin.v1 import admin_pb2 as apb
from inferd.protos.inferd.admin.v1 import admin_pb2_grpc as admin_grpc
from inferd.server.app import InferdServer, ServerConfig, StartupError

DENIED = grpc.StatusCode.PERMISSION_DENIED
OK = grpc.StatusCode.OK
#: Load and unload on request, so the control plane has something to do.
EXPLICIT: dict[str, Any] = {"model_control_mode": "explicit", "load_models": ("*",)}


@pytest.fixture
def demo_repository(demo_repository: Path, tmp_path: Path) -> Path:
    """A copy of the session's demo repository: loads write lifecycle state
    (``.inferd``) into the repository, which the shared one must not gain."""
    return Path(shutil.copytree(demo_repository, tmp_path / "models"))


def digits() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="digits_mlp")
    msg.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    msg.raw_input_contents.append(bytes(256))
    return msg


def outcome(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return OK, ""


class Caller:
    """Inference, control-plane and admin-service calls over one connection."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.v2 = pb_grpc.GRPCInferenceServiceStub(channel)
        self.admin = admin_grpc.ModelAdminStub(channel)

    def infer(self) -> tuple[grpc.StatusCode, str]:
        return outcome(lambda: self.v2.ModelInfer(digits(), timeout=30))

    def metadata(self) -> tuple[grpc.StatusCode, str]:
        request = pb.ModelMetadataRequest(name="digits_mlp")
        return outcome(lambda: self.v2.ModelMetadata(request, timeout=30))

    def load(self) -> tuple[grpc.StatusCode, str]:
        request = pb.RepositoryModelLoadRequest(model_name="digits_mlp")
        return outcome(lambda: self.v2.RepositoryModelLoad(request, timeout=60))

    def routes(self) -> tuple[grpc.StatusCode, str]:
        return outcome(lambda: self.admin.GetRoutes(apb.GetRoutesRequest(), timeout=30))


class Mtls:
    def __init__(self, root: Path) -> None:
        self.ca = Authority("inferd test CA")
        server = self.ca.issue("inferd-server", server=True)
        self.cert = write(root / "server.pem", server.cert_pem)
        self.key = write(root / "server.key", server.key_pem)
        self.client_ca = write(root / "clients-ca.pem", self.ca.pem)

    def client(self, name: str, *alt_names: x509.GeneralName) -> Issued:
        return self.ca.issue(name, server=False, alt_names=alt_names)

    def options(self) -> dict[str, Any]:
        return {
            "tls_cert_file": self.cert,
            "tls_key_file": self.key,
            "tls_client_ca_file": self.client_ca,
        }

    @contextmanager
    def caller(self, address: str, client: Issued) -> Iterator[Caller]:
        credentials = grpc.ssl_channel_credentials(self.ca.pem, client.key_pem, client.cert_pem)
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.secure_channel(address, credentials, options=options) as channel:
            yield Caller(channel)


@pytest.fixture
def mtls(tmp_path: Path) -> Mtls:
    return Mtls(tmp_path)


def test_certificate_identities_map_to_roles(
    demo_repository: Path, tmp_path: Path, mtls: Mtls, make_server: Callable[..., ServerThread]
) -> None:
    roles = tmp_path / "roles.json"
    roles.write_text(
        json.dumps(
            {
                "uri:spiffe://test/deployer": {"roles": ["infer", "admin"]},
                "dns:batch.example.org": {"name": "batch", "roles": ["infer"]},
                "cn:carol": {"roles": ["admin"]},
            }
        )
    )
    server = make_server(demo_repository, tls_client_roles_file=roles, **mtls.options(), **EXPLICIT)
    deployer = mtls.client("ignored-cn", x509.UniformResourceIdentifier("spiffe://test/deployer"))
    batch = mtls.client("batch-cn", x509.DNSName("batch.example.org"))
    carol = mtls.client("carol")
    stranger = mtls.client("mallory")  # from the CA, in no entry
    with mtls.caller(server.address, deployer) as caller:
        assert caller.infer()[0] == OK
        assert caller.load()[0] == OK
        assert caller.routes()[0] == OK
    with mtls.caller(server.address, batch) as caller:
        assert caller.infer()[0] == OK
        code, details = caller.load()
        assert code == DENIED
        assert "'batch' lacks the 'admin' role" in details
        assert caller.routes()[0] == DENIED
    with mtls.caller(server.address, carol) as caller:  # matched by common name
        assert caller.load()[0] == OK
        assert caller.infer()[0] == DENIED
    with mtls.caller(server.address, stranger) as caller:
        assert caller.metadata()[0] == OK  # authenticated by its certificate, no roles
        assert caller.infer()[0] == DENIED
        assert caller.load()[0] == DENIED


@pytest.mark.parametrize("transport", ["plaintext", "mutual TLS"])
def test_control_plane_is_refused_when_no_one_is_authenticated(
    demo_repository: Path,
    mtls: Mtls,
    make_server: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    options = mtls.options() if transport == "mutual TLS" else {}
    with caplog.at_level(logging.INFO, logger="inferd.app"):
        server = make_server(
            demo_repository, allow_unauthenticated_admin=False, **options, **EXPLICIT
        )
    assert "model load/unload and the admin service are refused" in caplog.text

    def check(caller: Caller) -> None:
        code, details = caller.load()
        assert code == DENIED
        assert "--allow-unauthenticated-admin" in details
        assert caller.routes()[0] == DENIED
        assert caller.infer()[0] == OK  # the data plane stays open

    if transport == "mutual TLS":
        with mtls.caller(server.address, mtls.client("alice")) as caller:
            check(caller)
    else:
        with grpc.insecure_channel(server.address) as channel:
            check(Caller(channel))


def test_the_flag_opens_the_control_plane_and_says_so(
    demo_repository: Path,
    make_server: Callable[..., ServerThread],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="inferd.app"):
        server = make_server(demo_repository, allow_unauthenticated_admin=True, **EXPLICIT)
    assert "every caller may load and unload models" in caplog.text
    with grpc.insecure_channel(server.address) as channel:
        assert Caller(channel).load()[0] == OK
        assert Caller(channel).routes()[0] == OK


def test_http_control_plane_is_refused_too(
    demo_repository: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(
        demo_repository, allow_unauthenticated_admin=False, allow_http=True, http_port=0
    )
    assert server.server is not None
    url = f"http://127.0.0.1:{server.server.http_port}/v2/repository/models/digits_mlp/load"
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=30)
    assert info.value.code == 403
    assert "--allow-unauthenticated-admin" in info.value.read().decode()


def test_bad_roles_files_stop_start_up(demo_repository: Path, tmp_path: Path, mtls: Mtls) -> None:
    roles = tmp_path / "roles.json"
    for text, expected in [
        ("[]", "expected an object"),
        ('{"email:a@b": {"roles": []}}', "'uri:...', 'dns:...' or 'cn:...'"),
        ('{"cn:a": {"roles": "admin"}}', "must be a list"),
    ]:
        roles.write_text(text)
        config = ServerConfig(
            model_repository=demo_repository, tls_client_roles_file=roles, **mtls.options()
        )
        with pytest.raises(StartupError, match=expected.replace(".", r"\.")):
            InferdServer(config)
    roles.write_text("{}")
    no_ca = ServerConfig(
        model_repository=demo_repository,
        tls_client_roles_file=roles,
        tls_cert_file=mtls.cert,
        tls_key_file=mtls.key,
    )
    with pytest.raises(StartupError, match="needs"):
        InferdServer(no_ca)


def test_https_callers_get_their_certificate_roles(
    demo_repository: Path, tmp_path: Path, mtls: Mtls, make_server: Callable[..., ServerThread]
) -> None:
    roles = tmp_path / "roles.json"
    roles.write_text(
        json.dumps(
            {
                "uri:spiffe://test/deployer": {"roles": ["admin"]},
                "dns:batch.example.org": {"roles": ["infer"]},
            }
        )
    )
    server = make_server(
        demo_repository,
        tls_client_roles_file=roles,
        allow_http=True,
        http_port=0,
        **mtls.options(),
        **EXPLICIT,
    )
    assert server.server is not None
    url = f"https://127.0.0.1:{server.server.http_port}/v2/repository/models/digits_mlp/load"

    def post(client: Issued) -> int:
        context = ssl.create_default_context(cadata=mtls.ca.pem.decode())
        cert = write(tmp_path / "client.pem", client.cert_pem)
        key = write(tmp_path / "client.key", client.key_pem)
        context.load_cert_chain(cert, key)
        request = urllib.request.Request(url, data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as err:
            assert "lacks the 'admin' role" in err.read().decode()
            return err.code

    deployer = mtls.client("d", x509.UniformResourceIdentifier("spiffe://test/deployer"))
    assert post(deployer) == 200
    assert post(mtls.client("b", x509.DNSName("batch.example.org"))) == 403
