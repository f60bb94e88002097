"""The data plane on its own: one inference against a real model manager,
with no gRPC server, no protobuf request and no client."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

import inferd.server.dataplane as dataplane_module
from inferd.server.dataplane import Answer, DataPlane
from inferd.server.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from inferd.server.model_io import ModelIO
from inferd.server.models import ModelManager
from inferd.server.repository import ModelRepository
from inferd.server.request import InferRequest

MODEL = "digits_mlp"


def digits(io: ModelIO, **parameters: int) -> InferRequest:
    """What a front end's decode callback returns: numpy for the routed version."""
    assert "pixels" in io.inputs  # the version's IO reaches the callback
    return InferRequest(
        inputs={"pixels": np.ones((2, 64), np.float32)},
        outputs=(),
        rows=2,
        parameters=dict(parameters),
    )


@pytest.fixture
async def manager(demo_repository: Path) -> AsyncIterator[ModelManager]:
    models = ModelManager(ModelRepository(demo_repository))
    await models.load(MODEL)
    yield models
    await models.close()


async def test_answers_with_the_outputs_and_the_version(manager: ModelManager) -> None:
    plane = DataPlane(manager)
    answer = await plane.infer(MODEL, "", digits, request_id="r1")
    assert answer.version is manager.resolve(MODEL)
    assert answer.outputs["probabilities"].shape == (2, 10)
    assert answer.request.rows == 2
    assert (plane.inflight, plane.admitted) == (0, 1)


async def test_the_request_is_counted_in_statistics(manager: ModelManager) -> None:
    plane = DataPlane(manager)
    stats = manager.resolve(MODEL).stats
    await plane.infer(MODEL, "1", digits)  # an explicit version
    assert (stats.success.count, stats.inference_count, stats.fail.count) == (1, 2, 0)
    with pytest.raises(DeadlineExceeded):
        await plane.infer(MODEL, "", digits, deadline=time.monotonic() - 1)
    assert (stats.success.count, stats.fail.count) == (1, 1)


async def test_an_expired_deadline_is_refused_on_arrival(manager: ModelManager) -> None:
    plane = DataPlane(manager)
    submitted: list[InferRequest] = []
    version = manager.resolve(MODEL)
    original = version.scheduler.submit

    async def spy(request: InferRequest) -> dict[str, np.ndarray]:
        submitted.append(request)
        return await original(request)

    version.scheduler.submit = spy  # type: ignore[method-assign]
    with pytest.raises(DeadlineExceeded, match="expired on arrival"):
        await plane.infer(MODEL, "", digits, deadline=time.monotonic() - 0.001)
    assert submitted == []  # never reached the scheduler
    # The front end's deadline and Triton's timeout parameter: the earlier wins.
    before = time.monotonic()
    await plane.infer(MODEL, "", lambda io: digits(io, timeout=60_000_000), deadline=before + 30.0)
    assert submitted[-1].deadline == pytest.approx(before + 30.0)
    await plane.infer(MODEL, "", lambda io: digits(io, timeout=5_000_000), deadline=before + 30.0)
    deadline = submitted[-1].deadline
    assert deadline is not None and before + 5.0 <= deadline < before + 6.0
    with pytest.raises(InvalidArgument, match="timeout"):
        await plane.infer(MODEL, "", lambda io: digits(io, timeout=-1))


async def test_unknown_model_is_not_found(manager: ModelManager) -> None:
    plane = DataPlane(manager)
    decoded: list[ModelIO] = []

    def decode(io: ModelIO) -> InferRequest:
        decoded.append(io)
        return digits(io)

    with pytest.raises(NotFound):
        await plane.infer("no_such_model", "", decode)
    with pytest.raises(NotFound):
        await plane.infer(MODEL, "7", decode)  # a version that does not exist
    assert decoded == []
    assert (plane.inflight, plane.admitted) == (0, 0)


async def admit_held(
    plane: DataPlane, manager: ModelManager
) -> tuple[asyncio.Event, asyncio.Task[Answer]]:
    """One request admitted and held in the scheduler until the event is set."""
    version = manager.resolve(MODEL)
    gate = asyncio.Event()
    original = version.scheduler.submit

    async def held(request: InferRequest) -> dict[str, np.ndarray]:
        await gate.wait()
        return await original(request)

    version.scheduler.submit = held  # type: ignore[method-assign]
    admitted = asyncio.create_task(plane.infer(MODEL, "", digits))
    while plane.inflight == 0:
        await asyncio.sleep(0)
    return gate, admitted


async def test_drain_refuses_new_work_while_an_admitted_request_completes(
    manager: ModelManager,
) -> None:
    plane = DataPlane(manager)
    gate, admitted = await admit_held(plane, manager)
    drained = asyncio.create_task(plane.drain(timeout=30.0))
    await asyncio.sleep(0.05)
    assert not drained.done()  # waits for the admitted request
    with pytest.raises(Unavailable, match="shutting down"):
        await plane.infer(MODEL, "", digits)
    gate.set()
    answer = await admitted
    assert answer.outputs["probabilities"].shape == (2, 10)
    assert await drained is True
    assert (plane.inflight, plane.admitted) == (0, 1)  # the refused one was never admitted


async def test_drain_gives_up_after_its_timeout(manager: ModelManager) -> None:
    plane = DataPlane(manager)
    gate, admitted = await admit_held(plane, manager)
    assert await plane.drain(timeout=0.05) is False
    gate.set()
    await admitted


def test_the_data_plane_imports_neither_grpc_nor_protobuf() -> None:
    source = Path(dataplane_module.__file__).read_text()
    imported: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
    assert "inferd.server.routing" in imported  # the walk sees the imports
    transport = [
        name
        for name in imported
        if name.split(".")[0] == "grpc"
        or name.startswith(("google.protobuf", "inferd.protos", "inferd.server.grpc"))
        or name == "inferd.server.codec"
    ]
    assert transport == []


def test_importing_the_data_plane_loads_no_grpc() -> None:
    """Domain errors carry a transport-neutral status, so nothing on the data
    plane's side of the edge pulls grpcio in."""
    probe = (
        "import sys, inferd.server.dataplane; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'grpc'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


async def test_held_refusals_hold_grpc_callers_only(manager: ModelManager) -> None:
    """At shutdown gRPC refusals wait for the transport's GOAWAY; an HTTP caller
    has no GOAWAY to wait for and must get its 503 at once (a held HTTP refusal
    would only be cut off when the HTTP site closes)."""
    plane = DataPlane(manager)
    plane.draining = True
    plane.hold_refusals()
    with pytest.raises(Unavailable, match="shutting down"):
        await asyncio.wait_for(plane.infer(MODEL, "", digits, protocol="http"), 5)
    held = asyncio.create_task(plane.infer(MODEL, "", digits, protocol="grpc"))
    while plane.refusals_waiting == 0:
        await asyncio.sleep(0.001)
    assert not held.done()
    plane.release_refusals()
    with pytest.raises(Unavailable, match="shutting down"):
        await held
