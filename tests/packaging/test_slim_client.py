"""A plain `pip install inferd` is the client and the stubs: grpcio, protobuf,
numpy and ml-dtypes. The server's stack (onnxruntime, telemetry, auth) comes
with the `server` extra, which `demo`, `fast` and `test` bring along."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from wheel_build import build_wheel

#: A plain install's requirements: gRPC and protobuf for the wire, numpy for
#: tensors, ml-dtypes for BF16 tensors (inferd.protos.datatypes).
CLIENT_REQUIREMENTS = {"grpcio", "protobuf", "numpy", "ml-dtypes"}

#: What pip says when it cannot reach the index (then the test skips).
NETWORK_ERRORS = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeoutError",
    "ProxyError",
)


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built as tests/packaging/test_wheel.py does: no network, no isolation."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match, requirement
    return re.sub(r"[._-]+", "-", match.group(0)).lower()


def _requirements(wheel_path: Path) -> dict[str, list[str]]:
    """Requires-Dist by extra ("" for a plain install)."""
    with zipfile.ZipFile(wheel_path) as wheel:
        (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        text = wheel.read(metadata).decode()
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        requirement = line.removeprefix("Requires-Dist: ")
        extra = re.search(r"""extra == ["']([^"']+)["']""", requirement)
        found.setdefault(extra.group(1) if extra else "", []).append(requirement)
    return found


def test_a_plain_install_requires_only_the_client_stack(wheel_path: Path) -> None:
    requirements = _requirements(wheel_path)
    assert {_name(r) for r in requirements[""]} == CLIENT_REQUIREMENTS
    server = {_name(r) for r in requirements["server"]}
    assert {"onnxruntime", "prometheus-client", "opentelemetry-sdk", "pyjwt"} <= server


@pytest.mark.parametrize("extra", ["demo", "fast", "test", "gpu"])
def test_the_serving_extras_bring_the_server(wheel_path: Path, extra: str) -> None:
    """`pip install -e '.[fast,demo]' && inferd serve` (the README) must serve."""
    pulled = [r for r in _requirements(wheel_path)[extra] if _name(r) == "inferd"]
    assert any(re.search(r"\[[^]]*\bserver\b", r) for r in pulled), pulled


@pytest.fixture(scope="module")
def client_venv(wheel_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site-packages) holding the wheel and the four
    client requirements only."""
    venv = tmp_path_factory.mktemp("slim") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(wheel_path)], check=True, timeout=120)
    client_requirements = _requirements(wheel_path)[""]
    result = subprocess.run(
        [*pip, *client_requirements], capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0:
        output = result.stdout + result.stderr
        if any(marker in output for marker in NETWORK_ERRORS):
            pytest.skip(f"the package index is unreachable: {output.strip().splitlines()[-1]}")
        pytest.fail(f"pip install {' '.join(client_requirements)} failed:\n{output}")
    return venv


def _run(venv: Path, *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # cwd and env keep this checkout off sys.path: only the venv's inferd counts.
    return subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)},
    )


CLIENT_SCRIPT = textwrap.dedent(
    """
    import importlib, importlib.util, json, pkgutil, sys
    import numpy as np
    import inferd, inferd.clients, inferd.protos
    from inferd.clients import InferenceClient

    # Every client and stub module imports (the locust file needs locust,
    # protos.generate needs grpcio-tools: both are tools, not the client).
    skip = {"inferd.clients.locustfile", "inferd.protos.generate"}
    for package in (inferd.clients, inferd.protos):
        for mod in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if mod.name not in skip:
                importlib.import_module(mod.name)
    with InferenceClient(sys.argv[1]) as client:
        metadata = client.model_metadata("digits_mlp")
        result = client.infer("digits_mlp", {"pixels": np.zeros((2, 64), np.float32)})
    print(json.dumps({
        "inferd": inferd.__file__,
        "metadata_inputs": [i["name"] for i in metadata["inputs"]],
        "probabilities": list(result["probabilities"].shape),
        "onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
        "server_modules": sorted(
            m for m in sys.modules
            if m.split(".")[0] in ("onnxruntime", "opentelemetry", "prometheus_client", "jwt")
        ),
    }))
    """
)


def test_the_client_alone_calls_a_server(
    client_venv: Path, server_address: str, tmp_path: Path
) -> None:
    script = tmp_path / "call.py"
    script.write_text(CLIENT_SCRIPT)
    python = str(client_venv / "bin" / "python")
    result = _run(client_venv, python, str(script), server_address, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert Path(seen["inferd"]).is_relative_to(client_venv)
    assert seen["metadata_inputs"] == ["pixels"]
    assert seen["probabilities"] == [2, 10]
    assert seen["onnxruntime"] is False
    assert seen["server_modules"] == []


def test_the_client_cli_works_and_serve_names_the_extra(
    client_venv: Path, server_address: str, tmp_path: Path
) -> None:
    inferd = str(client_venv / "bin" / "inferd")
    models = _run(client_venv, inferd, "models", "--url", server_address, tmp_path=tmp_path)
    assert models.returncode == 0, models.stderr
    assert "digits_mlp" in models.stdout

    for args in (["--help"], ["--version"], ["serve", "--help"]):
        answer = _run(client_venv, inferd, *args, tmp_path=tmp_path)
        assert answer.returncode == 0, answer.stderr

    serve = _run(client_venv, inferd, "serve", tmp_path=tmp_path)
    assert serve.returncode == 2
    assert serve.stdout == ""
    (line,) = serve.stderr.splitlines()
    assert line.startswith("error: inferd serve needs the server extra")
    assert "pip install 'inferd[server]'" in line
