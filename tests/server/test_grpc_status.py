"""Domain statuses and their gRPC codes: the edge's one mapping."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from inferd.server import errors
from inferd.server.errors import InferdError, Status
from inferd.server.grpc.rpc import GRPC_CODES, code_of, grpc_status


def test_every_status_has_the_grpc_code_of_its_name_and_number() -> None:
    for status in Status:
        code = GRPC_CODES[status]
        assert (code.name, code.value[0]) == (status.name, status.value)


@pytest.mark.parametrize(
    "error",
    [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, InferdError)
    ],
)
def test_each_domain_error_maps_to_its_status(error: type[InferdError]) -> None:
    exc = error("why")
    assert grpc_status(exc) == (grpc.StatusCode[error.code.name], "why")
    assert code_of(exc) is grpc.StatusCode[error.code.name]


def test_other_exceptions_hide_their_text() -> None:
    assert grpc_status(RuntimeError("/secret/path")) == (
        grpc.StatusCode.INTERNAL,
        "internal error while serving the request",
    )
    assert code_of(asyncio.CancelledError()) is grpc.StatusCode.CANCELLED
