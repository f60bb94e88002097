"""Bearer tokens, JWTs and roles over real gRPC (server.auth).

A wrong, missing, malformed or expired credential gets UNAUTHENTICATED, a
valid one without the method's (or the model's) role PERMISSION_DENIED, the
right one works. Health checks need nothing. Keys are generated per test
run; the tokens file is JSON.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import numpy as np
import pytest
from conftest import ServerThread
from cryptography.hazmat.primitives.asymmetric import ed25519
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tls_material import ec_key, public_pem, rsa_key

from inferd.clients import InferenceClient, InferenceServerError
from inferd.protos import grpc_service_pb2 as pb
from inferd.protos import grpc_service_pb2_grpc as pb_grpc
from inferd.protos.inferd.admin.v1 import admin_pb2 as apb
from inferd.protos.inferd.admin.v1 import admin_pb2_grpc as admin_grpc
from inferd.server import auth
from inferd.server.app import InferdServer, ServerConfig, StartupError
from inferd.server.identity import ANONYMOUS, current_principal

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED

INFER_TOKEN = "infer-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
BOTH_TOKEN = "both-token-0123456789abcdefgh"
HASHED_TOKEN = "hashed-token-0123456789abcdef"
NOROLE_TOKEN = "norole-token-0123456789abcdef"
DIGITS_TOKEN = "digits-token-0123456789abcdef"
ISSUER = "https://issuer.test"
AUDIENCE = "inferd-test"


def tokens_file(path: Path) -> Path:
    path.write_text(
        json.dumps(
            {
                INFER_TOKEN: {"name": "inferrer", "roles": ["infer"]},
                ADMIN_TOKEN: {"name": "operator", "roles": ["admin"]},
                BOTH_TOKEN: {"name": "root", "roles": ["infer", "admin"]},
                "sha256:" + hashlib.sha256(HASHED_TOKEN.encode()).hexdigest(): {
                    "name": "hashed",
                    "roles": ["infer"],
                },
                NOROLE_TOKEN: {"name": "reader", "roles": []},
                DIGITS_TOKEN: {"name": "digits-user", "roles": ["infer", "digits"]},
            }
        )
    )
    return path


class Keys:
    def __init__(self) -> None:
        self.rsa = rsa_key()
        self.ec = ec_key()
        self.other = ec_key()  # not in the keys file

    def write(self, path: Path) -> Path:
        path.write_bytes(public_pem(self.rsa) + public_pem(self.ec))
        return path

    def token(
        self,
        *,
        key: Any = None,
        alg: str = "ES256",
        sub: str = "jwt-user",
        roles: object = ("infer",),
        exp: float | None = 300,
        iss: str = ISSUER,
        aud: str = AUDIENCE,
        headers: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
    ) -> str:
        now = time.time()
        claims: dict[str, Any] = {"sub": sub, "iss": iss, "aud": aud, "iat": int(now)}
        if exp is not None:
            claims["exp"] = int(now + exp)
        if roles is not None:
            claims["roles"] = list(roles) if not isinstance(roles, str) else roles
        for name in drop:
            claims.pop(name, None)
        signer = key if key is not None else (self.ec if alg.startswith("ES") else self.rsa)
        return jwt.encode(claims, signer, algorithm=alg, headers=headers)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(scope="module")
def auth_repo(demo_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo models, with digits_mlp restricted to the 'digits' role."""
    repo = tmp_path_factory.mktemp("auth") / "models"
    shutil.copytree(demo_repository, repo)
    config = repo / "digits_mlp" / "config.pbtxt"
    config.write_text(
        config.read_text()
        + 'parameters { key: "allowed_roles" value { string_value: "digits, admin" } }\n'
    )
    return repo


