"""The model card on the wire: ``ModelMetadataResponse`` plus inferd's extension.

``inference.ModelMetadataResponse`` has no room for the card without changing
the descriptor tritonclient also registers, so the card travels in
``inferd.ext.v1.ModelMetadataExtension`` (field 1000), encoded after the
response's own fields. Protobuf merges concatenated encodings: inferd's client
reads the same bytes with both messages, and other clients keep the field as an
unknown one and ignore it.
"""

from __future__ import annotations

from collections.abc import Mapping

from inferd.protos import grpc_service_pb2 as pb
from inferd.protos.inferd.ext.v1.metadata_pb2 import ModelMetadataExtension


def with_model_card(
    response: pb.ModelMetadataResponse, card: Mapping[str, str]
) -> pb.ModelMetadataResponse:
    """``response`` with ``card`` appended; it is serialized with the response's
    unknown fields, which is where merging the extension's encoding puts it."""
    response.MergeFromString(ModelMetadataExtension(properties=card).SerializeToString())
    return response


def model_card(response: pb.ModelMetadataResponse) -> dict[str, str]:
    """The card carried by a received ``response`` (empty when it has none)."""
    extension = ModelMetadataExtension.FromString(response.SerializeToString())
    return dict(extension.properties)
