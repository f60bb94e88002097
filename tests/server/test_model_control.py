"""Model control modes and hot reload, end to end on a live server:
RepositoryModelLoad / RepositoryModelUnload (explicit), repository polling
(poll), and what a failed load must leave alone."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import ServerThread
from lifecycle_models import (
    PRINCIPAL_HEADER,
    Hammer,
    HeaderIdentity,
    X,
    audit,
    broken,
    plus,
    version_of,
    wait_for,
    write_config,
)

from inferd.clients import InferenceClient, InferenceServerError

MakeServer = Callable[..., ServerThread]
LATEST_2 = "version_policy { latest { num_versions: 2 } }"
LATEST_1 = ""


def served(client: InferenceClient, name: str = "plus", version: str = "") -> int:
    result = client.infer(name, {"x": X}, version=version, timeout=30)
    v = version_of(X, result["y"])
    assert result.model_version == str(v)
    return v


def index(client: InferenceClient) -> dict[tuple[str, str], tuple[str, str]]:
    return {(m["name"], m["version"]): (m["state"], m["reason"]) for m in client.repository_index()}


# --- explicit mode ---------------------------------------------------------------------


def test_explicit_mode_loads_on_request_and_unloads(
    tmp_path: Path, make_server: MakeServer
) -> None:
    plus(tmp_path / "plus" / "1" / "model.onnx", 1)
    write_config(tmp_path, "plus", LATEST_1)
    plus(tmp_path / "other" / "1" / "model.onnx", 1)
    write_config(tmp_path, "other", LATEST_1)
    server = make_server(
        tmp_path,
        model_control_mode="explicit",
        load_models=("other",),
        interceptors=[HeaderIdentity()],
    )
    with InferenceClient(server.address, metadata=[(PRINCIPAL_HEADER, "ops")]) as client:
        assert index(client)[("plus", "")] == ("UNAVAILABLE", "not loaded")
        assert served(client, "other") == 1
        assert client.is_server_ready()  # models never asked for do not count
        with pytest.raises(InferenceServerError) as info:
            client.infer("plus", {"x": X})
        assert info.value.code == grpc.StatusCode.NOT_FOUND

        client.load_model("plus")
        assert served(client) == 1
        assert index(client)[("plus", "1")] == ("READY", "")

        client.unload_model("plus")
        assert not client.is_model_ready("plus")
        assert index(client)[("plus", "")] == ("UNAVAILABLE", "unloaded")
        assert client.is_server_ready()  # unloaded on request: not expected to be ready
        with pytest.raises(InferenceServerError) as info:
            client.infer("plus", {"x": X})
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        client.unload_model("plus")  # idempotent, as Triton's

        with pytest.raises(InferenceServerError) as info:
            client.load_model("no_such_model")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(InferenceServerError) as info:
            client.unload_model("no_such_model")
        assert info.value.code == grpc.StatusCode.NOT_FOUND
        client.load_model("plus")
        assert served(client) == 1

    actions = [(e["principal"], e["action"], e["model"]) for e in audit(server)]
    assert actions == [
        ("ops", "load", "plus"),
        ("ops", "unload", "plus"),
        ("ops", "unload", "plus"),
        ("ops", "load", "plus"),
    ]


def test_explicit_mode_star_loads_everything(tmp_path: Path, make_server: MakeServer) -> None:
    for name in ("a", "b"):
        plus(tmp_path / name / "1" / "model.onnx", 1)
    server = make_server(tmp_path, model_control_mode="explicit", load_models=("*",))
    with InferenceClient(server.address) as client:
        assert served(client, "a") == served(client, "b") == 1


def test_new_version_takes_over_atomically_under_load(
    tmp_path: Path, make_server: MakeServer
) -> None:
    """Hot reload: v2 loads and warms beside v1, takes every new request at
    once, and v1 drains what it admitted: nothing fails, nothing is lost."""
    plus(tmp_path / "plus" / "1" / "model.onnx", 1)
    write_config(tmp_path, "plus", LATEST_1)
    server = make_server(tmp_path, model_control_mode="explicit", load_models=("plus",))
    with Hammer(server.address) as hammer, InferenceClient(server.address) as client:
        plus(tmp_path / "plus" / "2" / "model.onnx", 2)
        client.load_model("plus")
        switched_at = len(hammer.versions)
        wait_for(lambda: len(hammer.versions) > switched_at + 50)
    assert hammer.failures == []
    assert hammer.sent == hammer.answered
    assert set(hammer.versions) == {1, 2}
    # Atomic: once v2 answered, v1 never did again.
    first_v2 = hammer.versions.index(2)
    # Requests admitted before the switch may still finish on v1, at most one per thread.
    assert hammer.versions[first_v2:].count(1) <= 4
    with InferenceClient(server.address) as client:
        assert served(client) == 2
        assert [m["version"] for m in client.repository_index()] == ["2"]


def test_unchanged_versions_stay_loaded_on_reload(tmp_path: Path, make_server: MakeServer) -> None:
    plus(tmp_path / "plus" / "1" / "model.onnx", 1)
    write_config(tmp_path, "plus", LATEST_2)
    server = make_server(tmp_path, model_control_mode="explicit", load_models=("plus",))
    assert server.server is not None
    before = server.server.models.get("plus", 1)
    with InferenceClient(server.address) as client:
        served(client)
        plus(tmp_path / "plus" / "2" / "model.onnx", 2)
        client.load_model("plus")
        assert server.server.models.get("plus", 1) is before  # not reloaded
        (v1,) = client.model_statistics("plus", "1")["model_stats"]
        assert v1["inference_count"] == 2  # its statistics carry on
        plus(tmp_path / "plus" / "1" / "model.onnx", 10)  # v1 rewritten in place
        client.load_model("plus")
        assert server.server.models.get("plus", 1) is not before
        assert version_of(X, client.infer("plus", {"x": X}, version="1")["y"]) == 10


@pytest.mark.parametrize(
    ("policy", "serving"),
    [(LATEST_1, [1]), (LATEST_2, [1, 2])],
    ids=["latest-1", "latest-2"],
)
def test_failed_load_leaves_the_serving_versions_untouched(
    tmp_path: Path, make_server: MakeServer, policy: str, serving: list[int]
) -> None:
    for v in serving:
        plus(tmp_path / "plus" / str(v) / "model.onnx", v)
    write_config(tmp_path, "plus", policy)
    server = make_server(tmp_path, model_control_mode="explicit", load_models=("plus",))
    bad = max(serving) + 1
    with Hammer(server.address) as hammer, InferenceClient(server.address) as client:
        broken(tmp_path / "plus" / str(bad) / "model.onnx")
        with pytest.raises(InferenceServerError) as info:
            client.load_model("plus")
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert f"version {bad}" in info.value.details
        assert str(tmp_path) not in info.value.details
        # Every version that served still serves; the new one is reported.
        rows = index(client)
        assert [int(v) for (n, v), (s, _) in rows.items() if s == "READY"] == serving
        assert rows[("plus", str(bad))][0] == "UNAVAILABLE"
        assert "could not be loaded" in rows[("plus", str(bad))][1]
        for v in serving:
            assert served(client, version=str(v)) == v
        assert served(client) == max(serving)
    assert hammer.failures == []
    assert set(hammer.versions) == {max(serving)}
    actions = [(e["action"], sorted(e["after"].get("failed", {}))) for e in audit(server)]
    assert actions == [("load", [str(bad)])]


def test_model_that_never_loaded_is_reported(tmp_path: Path, make_server: MakeServer) -> None:
    broken(tmp_path / "bad" / "1" / "model.onnx")
    server = make_server(tmp_path, model_control_mode="explicit")
    with InferenceClient(server.address) as client:
        with pytest.raises(InferenceServerError) as info:
            client.load_model("bad")
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "failed to load: version 1: " in info.value.details
    assert [e["action"] for e in audit(server)] == ["load_failed"]


# --- poll mode -------------------------------------------------------------------------


def test_poll_mode_follows_the_repository(tmp_path: Path, make_server: MakeServer) -> None:
    plus(tmp_path / "plus" / "1" / "model.onnx", 1)
    write_config(tmp_path, "plus", LATEST_1)
    server = make_server(tmp_path, model_control_mode="poll", repository_poll_s=0.1)
    with InferenceClient(server.address) as client:
        assert served(client) == 1
        with pytest.raises(InferenceServerError) as info:
            client.load_model("plus")
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "'poll'" in info.value.details

        plus(tmp_path / "plus" / "2" / "model.onnx", 2)  # a new version
        wait_for(lambda: served(client) == 2)
        broken(tmp_path / "plus" / "3" / "model.onnx")  # a broken one: v2 keeps serving
        wait_for(lambda: index(client).get(("plus", "3"), ("",))[0] == "UNAVAILABLE")
        assert served(client) == 2
        shutil.rmtree(tmp_path / "plus" / "3")
        plus(tmp_path / "new" / "1" / "model.onnx", 1)  # a new model
        wait_for(lambda: client.is_model_ready("new"))
        shutil.rmtree(tmp_path / "new")  # a removed model
        wait_for(lambda: not client.is_model_ready("new"))
        assert served(client) == 2

    entries = audit(server)
    assert {e["principal"] for e in entries} == {"system:repository-poller"}
    assert [(e["action"], e["model"]) for e in entries][:2] == [
        ("reload", "plus"),
        ("reload", "plus"),
    ]
    assert ("unload", "new") in [(e["action"], e["model"]) for e in entries]


def test_unknown_model_control_mode_is_a_startup_error(tmp_path: Path) -> None:
    from inferd.server.app import InferdServer, ServerConfig, StartupError

    with pytest.raises(StartupError, match="model_control_mode 'sometimes'"):
        InferdServer(ServerConfig(model_repository=tmp_path, model_control_mode="sometimes"))
    with pytest.raises(StartupError, match="repository_poll_s 0 must be a positive number"):
        InferdServer(ServerConfig(model_repository=tmp_path, repository_poll_s=0))


def test_models_about_to_load_keep_the_server_unready(tmp_path: Path) -> None:
    """Between binding and loading, ServerReady must not be vacuously true."""
    from inferd.server.models import ModelManager
    from inferd.server.repository import ModelRepository

    plus(tmp_path / "a" / "1" / "model.onnx", 1)
    manager = ModelManager(ModelRepository(tmp_path))
    assert manager.all_ready  # nothing expected, nothing missing
    manager.expect(["a"])
    assert not manager.all_ready
    assert manager.index() == [("a", "", "LOADING", "")]


def test_unload_accepts_tritons_unload_dependents(tmp_path: Path, make_server: MakeServer) -> None:
    from inferd.protos import grpc_service_pb2 as pb
    from inferd.protos import grpc_service_pb2_grpc as pb_grpc

    plus(tmp_path / "plus" / "1" / "model.onnx", 1)
    server = make_server(tmp_path, model_control_mode="explicit", load_models=("plus",))
    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        flag = pb.ModelRepositoryParameter(bool_param=True)
        stub.RepositoryModelUnload(
            pb.RepositoryModelUnloadRequest(
                model_name="plus", parameters={"unload_dependents": flag}
            ),
            timeout=30,
        )
        with pytest.raises(grpc.RpcError) as info:
            stub.RepositoryModelUnload(
                pb.RepositoryModelUnloadRequest(model_name="plus", parameters={"other": flag}),
                timeout=30,
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with InferenceClient(server.address) as client:
        assert not client.is_model_ready("plus")