@pytest.fixture(scope="module")
def secured(
    auth_repo: Path, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    files = tmp_path_factory.mktemp("authfiles")
    config = ServerConfig(
        model_repository=auth_repo,
        grpc_port=0,
        auth_tokens_file=tokens_file(files / "tokens.json"),
        jwt_keys_file=keys.write(files / "jwt.pem"),
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_leeway_s=0,
        # Load/unload on request, so the admin role has something to do.
        model_control_mode="explicit",
        load_models=("*",),
        state_dir=files / "state",
    )
    server = ServerThread(config).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stub(secured: ServerThread) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(secured.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.channel = channel  # type: ignore[attr-defined]
        yield stub


def text_request() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="text_stats")
    msg.inputs.add(name="token_ids", datatype="INT64", shape=[1, 8])
    msg.inputs.add(name="weights", datatype="FP16", shape=[1, 8])
    msg.inputs.add(name="tag", datatype="BYTES", shape=[1, 1])
    msg.raw_input_contents.extend([bytes(64), bytes(16), b"\x01\x00\x00\x00t"])
    return msg


def digits_request() -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="digits_mlp")
    msg.inputs.add(name="pixels", datatype="FP32", shape=[1, 64])
    msg.raw_input_contents.append(bytes(256))
    return msg


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def call(
    stub: pb_grpc.GRPCInferenceServiceStub,
    method: str,
    metadata: list[tuple[str, str]] | None,
) -> Any:
    requests: dict[str, Callable[[], Any]] = {
        "ModelInfer": text_request,
        "ModelInferDigits": digits_request,
        "ServerMetadata": pb.ServerMetadataRequest,
        "ModelMetadataDigits": lambda: pb.ModelMetadataRequest(name="digits_mlp"),
        "RepositoryModelLoad": lambda: pb.RepositoryModelLoadRequest(model_name="text_stats"),
        "ServerLive": pb.ServerLiveRequest,
        "ServerReady": pb.ServerReadyRequest,
    }
    rpc = method.removesuffix("Digits")
    if rpc == "GetRoutes":
        admin = admin_grpc.ModelAdminStub(stub.channel)  # type: ignore[attr-defined]
        return admin.GetRoutes(apb.GetRoutesRequest(), metadata=metadata, timeout=30)
    if rpc == "ModelStreamInfer":
        replies = list(stub.ModelStreamInfer(iter([text_request()]), metadata=metadata, timeout=30))
        assert replies[0].error_message == ""
        return replies[0]
    return getattr(stub, rpc)(requests[method](), metadata=metadata, timeout=30)


