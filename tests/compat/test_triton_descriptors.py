"""Our ``inference`` protos against the ones the test extra's tritonclient registers.

tritonclient 2.41.0 (pinned for its perf_analyzer) predates fields Triton added
since, so a single descriptor cannot equal both it and the newest release: ours
equal the newest byte for byte (test_newest_tritonclient.py imports both into
one process), and here are checked to be 2.41.0's, unchanged, plus exactly
those later upstream additions. An inferd field or message in the ``inference``
package would show up as an unexpected addition.

2.41.0's descriptors are read from its module source, not imported: it cannot
share this process's descriptor pool with ours.
"""

from __future__ import annotations

import ast
import importlib.metadata
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

from inferd.protos import grpc_service_pb2, model_config_pb2

PINNED = "2.41.0"

#: What Triton added to the protocol files after tritonclient 2.41.0 (as of
#: 2.73.0): whole messages, or fields of messages 2.41.0 already had.
UPSTREAM_ADDITIONS = {
    "grpc_service.proto": {
        "inference.InferResponseStatistics",
        "inference.ModelStatistics.ResponseStatsEntry",
        "inference.ModelStatistics.response_stats",
    },
    "model_config.proto": {
        "inference.ModelConfig.model_metrics",
        "inference.ModelConfig.runtime",
        "inference.ModelEnsembling.max_inflight_requests",
        "inference.ModelInput.is_non_linear_format_io",
        "inference.ModelMetrics",
        "inference.ModelOutput.is_non_linear_format_io",
    },
}

#: Our stub module and the module tritonclient.grpc registers the same file in.
FILES = {
    "grpc_service.proto": (grpc_service_pb2, "service_pb2.py"),
    "model_config.proto": (model_config_pb2, "model_config_pb2.py"),
}


def _serialized_file(source: str) -> bytes:
    """The argument of the module's ``AddSerializedFile(b"...")`` call."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            value = node.args[0]
            assert isinstance(value, ast.Constant) and isinstance(value.value, bytes)
            return value.value
    raise AssertionError("no AddSerializedFile call")


def _theirs(module_file: str) -> descriptor_pb2.FileDescriptorProto:
    try:
        dist = importlib.metadata.distribution("tritonclient")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tritonclient is not installed (pip install '.[test]')")
    assert dist.version == PINNED, f"UPSTREAM_ADDITIONS lists what came after {PINNED}"
    source = dist.locate_file(f"tritonclient/grpc/{module_file}").read_text()
    return descriptor_pb2.FileDescriptorProto.FromString(_serialized_file(source))


def _ours(module: ModuleType) -> descriptor_pb2.FileDescriptorProto:
    return descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)


def _elements(file: descriptor_pb2.FileDescriptorProto) -> dict[str, bytes]:
    """Every message, field, enum, enum value and method by full name, each
    serialized without its children (so an added field changes only itself)."""
    out: dict[str, bytes] = {}

    def enum(prefix: str, proto: descriptor_pb2.EnumDescriptorProto) -> None:
        name = f"{prefix}.{proto.name}"
        for value in proto.value:
            out[f"{name}.{value.name}"] = value.SerializeToString()
        bare = descriptor_pb2.EnumDescriptorProto()
        bare.CopyFrom(proto)
        del bare.value[:]
        out[name] = bare.SerializeToString()

    def message(prefix: str, proto: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{proto.name}"
        for field in proto.field:
            out[f"{name}.{field.name}"] = field.SerializeToString()
        for nested in proto.nested_type:
            message(name, nested)
        for nested_enum in proto.enum_type:
            enum(name, nested_enum)
        bare = descriptor_pb2.DescriptorProto()
        bare.CopyFrom(proto)
        del bare.field[:], bare.nested_type[:], bare.enum_type[:]
        out[name] = bare.SerializeToString()

    for proto in file.message_type:
        message(file.package, proto)
    for top_enum in file.enum_type:
        enum(file.package, top_enum)
    for service in file.service:
        for method in service.method:
            out[f"{file.package}.{service.name}.{method.name}"] = method.SerializeToString()
    return out


@pytest.mark.parametrize("name", sorted(FILES))
def test_registered_under_tritonclients_file_name_and_package(name: str) -> None:
    module, module_file = FILES[name]
    ours, theirs = _ours(module), _theirs(module_file)
    assert (ours.name, ours.package, list(ours.dependency), ours.syntax) == (
        theirs.name,
        theirs.package,
        list(theirs.dependency),
        theirs.syntax,
    )
    assert ours.name == name


@pytest.mark.parametrize("name", sorted(FILES))
def test_tritonclient_241s_protos_plus_only_later_upstream_additions(name: str) -> None:
    module, module_file = FILES[name]
    ours, theirs = _elements(_ours(module)), _elements(_theirs(module_file))
    changed = sorted(key for key in theirs if ours.get(key) != theirs[key])
    added = {key for key in ours if key not in theirs}
    # Report an added message once, not once per field inside it.
    added_roots = {key for key in added if key.rsplit(".", 1)[0] not in added}
    assert (changed, added_roots) == ([], UPSTREAM_ADDITIONS[name])
