"""The model card travels beside ``inference.ModelMetadataResponse``, not in it."""

from __future__ import annotations

from google.protobuf import json_format

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos.inferd.ext.v1.metadata_pb2 import ModelMetadataExtension
from inferd.protos.model_card import model_card, with_model_card

CARD = {"owner": "ml", "metrics.accuracy": "0.97"}


def _response() -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name="digits",
        versions=["1", "2"],
        platform="onnxruntime_onnx",
        inputs=[tensor(name="pixels", datatype="FP32", shape=[-1, 64])],
    )


def test_the_card_survives_the_wire() -> None:
    wire = with_model_card(_response(), CARD).SerializeToString()
    assert model_card(pb.ModelMetadataResponse.FromString(wire)) == CARD


def test_a_card_appended_to_the_encoded_response_is_read() -> None:
    # What another implementation of the server may do: concatenated encodings merge.
    extension = ModelMetadataExtension(properties=CARD)
    wire = _response().SerializeToString() + extension.SerializeToString()
    received = pb.ModelMetadataResponse.FromString(wire)
    assert model_card(received) == CARD
    assert received.name == "digits" and list(received.versions) == ["1", "2"]


def test_clients_without_the_extension_see_only_the_protocol_fields() -> None:
    received = pb.ModelMetadataResponse.FromString(
        with_model_card(_response(), CARD).SerializeToString()
    )
    assert json_format.MessageToDict(received) == json_format.MessageToDict(_response())


def test_no_card_adds_nothing() -> None:
    assert with_model_card(_response(), {}).SerializeToString() == _response().SerializeToString()
    assert model_card(_response()) == {}