# (id, method, metadata maker, expected code or None for OK, words in the message)
CASES: list[Any] = [
    ("no-credential", "ModelInfer", lambda k: None, UNAUTHENTICATED, ("missing credentials",)),
    ("wrong-token", "ModelInfer", lambda k: bearer("x" * 30), UNAUTHENTICATED, ("not recognised",)),
    (
        "basic-scheme",
        "ModelInfer",
        lambda k: [("authorization", "Basic dXNlcjpwYXNz")],
        UNAUTHENTICATED,
        ("Bearer <token>",),
    ),
    (
        "empty-bearer",
        "ModelInfer",
        lambda k: [("authorization", "Bearer ")],
        UNAUTHENTICATED,
        ("Bearer <token>",),
    ),
    (
        "two-credentials",
        "ModelInfer",
        lambda k: bearer(INFER_TOKEN) + bearer(INFER_TOKEN),
        UNAUTHENTICATED,
        ("more than one",),
    ),
    (
        "token-too-long",
        "ModelInfer",
        lambda k: bearer("t" * 9000),
        UNAUTHENTICATED,
        ("longer than",),
    ),
    ("infer-token", "ModelInfer", lambda k: bearer(INFER_TOKEN), None, ()),
    ("infer-token-stream", "ModelStreamInfer", lambda k: bearer(INFER_TOKEN), None, ()),
    (
        "no-credential-stream",
        "ModelStreamInfer",
        lambda k: None,
        UNAUTHENTICATED,
        ("missing credentials",),
    ),
    ("hashed-token", "ModelInfer", lambda k: bearer(HASHED_TOKEN), None, ()),
    ("admin-cannot-infer", "ModelInfer", lambda k: bearer(ADMIN_TOKEN), DENIED, ("'infer' role",)),
    ("no-role-cannot-infer", "ModelInfer", lambda k: bearer(NOROLE_TOKEN), DENIED, ("reader",)),
    (
        "infer-cannot-load",
        "RepositoryModelLoad",
        lambda k: bearer(INFER_TOKEN),
        DENIED,
        ("'admin' role", "RepositoryModelLoad"),
    ),
    ("admin-can-load", "RepositoryModelLoad", lambda k: bearer(ADMIN_TOKEN), None, ()),
    # The inferd.admin.v1 service registers every method as admin-only.
    (
        "infer-cannot-admin",
        "GetRoutes",
        lambda k: bearer(INFER_TOKEN),
        DENIED,
        ("'admin' role", "GetRoutes"),
    ),
    ("no-credential-admin", "GetRoutes", lambda k: None, UNAUTHENTICATED, ("missing",)),
    ("admin-can-admin", "GetRoutes", lambda k: bearer(ADMIN_TOKEN), None, ()),
    ("jwt-admin-can-admin", "GetRoutes", lambda k: bearer(k.token(roles=("admin",))), None, ()),
    ("metadata-any-role", "ServerMetadata", lambda k: bearer(NOROLE_TOKEN), None, ()),
    (
        "metadata-needs-credential",
        "ServerMetadata",
        lambda k: None,
        UNAUTHENTICATED,
        ("missing",),
    ),
    ("live-is-public", "ServerLive", lambda k: None, None, ()),
    ("ready-is-public", "ServerReady", lambda k: None, None, ()),
    ("live-ignores-bad-token", "ServerLive", lambda k: bearer("bogus" * 5), None, ()),
    # Per-model roles: digits_mlp allows 'digits' and 'admin'.
    (
        "model-role-missing",
        "ModelInferDigits",
        lambda k: bearer(INFER_TOKEN),
        DENIED,
        ("digits_mlp", "'digits'"),
    ),
    ("model-role-present", "ModelInferDigits", lambda k: bearer(DIGITS_TOKEN), None, ()),
    (
        "model-metadata-role-missing",
        "ModelMetadataDigits",
        lambda k: bearer(INFER_TOKEN),
        DENIED,
        ("digits_mlp",),
    ),
    # JWTs.
    ("jwt-es256", "ModelInfer", lambda k: bearer(k.token()), None, ()),
    ("jwt-rs256", "ModelInfer", lambda k: bearer(k.token(alg="RS256")), None, ()),
    ("jwt-ps256", "ModelInfer", lambda k: bearer(k.token(alg="PS256")), None, ()),
    ("jwt-scope-claim", "ModelInfer", lambda k: bearer(k.token(roles="infer other")), None, ()),
    (
        "jwt-expired",
        "ModelInfer",
        lambda k: bearer(k.token(exp=-60)),
        UNAUTHENTICATED,
        ("expired",),
    ),
    (
        "jwt-no-exp",
        "ModelInfer",
        lambda k: bearer(k.token(exp=None)),
        UNAUTHENTICATED,
        ("'exp'",),
    ),
    (
        "jwt-not-yet-valid",
        "ModelInfer",
        lambda k: bearer(_nbf(k)),
        UNAUTHENTICATED,
        ("not valid yet",),
    ),
    (
        "jwt-wrong-audience",
        "ModelInfer",
        lambda k: bearer(k.token(aud="someone-else")),
        UNAUTHENTICATED,
        ("audience",),
    ),
    (
        "jwt-wrong-issuer",
        "ModelInfer",
        lambda k: bearer(k.token(iss="https://evil.test")),
        UNAUTHENTICATED,
        ("issuer",),
    ),
    (
        "jwt-unknown-key",
        "ModelInfer",
        lambda k: bearer(k.token(key=k.other)),
        UNAUTHENTICATED,
        ("signature",),
    ),
    (
        "jwt-tampered",
        "ModelInfer",
        lambda k: bearer(_tamper(k.token(roles=("nothing",)))),
        UNAUTHENTICATED,
        ("signature",),
    ),
    (
        "jwt-alg-none",
        "ModelInfer",
        lambda k: bearer(jwt.encode(_claims(), None, algorithm="none")),
        UNAUTHENTICATED,
        ("algorithm",),
    ),
    (
        # Algorithm confusion: HS256 keyed with the server's public key.
        "jwt-hs256-public-key",
        "ModelInfer",
        lambda k: bearer(_hs256_with_public_key(k)),
        UNAUTHENTICATED,
        ("algorithm",),
    ),
    (
        "jwt-eddsa-unknown-key",
        "ModelInfer",
        lambda k: bearer(k.token(key=ed25519.Ed25519PrivateKey.generate(), alg="EdDSA")),
        UNAUTHENTICATED,
        ("algorithm",),
    ),
    (
        "jwt-wrong-role",
        "ModelInfer",
        lambda k: bearer(k.token(roles=("admin",))),
        DENIED,
        ("jwt-user", "'infer' role"),
    ),
    (
        "jwt-no-sub",
        "ModelInfer",
        lambda k: bearer(k.token(drop=("sub",))),
        UNAUTHENTICATED,
        ("'sub'",),
    ),
    (
        "jwt-garbage",
        "ModelInfer",
        lambda k: bearer("eyJhbGciOi.eyJzdWIi.c2ln"),
        UNAUTHENTICATED,
        ("JWT",),
    ),
]


def _claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "x",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": now + 300,
        "roles": ["infer"],
        **extra,
    }


def _nbf(keys: Keys) -> str:
    return jwt.encode(_claims(nbf=int(time.time()) + 3600), keys.ec, algorithm="ES256")


def _tamper(token: str) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(jwt.utils.base64url_decode(payload))
    claims["roles"] = ["infer", "admin"]
    forged = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{header}.{forged}.{signature}"


