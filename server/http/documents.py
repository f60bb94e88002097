"""The JSON documents of the metadata, configuration and statistics endpoints.

Shapes follow KServe V2 and Triton's HTTP extensions; the model configuration
is the protobuf's JSON form with field names as in config.pbtxt and 64-bit
integers as numbers (protobuf's JSON writes them as strings; Triton and its
clients, perf_analyzer among them, read numbers).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from inferd.server.model_version import ModelVersion
from inferd.server.stats import Duration

_INT64 = {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64}


def _numbers(value: Any, descriptor: Any) -> Any:
    """Turn the 64-bit integers of a ``MessageToDict`` result back into numbers."""
    for key, item in value.items():
        fd = descriptor.fields_by_name.get(key)
        if fd is None:
            continue
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            vfd = fd.message_type.fields_by_name["value"]
            if vfd.message_type is not None:
                for sub in item.values():
                    _numbers(sub, vfd.message_type)
            elif vfd.cpp_type in _INT64:
                value[key] = {k: int(v) for k, v in item.items()}
        elif fd.message_type is not None:
            for sub in item if isinstance(item, list) else [item]:
                _numbers(sub, fd.message_type)
        elif fd.cpp_type in _INT64:
            value[key] = [int(v) for v in item] if isinstance(item, list) else int(item)
    return value


def message_json(message: Message) -> dict[str, Any]:
    """A protobuf message as Triton's HTTP endpoints write it."""
    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    result: dict[str, Any] = _numbers(doc, message.DESCRIPTOR)
    return result


def model_metadata(version: ModelVersion, versions: list[str]) -> dict[str, Any]:
    def tensors(infos: Any) -> list[dict[str, Any]]:
        return [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in infos.values()
        ]

    return {
        "name": version.name,
        "versions": versions,
        "platform": version.platform,
        "inputs": tensors(version.io.inputs),
        "outputs": tensors(version.io.outputs),
    }


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


def model_statistics(version: ModelVersion) -> dict[str, Any]:
    s = version.stats
    return {
        "name": version.name,
        "version": version.version_str,
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": _duration(s.success),
            "fail": _duration(s.fail),
            "queue": _duration(s.queue),
            "compute_input": _duration(s.compute_input),
            "compute_infer": _duration(s.compute_infer),
            "compute_output": _duration(s.compute_output),
            "cache_hit": _duration(s.cache_hit),
            "cache_miss": _duration(s.cache_miss),
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(b.compute_input),
                "compute_infer": _duration(b.compute_infer),
                "compute_output": _duration(b.compute_output),
            }
            for size, b in sorted(s.batches.items())
        ],
    }
