"""The checked-in stubs are exactly what protos/ generates, and the wire
contract keeps the published names."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferd.protos import generate, grpc_service_pb2, model_config_pb2
from inferd.protos.inferd.ext.v1 import metadata_pb2


def test_stubs_match_protos() -> None:
    assert generate.check() == [], "run: python -m inferd.protos.generate"


def test_another_grpcio_tools_is_named_rather_than_diffed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(generate, "tools_version", lambda: "0.0.1")
    with pytest.raises(SystemExit, match=rf"0\.0\.1 .*grpcio-tools=={generate.GRPCIO_TOOLS}"):
        generate.generate(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_service_and_method_paths_match_the_protocol() -> None:
    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    methods = {m.name for m in service.methods}
    assert {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelStreamInfer",
        "ModelConfig",
        "ModelStatistics",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    } <= methods


def test_key_field_numbers() -> None:
    # A few numbers clients depend on; a renumbering here breaks every client.
    req = grpc_service_pb2.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert req["raw_input_contents"].number == 7
    assert req["outputs"].number == 6
    resp = grpc_service_pb2.ModelInferResponse.DESCRIPTOR.fields_by_name
    assert resp["raw_output_contents"].number == 6
    cfg = model_config_pb2.ModelConfig.DESCRIPTOR.fields_by_name
    assert cfg["dynamic_batching"].number == 11
    assert cfg["max_batch_size"].number == 4
    # inferd's additions live in a package of their own, far above upstream numbers.
    meta = grpc_service_pb2.ModelMetadataResponse.DESCRIPTOR.fields_by_name
    assert set(meta) == {"name", "versions", "platform", "inputs", "outputs"}
    card = metadata_pb2.ModelMetadataExtension.DESCRIPTOR.fields_by_name
    assert card["properties"].number == 1000
