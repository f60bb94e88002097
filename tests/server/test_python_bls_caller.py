"""A Python model's BLS call is part of the request whose batch made it: it
acts for that request's caller (a role-restricted callee checks the caller's
roles) and a drain lets it through, as an ensemble's steps."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import ServerThread
from lifecycle_models import plus, write_config
from python_models import BLS_CONFIG, BLS_MODEL, write_python_model

from inferd.clients import InferenceClient, InferenceServerError
from inferd.server.identity import Principal, acting_for

PLUS_TOKEN = "plus-token-0123456789abcdef"
INFER_TOKEN = "infer-token-0123456789abcdef"
X = np.array([[1.0, 2.0]], dtype=np.float32)

#: ``held_bls``: writes ``executing``, waits for ``go`` in its model
#: directory, then answers y = plus(x) through a BLS call.
HELD_CONFIG = """
name: "held_bls"
backend: "python"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
"""
HELD_MODEL = """
import time
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.directory = Path(args["model_repository"])

    def execute(self, requests):
        (self.directory / "executing").write_text("yes")
        deadline = time.monotonic() + 30
        while not (self.directory / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            answer = pb_utils.InferenceRequest(
                model_name="plus", requested_output_names=["y"],
                inputs=[pb_utils.Tensor("x", x)],
            ).exec()
            if answer.has_error():
                responses.append(pb_utils.InferenceResponse(error=answer.error()))
                continue
            y = pb_utils.get_output_tensor_by_name(answer, "y").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]))
        return responses
"""


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def test_bls_call_acts_for_the_caller(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """``plus`` allows only the 'plus' role: ``bls``'s call to it succeeds for
    a caller holding it (it was denied as anonymous) and is denied, naming
    the caller, for one without it."""
    root = tmp_path / "models"
    plus(root / "plus" / "1" / "model.onnx", 1)
    write_config(
        root,
        "plus",
        'dynamic_batching { }\nparameters { key: "allowed_roles" value { string_value: "plus" } }',
    )
    write_python_model(root, "bls", BLS_CONFIG.format(name="bls"), BLS_MODEL)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                PLUS_TOKEN: {"name": "plus-user", "roles": ["infer", "plus"]},
                INFER_TOKEN: {"name": "inferrer", "roles": ["infer"]},
            }
        )
    )
    server = make_server(root, auth_tokens_file=tokens)
    with InferenceClient(server.address, metadata=bearer(PLUS_TOKEN)) as client:
        answer = client.infer("bls", {"x": X}, timeout=30)
    np.testing.assert_array_equal(answer["z"], 2 * (X + 1))
    with (
        InferenceClient(server.address, metadata=bearer(INFER_TOKEN)) as client,
        pytest.raises(InferenceServerError) as info,
    ):
        client.infer("bls", {"x": X}, timeout=30)
    assert "'inferrer' may not use model 'plus'" in str(info.value)


def test_bls_call_of_an_admitted_request_passes_the_drain(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """A request admitted before the drain began makes its BLS call during
    the drain: the call runs (it was refused as a new request) and the
    request is answered before the server stops."""
    root = tmp_path / "models"
    plus(root / "plus" / "1" / "model.onnx", 1)
    write_config(root, "plus", "dynamic_batching { }")
    write_python_model(root, "held_bls", HELD_CONFIG, HELD_MODEL)
    server = make_server(root)
    assert server.server is not None
    held = root / "held_bls"
    stopping = threading.Thread(target=server.stop)
    with (
        InferenceClient(server.address) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        outer = pool.submit(client.infer, "held_bls", {"x": X}, timeout=30)
        deadline = time.monotonic() + 30
        while not (held / "executing").exists():
            assert time.monotonic() < deadline and not outer.done()
            time.sleep(0.01)
        stopping.start()
        while not server.server.dataplane.draining:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        (held / "go").write_text("yes")
        answer = outer.result(30)
    stopping.join(60)
    np.testing.assert_array_equal(answer["y"], X + 1)


def test_a_batch_of_callers_acts_with_the_roles_they_all_hold() -> None:
    alice = Principal("alice", frozenset({"infer", "plus", "admin"}))
    bob = Principal("bob", frozenset({"infer", "plus"}))
    assert acting_for([alice, alice]) is alice
    both = acting_for([alice, bob, alice])
    assert both == Principal("alice and bob", frozenset({"infer", "plus"}))
    many = [Principal(f"p{i}", frozenset({"infer"})) for i in range(5)]
    assert acting_for(many) == Principal("5 callers", frozenset({"infer"}))
