"""The HTTP/REST front end's security: the same bearer tokens and role table
as gRPC (each endpoint needs its gRPC twin's role), HTTPS with the gRPC
port's certificate (mutual TLS included), and the OpenAPI document, checked
against the routes the running server has."""

from __future__ import annotations

import gc
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from conftest import ServerThread
from http_helpers import http_port, request, start_http_server
from tls_material import Authority, write
from tritonclient.utils import InferenceServerException

INFER_TOKEN = "http-infer-token-0123456789"
ADMIN_TOKEN = "http-admin-token-0123456789"
NOROLE_TOKEN = "http-norole-token-0123456789"
PIXELS = {
    "inputs": [
        {"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0.0] * 64},
    ]
}


@pytest.fixture(autouse=True)
def _finalize_clients_on_this_thread() -> Iterator[None]:
    """A tritonclient.http client closes itself again when it is collected,
    which gevent allows only on this (the test's) thread: collect its garbage
    here rather than wherever the next collection happens to run (a server
    thread)."""
    yield
    gc.collect()


@pytest.fixture
def secured(demo_repository: Path, tmp_path: Path) -> Any:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                INFER_TOKEN: {"name": "inferrer", "roles": ["infer"]},
                ADMIN_TOKEN: {"name": "operator", "roles": ["admin"]},
                NOROLE_TOKEN: {"name": "reader", "roles": []},
            }
        )
    )
    server = start_http_server(demo_repository, auth_tokens_file=tokens)
    yield server
    server.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("method", "path", "body", "token", "status"),
    [
        ("GET", "/v2/health/live", None, None, 200),
        ("GET", "/v2/health/ready", None, None, 200),
        ("GET", "/v2", None, None, 401),
        ("GET", "/v2", None, "not-a-token", 401),
        ("GET", "/v2", None, NOROLE_TOKEN, 200),
        ("GET", "/v2/models/digits_mlp", None, None, 401),
        ("GET", "/v2/models/digits_mlp/config", None, NOROLE_TOKEN, 200),
        ("GET", "/v2/models/stats", None, NOROLE_TOKEN, 200),
        ("POST", "/v2/models/digits_mlp/infer", PIXELS, None, 401),
        ("POST", "/v2/models/digits_mlp/infer", PIXELS, NOROLE_TOKEN, 403),
        ("POST", "/v2/models/digits_mlp/infer", PIXELS, ADMIN_TOKEN, 403),
        ("POST", "/v2/models/digits_mlp/infer", PIXELS, INFER_TOKEN, 200),
        ("POST", "/v2/repository/models/digits_mlp/unload", None, INFER_TOKEN, 403),
        ("POST", "/v2/repository/index", None, NOROLE_TOKEN, 200),
    ],
)
def test_endpoints_need_their_grpc_twins_role(
    secured: ServerThread,
    method: str,
    path: str,
    body: Any,
    token: str | None,
    status: int,
) -> None:
    headers = bearer(token) if token else {}
    got, answer_headers, answer = request(http_port(secured), method, path, body, headers)
    assert got == status, answer
    if status == 401:
        assert answer_headers.get("WWW-Authenticate") == "Bearer"
        assert (
            "token" in json.loads(answer)["error"] or "credentials" in json.loads(answer)["error"]
        )
    if status == 403:
        assert "lacks the" in json.loads(answer)["error"]


def test_tritonclient_sends_the_token_in_a_header(secured: ServerThread) -> None:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port(secured)}")
    try:
        with pytest.raises(InferenceServerException) as info:
            client.get_model_metadata("digits_mlp")
        assert "401" in str(info.value)
        pixels = httpclient.InferInput("pixels", [1, 64], "FP32")
        pixels.set_data_from_numpy(np.zeros((1, 64), np.float32))
        result = client.infer("digits_mlp", [pixels], headers=bearer(INFER_TOKEN))
        assert result.as_numpy("label").shape == (1, 1)
    finally:
        client.close()


def _get(url: str, context: ssl.SSLContext | None) -> int:
    with urllib.request.urlopen(url, context=context, timeout=10) as response:
        return int(response.status)


def test_https_with_the_grpc_certificate(
    demo_repository: Path, tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    ca = Authority("inferd test CA")
    issued = ca.issue("inferd-server", server=True)
    alice = ca.issue("alice", server=False)
    server = make_server(
        demo_repository,
        allow_http=True,
        tls_cert_file=write(tmp_path / "server.pem", issued.cert_pem),
        tls_key_file=write(tmp_path / "server.key", issued.key_pem),
        tls_client_ca_file=write(tmp_path / "ca.pem", ca.pem),
    )
    assert server.server is not None
    port = server.server.http_port
    trusting = ssl.create_default_context(cadata=ca.pem.decode())
    # Mutual TLS: no client certificate, no handshake.
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        _get(f"https://127.0.0.1:{port}/v2/health/live", trusting)
    with_cert = ssl.create_default_context(cadata=ca.pem.decode())
    write(tmp_path / "alice.pem", alice.cert_pem)
    write(tmp_path / "alice.key", alice.key_pem)
    with_cert.load_cert_chain(tmp_path / "alice.pem", tmp_path / "alice.key")
    assert _get(f"https://127.0.0.1:{port}/v2/health/live", with_cert) == 200
    # Plaintext HTTP on the TLS port gets no answer.
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        _get(f"http://127.0.0.1:{port}/v2/health/live", None)


def test_openapi_document_matches_the_served_routes(demo_repository: Path) -> None:
    server = start_http_server(demo_repository)
    try:
        status, _, body = request(http_port(server), "GET", "/v2/openapi.json")
        assert status == 200
        doc = json.loads(body)
        assert doc["openapi"].startswith("3.")
        documented = {
            (method.upper(), path) for path, item in doc["paths"].items() for method in item
        }
        assert server.server is not None and server.server.http is not None
        served = {
            (route.method, route.resource.canonical)
            for route in server.server.http.app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        }
        assert documented == served
        # Every documented path answers something other than "no such route".
        for method, path in sorted(documented):
            concrete = path.replace("{model}", "digits_mlp").replace("{version}", "1")
            got, _, answer = request(http_port(server), method, concrete, None)
            assert got != 404 and got != 405, (method, path, answer)
    finally:
        server.stop()
