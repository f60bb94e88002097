"""Make the calls a test lists with stock ``tritonclient.grpc`` and print what
each answered, as JSON.

    echo '{"url": "HOST:PORT", "calls": [...]}' | python tritonclient_calls.py

A child process, because ``tritonclient`` and inferd's ``protos`` register the
same ``inference.*`` protobuf symbols and cannot share one. Each call is
``{"kind": ..., ...}``; each answer is ``{"error": {"status", "message"}}`` when
tritonclient raised, otherwise what the kind returns (see ``call``). Tensors
travel as ``{"datatype", "shape", "data"}`` with ``data`` flat (BYTES as text).
"""

from __future__ import annotations

import json
import queue
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

TIMEOUT_S = 30.0


def _tensor(array: np.ndarray) -> dict[str, Any]:
    if array.dtype == object:
        data = [v.decode("utf-8") if isinstance(v, bytes) else v for v in array.ravel()]
    else:
        data = array.ravel().tolist()
    return {"shape": list(array.shape), "data": data}


def _inputs(spec: dict[str, dict[str, Any]]) -> list[grpcclient.InferInput]:
    inputs = []
    for name, t in spec.items():
        array = np.array(t["data"], dtype=t["dtype"]).reshape(t["shape"])
        tensor = grpcclient.InferInput(name, list(array.shape), t["datatype"])
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def _outputs(spec: list[dict[str, Any]]) -> list[grpcclient.InferRequestedOutput] | None:
    requested = [
        grpcclient.InferRequestedOutput(o["name"], class_count=o.get("class_count", 0))
        for o in spec
    ]
    return requested or None


def _result(result: grpcclient.InferResult) -> dict[str, Any]:
    response = result.get_response()
    outputs = {
        o.name: {"datatype": o.datatype, **_tensor(result.as_numpy(o.name))}
        for o in response.outputs
    }
    parameters = {
        key: getattr(value, value.WhichOneof("parameter_choice"))
        for key, value in response.parameters.items()
    }
    return {"outputs": outputs, "parameters": parameters, "id": response.id}


def call(client: grpcclient.InferenceServerClient, c: dict[str, Any]) -> Any:
    kind = c["kind"]
    if kind == "infer":
        result = client.infer(
            c["model"],
            _inputs(c["inputs"]),
            outputs=_outputs(c.get("outputs", [])),
            client_timeout=TIMEOUT_S,
        )
        return _result(result)
    if kind == "stream":
        answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            for i, inputs in enumerate(c["requests"]):
                client.async_stream_infer(
                    c["model"],
                    _inputs(inputs),
                    request_id=str(i),
                    enable_empty_final_response=c.get("enable_empty_final_response", False),
                )
            seen = []
            for _ in c["requests"]:
                result, error = answers.get(timeout=TIMEOUT_S)
                if error is not None:
                    seen.append({"error": {"message": error.message()}})
                else:
                    seen.append(_result(result))
        finally:
            client.stop_stream()
        # Anything after the answers (an extra empty response) would show here.
        seen.extend({"extra": True} for _ in range(answers.qsize()))
        return seen
    if kind == "server_ready":
        return client.is_server_ready()
    if kind == "model_ready":
        return client.is_model_ready(c["model"])
    if kind == "server_metadata":
        return client.get_server_metadata(as_json=True)
    if kind == "model_metadata":
        return client.get_model_metadata(c["model"], as_json=True)
    if kind == "model_config":
        return client.get_model_config(c["model"], as_json=True)["config"]
    if kind == "repository_index":
        return client.get_model_repository_index(as_json=True).get("models", [])
    raise ValueError(f"unknown call kind {kind!r}")


def main() -> None:
    plan = json.load(sys.stdin)
    client = grpcclient.InferenceServerClient(plan["url"])
    answers = []
    for c in plan["calls"]:
        try:
            answers.append(call(client, c))
        except InferenceServerException as exc:
            answers.append({"error": {"status": exc.status(), "message": exc.message()}})
    client.close()
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
