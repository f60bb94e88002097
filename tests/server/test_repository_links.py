"""Symbolic links out of the model repository are refused unless the operator
allows them, and load errors quote no file content to callers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import ServerThread
from lifecycle_models import CONFIG, X, plus, version_of

from inferd.clients import InferenceClient, InferenceServerError
from inferd.server.repository import ModelRepository, RepositoryError


def write_model(root: Path, name: str, versions: list[int]) -> None:
    """Model ``name`` whose version N answers x + N."""
    for v in versions:
        plus(root / name / str(v) / "model.onnx", v)
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text(CONFIG.format(name=name, extra=""))


def answered_by(client: InferenceClient, name: str) -> int:
    return version_of(X, client.infer(name, {"x": X})["y"])


SECRET = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


def outside(tmp_path: Path) -> Path:
    """A file outside the repository shaped like /etc/passwd."""
    secret = tmp_path / "elsewhere" / "passwd"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    return secret


def index_rows(client: InferenceClient) -> dict[tuple[str, str], tuple[str, str]]:
    return {(m["name"], m["version"]): (m["state"], m["reason"]) for m in client.repository_index()}


def test_config_linked_outside_is_refused_without_echoing_it(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    repo = tmp_path / "models"
    write_model(repo, "good", [1])
    write_model(repo, "linked", [1])
    (repo / "linked" / "config.pbtxt").unlink()
    (repo / "linked" / "config.pbtxt").symlink_to(outside(tmp_path))
    server = make_server(repo)
    with InferenceClient(server.address) as client:
        assert answered_by(client, "good") == 1
        state, reason = index_rows(client)[("linked", "")]
        assert state == "UNAVAILABLE"
        assert "resolves outside the model repository" in reason
        assert "root" not in reason and "passwd" not in reason
        with pytest.raises(InferenceServerError) as info:
            client.infer("linked", {"x": X})
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert "root" not in info.value.details


def test_allowed_link_is_read_but_its_parse_error_quotes_nothing(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    repo = tmp_path / "models"
    write_model(repo, "linked", [1])
    (repo / "linked" / "config.pbtxt").unlink()
    (repo / "linked" / "config.pbtxt").symlink_to(outside(tmp_path))
    server = make_server(repo, allow_links_outside_repository=True)
    with InferenceClient(server.address) as client:
        state, reason = index_rows(client)[("linked", "")]
        assert state == "UNAVAILABLE"
        assert "cannot parse linked/config.pbtxt line 1" in reason
        assert "root" not in reason and "daemon" not in reason and "bin" not in reason


def test_model_file_linked_outside_is_refused_unless_allowed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_model(elsewhere, "plus", [1])
    repo = tmp_path / "models"
    write_model(repo, "plus", [])
    (repo / "plus" / "1").mkdir()
    (repo / "plus" / "1" / "model.onnx").symlink_to(elsewhere / "plus" / "1" / "model.onnx")
    with pytest.raises(RepositoryError, match=r"plus/1/model.onnx resolves outside"):
        ModelRepository(repo).source("plus")
    assert list(ModelRepository(repo, allow_links_outside=True).source("plus").versions) == [1]


def test_model_directory_linked_outside_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_model(elsewhere, "plus", [1])
    repo = tmp_path / "models"
    repo.mkdir()
    (repo / "plus").symlink_to(elsewhere / "plus")
    with pytest.raises(RepositoryError, match="resolves outside"):
        ModelRepository(repo).source("plus")


def test_links_inside_the_repository_are_followed(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    # As a Kubernetes ConfigMap mount lays files out: links into a hidden
    # directory of the same volume.
    repo = tmp_path / "models"
    write_model(repo, "plus", [1])
    shared = repo / "..data"
    shared.mkdir()
    (shared / "plus.pbtxt").write_text(CONFIG.format(name="plus", extra=""))
    (repo / "plus" / "config.pbtxt").unlink()
    (repo / "plus" / "config.pbtxt").symlink_to(Path("..") / "..data" / "plus.pbtxt")
    server = make_server(repo)
    with InferenceClient(server.address) as client:
        assert answered_by(client, "plus") == 1