def _hs256_with_public_key(keys: Keys) -> str:
    import base64
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    # PyJWT refuses to sign HMAC with a PEM key; an attacker does it by hand.
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(_claims()).encode())
    mac = hmac.new(public_pem(keys.ec), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


@pytest.mark.parametrize(
    ("method", "make", "code", "words"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_credentials_and_roles(
    stub: pb_grpc.GRPCInferenceServiceStub,
    keys: Keys,
    method: str,
    make: Callable[[Keys], Any],
    code: grpc.StatusCode | None,
    words: tuple[str, ...],
) -> None:
    metadata = make(keys)
    if code is None:
        call(stub, method, metadata)
        return
    with pytest.raises(grpc.RpcError) as info:
        call(stub, method, metadata)
    details = info.value.details() or ""
    assert info.value.code() == code, details
    for word in words:
        assert word in details, f"{word!r} not in {details!r}"
    assert INFER_TOKEN not in details and "BEGIN" not in details
    # And the server still serves a good caller.
    call(stub, "ModelInfer", bearer(INFER_TOKEN))


def test_health_check_needs_no_credentials(secured: ServerThread) -> None:
    with grpc.insecure_channel(secured.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reply = health.Check(health_pb2.HealthCheckRequest(service="text_stats"), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def test_our_client_sends_credentials(secured: ServerThread) -> None:
    with InferenceClient(secured.address, metadata=bearer(INFER_TOKEN)) as client:
        result = client.infer(
            "text_stats",
            {
                "token_ids": np.arange(8, dtype=np.int64).reshape(1, 8),
                "weights": np.ones((1, 8), np.float16),
                "tag": np.array([[b"t"]], dtype=object),
            },
            timeout=30,
        )
        assert int(result["id_sum"][0, 0]) == 28
    with InferenceClient(secured.address) as client, pytest.raises(InferenceServerError) as info:
        client.server_metadata(timeout=30)
    assert info.value.code == UNAUTHENTICATED


def test_statistics_list_only_models_the_caller_may_use(
    stub: pb_grpc.GRPCInferenceServiceStub,
) -> None:
    reply = stub.ModelStatistics(
        pb.ModelStatisticsRequest(), metadata=bearer(INFER_TOKEN), timeout=30
    )
    assert "digits_mlp" not in {s.name for s in reply.model_stats}
    reply = stub.ModelStatistics(
        pb.ModelStatisticsRequest(), metadata=bearer(DIGITS_TOKEN), timeout=30
    )
    assert "digits_mlp" in {s.name for s in reply.model_stats}


def test_handler_sees_the_principal(secured: ServerThread) -> None:
    """The interceptor sets server.identity's principal for the handler (the
    audit log reads it) and resets it afterwards."""
    assert secured.server is not None
    dataplane = secured.server.dataplane
    seen: list[Any] = []
    original = dataplane.authorize  # called for every admitted inference request

    def spy(version: Any) -> None:
        seen.append(current_principal())
        original(version)

    dataplane.authorize = spy
    try:
        with grpc.insecure_channel(secured.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            call(stub, "ModelInfer", bearer(INFER_TOKEN))
            call(stub, "ModelStreamInfer", bearer(BOTH_TOKEN))
    finally:
        del dataplane.authorize
    assert [(p.name, sorted(p.roles)) for p in seen] == [
        ("inferrer", ["infer"]),
        ("root", ["admin", "infer"]),
    ]
    assert ANONYMOUS not in seen


def test_tokens_file_changes_are_picked_up(
    demo_repository: Path, tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    path = tokens_file(tmp_path / "tokens.json")
    server = make_server(demo_repository, auth_tokens_file=path)
    new = "rotated-token-0123456789abcdef"
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        call(stub, "ModelInfer", bearer(INFER_TOKEN))
        tmp = tmp_path / "tokens.new"
        tmp.write_text(json.dumps({new: {"name": "new", "roles": ["infer"]}}))
        tmp.replace(path)
        time.sleep(1.1)  # changes are checked at most once a second
        call(stub, "ModelInfer", bearer(new))
        with pytest.raises(grpc.RpcError) as info:
            call(stub, "ModelInfer", bearer(INFER_TOKEN))
        assert info.value.code() == UNAUTHENTICATED
        # A broken file keeps the tokens in force (and is logged).
        tmp.write_text("{not json")
        tmp.replace(path)
        assert server.server is not None
        server.server.reload_credentials()  # what SIGHUP does
        call(stub, "ModelInfer", bearer(new))


def test_method_table_covers_every_rpc_and_fails_closed() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    policy = auth.MethodPolicy()
    table = dict(policy.items())
    for method in service.methods:
        assert f"/{service.full_name}/{method.name}" in table, method.name
    assert policy.required("/inferd.admin.v1.Admin/Drain") == auth.ROLE_ADMIN
    policy.register({"/inferd.admin.v1.Admin/Status": auth.AUTHENTICATED})
    assert policy.required("/inferd.admin.v1.Admin/Status") == auth.AUTHENTICATED
    assert policy.required("/grpc.health.v1.Health/Check") == auth.PUBLIC


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param("[1, 2]", "expected an object", id="not-an-object"),
        pytest.param("{", "not valid JSON", id="bad-json"),
        pytest.param('{"short": {"name": "a", "roles": []}}', "at least 16", id="short-token"),
        pytest.param('{"sha256:abc": {"name": "a", "roles": []}}', "64 hex", id="bad-digest"),
        pytest.param(
            '{"0123456789abcdefg": {"name": "a", "roles": "admin"}}', "list", id="roles-string"
        ),
        pytest.param('{"0123456789abcdefg": {"roles": []}}', "'name'", id="no-name"),
    ],
)
def test_bad_tokens_file_stops_start_up(
    demo_repository: Path, tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content)
    with pytest.raises(StartupError, match=message):
        InferdServer(ServerConfig(model_repository=demo_repository, auth_tokens_file=path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(b"nothing here", "no PEM", id="no-pem"),
        pytest.param(None, "private key", id="private-key"),
        pytest.param(b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "symmetric", id="jwks-oct"),
    ],
)
def test_bad_jwt_keys_stop_start_up(
    demo_repository: Path, tmp_path: Path, content: bytes | None, message: str
) -> None:
    from tls_material import key_pem

    path = tmp_path / "keys.pem"
    path.write_bytes(content if content is not None else key_pem(ec_key()))
    config = ServerConfig(
        model_repository=demo_repository,
        jwt_keys_file=path,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )
    with pytest.raises(StartupError, match=message):
        InferdServer(config)


def test_jwt_needs_issuer_and_audience(demo_repository: Path, tmp_path: Path) -> None:
    path = Keys().write(tmp_path / "keys.pem")
    with pytest.raises(StartupError, match="issuer and an audience"):
        InferdServer(ServerConfig(model_repository=demo_repository, jwt_keys_file=path))


def test_jwks_keys_are_chosen_by_kid(
    demo_repository: Path, tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    first, second = ec_key(), ec_key()
    jwks = {
        "keys": [
            {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.public_key())), "kid": kid}
            for k, kid in ((first, "one"), (second, "two"))
        ]
    }
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    server = make_server(
        demo_repository, jwt_keys_file=path, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        good = jwt.encode(_claims(), second, algorithm="ES256", headers={"kid": "two"})
        call(stub, "ModelInfer", bearer(good))
        wrong_kid = jwt.encode(_claims(), second, algorithm="ES256", headers={"kid": "one"})
        with pytest.raises(grpc.RpcError) as info:
            call(stub, "ModelInfer", bearer(wrong_kid))
        assert info.value.code() == UNAUTHENTICATED
        unknown_kid = jwt.encode(_claims(), second, algorithm="ES256", headers={"kid": "zzz"})
        with pytest.raises(grpc.RpcError) as info:
            call(stub, "ModelInfer", bearer(unknown_kid))
        assert "key id" in (info.value.details() or "")


def test_pem_bundle_of_certificates_with_text_between_blocks(
    demo_repository: Path, tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    """A keys file as CAs ship them: several certificates and a public key,
    with comments and blank lines between the blocks; every key verifies."""
    from tls_material import Authority

    authority = Authority()
    first = authority.issue("signer-one", server=False)
    second = authority.issue("signer-two", server=False)
    loose = ec_key()
    path = tmp_path / "bundle.pem"
    path.write_bytes(
        b"# signer one\nsubject=CN=signer-one\n"
        + first.cert_pem
        + b"\n\nBag Attributes: junk that is no PEM\n"
        + second.cert_pem
        + b"-----not a boundary-----\n"
        + public_pem(loose)
        + b"trailing text\n"
    )
    server = make_server(
        demo_repository, jwt_keys_file=path, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for key in (first.key, second.key, loose):
            call(stub, "ModelInfer", bearer(jwt.encode(_claims(), key, algorithm="ES256")))
        with pytest.raises(grpc.RpcError) as info:
            call(stub, "ModelInfer", bearer(jwt.encode(_claims(), ec_key(), algorithm="ES256")))
        assert info.value.code() == UNAUTHENTICATED
