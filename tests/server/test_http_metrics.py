"""The request-level metric families say which front end answered: one real
server with gRPC and HTTP/REST on, scraped after traffic on both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import ServerThread
from http_helpers import all_types_model, http_port, request
from metrics_scrape import scrape, value

from inferd.clients import InferenceClient, InferenceServerError

GOOD = np.ones((1, 3), np.float32)


def test_requests_are_counted_per_protocol_and_code(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    repo = tmp_path / "models"
    all_types_model(repo / "m" / "1" / "model.onnx", ("FP32",))
    server = make_server(repo, allow_http=True, http_port=0, metrics_port=0, triton_metrics=True)
    assert server.server is not None

    with InferenceClient(server.address) as client:
        for _ in range(2):
            client.infer("m", {"in_FP32": GOOD})
        with pytest.raises(InferenceServerError) as caught:
            client.infer("m", {"in_FP32": np.ones((1, 4), np.float32)})  # wrong shape
        assert caught.value.code.name == "INVALID_ARGUMENT"

    doc = {"inputs": [{"name": "in_FP32", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    status, _, body = request(http_port(server), "POST", "/v2/models/m/infer", doc)
    assert status == 200, body
    # A model that does not exist: the unrouted path, labelled too.
    status, _, body = request(http_port(server), "POST", "/v2/models/nope/infer", doc)
    assert status == 404, body

    families = scrape(server.server.metrics_port)

    def count(**labels: str) -> float:
        return value(families, "inferd_requests_total", **labels)

    def timed(**labels: str) -> float:
        return value(families, "inferd_request_duration_seconds_count", **labels)

    m = {"model": "m", "version": "1"}
    unknown = {"model": "_unknown", "version": ""}
    for get in (count, timed):
        assert get(**m, code="OK", protocol="grpc") == 2
        assert get(**m, code="INVALID_ARGUMENT", protocol="grpc") == 1
        assert get(**m, code="OK", protocol="http") == 1
        assert get(**unknown, code="NOT_FOUND", protocol="http") == 1
        assert get(protocol="grpc") == 3
        assert get(protocol="http") == 2
        assert get() == 5  # no series without a protocol
    assert count(**unknown, protocol="grpc") == 0
    # Triton's families keep Triton's labels: they count both front ends together.
    assert value(families, "nv_inference_request_success", model="m") == 3
    labelled = {
        f.name.removesuffix("_created")
        for f in families
        for s in f.samples
        if "protocol" in s.labels
    }
    assert labelled == {"inferd_requests", "inferd_request_duration_seconds"}
