"""One inference over the KServe V2 HTTP/REST protocol, with the standard
library only: inputs and outputs travel as Triton binary tensors.

For ``inferd infer --http``; programs that speak HTTP at length are better
served by ``tritonclient.http``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inferd.clients._codec import InferResult, NDArray
from inferd.protos.datatypes import (
    NUMPY_DTYPES,
    deserialize_bytes,
    serialize_bytes,
    v2_datatype,
)

HEADER_LENGTH = "Inference-Header-Content-Length"


class HttpInferenceError(Exception):
    """The server answered an error status (or could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message


def _as_wire(array: NDArray) -> tuple[str, bytes]:
    datatype = v2_datatype(array.dtype)
    if datatype == "BYTES":
        items = np.empty(array.size, dtype=object)
        items[:] = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1)]
        return datatype, serialize_bytes(items)
    return datatype, np.ascontiguousarray(array, dtype=NUMPY_DTYPES[datatype]).tobytes()


def request_body(inputs: Mapping[str, NDArray], outputs: Sequence[str] | None) -> tuple[bytes, int]:
    """The body (JSON then binary inputs) and the JSON's length."""
    entries, blobs = [], []
    for name, array in inputs.items():
        datatype, blob = _as_wire(np.asarray(array))
        entries.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(np.shape(array)),
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    doc: dict[str, Any] = {"inputs": entries, "parameters": {"binary_data_output": True}}
    if outputs:
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    header = json.dumps(doc).encode()
    return header + b"".join(blobs), len(header)


def parse_response(body: bytes, header_length: int | None) -> InferResult:
    header = body if header_length is None else body[:header_length]
    data = b"" if header_length is None else body[header_length:]
    doc = json.loads(header)
    outputs: dict[str, NDArray] = {}
    offset = 0
    for out in doc.get("outputs", []):
        shape = tuple(out["shape"])
        datatype = out["datatype"]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            array = np.asarray(out["data"], dtype=NUMPY_DTYPES[datatype])
        else:
            raw = data[offset : offset + size]
            offset += size
            if datatype == "BYTES":
                array = deserialize_bytes(raw, int(np.prod(shape)))
            else:
                array = np.frombuffer(raw, dtype=NUMPY_DTYPES[datatype])
        outputs[out["name"]] = array.reshape(shape)
    return InferResult(
        outputs,
        model_name=doc.get("model_name", ""),
        model_version=doc.get("model_version", ""),
        id=doc.get("id", ""),
        parameters=doc.get("parameters"),
    )


def infer(
    url: str,
    model: str,
    inputs: Mapping[str, NDArray],
    *,
    outputs: Sequence[str] | None = None,
    version: str = "",
    timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> InferResult:
    """POST one request to ``url`` (``host:port`` or ``http(s)://host:port``)."""
    base = url if "://" in url else f"http://{url}"
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body, length = request_body(inputs, outputs)
    request = urllib.request.Request(
        base.rstrip("/") + path,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/octet-stream",
            HEADER_LENGTH: str(length),
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout or 60) as response:
            answer = response.read()
            text = response.headers.get(HEADER_LENGTH)
    except urllib.error.HTTPError as err:
        detail = err.read()
        try:
            message = str(json.loads(detail)["error"])
        except (ValueError, KeyError, TypeError):
            message = detail.decode("utf-8", "replace")[:500] or str(err.reason)
        raise HttpInferenceError(err.code, message) from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise HttpInferenceError(0, f"cannot reach {base}: {reason}") from None
    return parse_response(answer, int(text) if text is not None else None)
