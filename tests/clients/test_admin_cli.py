"""``inferd models`` verbs against a live server in explicit model control
mode: list, load, unload, stage, route, promote, rollback, audit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerThread
from lifecycle_models import PRINCIPAL_HEADER, HeaderIdentity, rollout_repository

from inferd.clients.cli import models_main
from inferd.server.cli import main as inferd_main

MakeServer = Callable[..., ServerThread]


@pytest.fixture
def url(tmp_path: Path, make_server: MakeServer) -> str:
    repo = rollout_repository(tmp_path / "models")
    server = make_server(
        repo, model_control_mode="explicit", load_models=("plus",), interceptors=[HeaderIdentity()]
    )
    return server.address


def run(
    capsys: pytest.CaptureFixture[str], url: str, *argv: str, status: int = 0
) -> tuple[str, str]:
    verb, rest = argv[0], argv[1:]
    args = [verb, "--url", url, "-H", f"{PRINCIPAL_HEADER}=cli-user", *rest]
    assert models_main(args) == status
    captured = capsys.readouterr()
    return captured.out, captured.err


def as_json(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> Any:
    out, _ = run(capsys, url, *argv, "--json")
    return json.loads(out)


def test_models_verbs_end_to_end(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Plain `inferd models` still lists.
    assert models_main(["--url", url]) == 0
    assert "plus" in capsys.readouterr().out
    listed = as_json(capsys, url, "list", "--ready")
    assert [(m["name"], m["version"]) for m in listed] == [("plus", "1")]

    out, _ = run(capsys, url, "unload", "plus")
    assert "unloaded plus" in out
    out, _ = run(capsys, url, "load", "plus")
    assert "loaded plus" in out

    route = as_json(capsys, url, "stage", "plus", "2", "staging", "--reason", "candidate")
    assert route[0]["serving"] == 1
    (route,) = as_json(
        capsys, url, "route", "plus", "--challenger", "2", "--weight", "0.25",
        "--max-error-ratio", "0.1", "--window", "30", "--min-requests", "5",
    )  # fmt: skip
    assert (route["champion"], route["challenger"], route["weight"]) == (1, 2, 0.25)
    assert route["guardrails"]["max_error_ratio"] == 0.1
    assert route["guardrails"]["window_seconds"] == 30

    out, _ = run(capsys, url, "route")
    assert "plus  champion 1  challenger 2 (canary 25%)" in out
    assert "stages: 1 production (ready), 2 staging (ready)" in out
    assert "VARIANT" in out and "champion" in out

    out, _ = run(capsys, url, "promote", "plus")
    assert "plus  champion 2" in out and "previous champions: [1]" in out
    out, _ = run(capsys, url, "rollback", "plus", "--reason", "drill")
    assert "plus  champion 1" in out

    entries = as_json(capsys, url, "audit", "plus")
    assert [e["action"] for e in entries][::-1] == [
        "unload",
        "load",
        "set_stage:staging",
        "set_route",
        "promote",
        "rollback",
    ]
    assert {e["principal"] for e in entries} == {"cli-user"}
    assert entries[0]["reason"] == "drill"
    out, _ = run(capsys, url, "audit", "--limit", "2")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "TIME", "PRINCIPAL", "ACTION", "MODEL", "REASON"]
    assert len(lines) == 3 and "rollback" in lines[1]


def test_refusals_exit_1_and_bad_arguments_exit_2(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, err = run(capsys, url, "promote", "plus", "7", status=1)
    assert err.startswith("error: FAILED_PRECONDITION") and "staging" in err
    _, err = run(capsys, url, "load", "nope", status=1)
    assert "NOT_FOUND" in err
    run(capsys, url, "stage", "plus", "2", "live", status=2)
    run(capsys, url, "route", "plus", "--challenger", "two", status=2)
    _, err = run(capsys, url, "route", "--challenger", "2", status=2)
    assert "name the model" in err
    assert models_main(["--help"]) == 0
    assert "promote" in capsys.readouterr().out


def test_serve_rejects_load_model_without_explicit_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = inferd_main(
        ["serve", "--model-repository", str(tmp_path), "--load-model", "plus", "--grpc-port", "0"]
    )
    assert status == 2
    assert "--load-model needs --model-control-mode explicit" in capsys.readouterr().err


async def test_async_clients_manage_the_lifecycle(url: str) -> None:
    from inferd.clients import AsyncInferenceClient
    from inferd.clients.admin import AsyncAdminClient

    metadata = [(PRINCIPAL_HEADER, "async-user")]
    async with (
        AsyncAdminClient(url, metadata=metadata) as admin,
        AsyncInferenceClient(url, metadata=metadata) as client,
    ):
        await client.unload_model("plus")
        assert not await client.is_model_ready("plus")
        await client.load_model("plus")
        route = await admin.set_stage("plus", 2, "staging")
        assert route["serving"] == 1
        route = await admin.set_route("plus", 2, "blue_green")
        assert (route["challenger"], route["weight"]) == (2, 0.0)
        assert (await admin.promote("plus"))["champion"] == 2
        assert (await admin.rollback("plus"))["champion"] == 1
        (listed,) = await admin.routes()
        assert listed["model"] == "plus"
        entries = await admin.audit_log("plus", limit=3)
        assert [e["action"] for e in entries] == ["rollback", "promote", "set_route"]
        assert {e["principal"] for e in entries} == {"async-user"}
