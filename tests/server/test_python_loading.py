"""What a Python model's config turns into: Triton's ``initialize`` args,
its instances, and the configs this server refuses to load."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServerThread
from google.protobuf import text_format
from python_models import python_repository, write_python_model

from inferd.clients import InferenceClient
from inferd.engines.base import EngineError
from inferd.protos import model_config_pb2
from inferd.server.python_backend.loading import config_signature, initialize_args, instances

CONFIG = """
name: "m"
backend: "python"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 2, -1 ] } ]
output [ { name: "y" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [
  { count: 2 kind: KIND_CPU },
  { count: 1 kind: KIND_GPU gpus: [ 0, 1 ] }
]
parameters { key: "threshold" value { string_value: "0.5" } }
"""


def _config(text: str = CONFIG) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_initialize_args_are_tritons_strings(tmp_path: Path) -> None:
    model_file = tmp_path / "m" / "3" / "model.py"
    args = initialize_args("m", 3, model_file, _config(), 3)
    assert args["model_name"] == "m"
    assert args["model_version"] == "3"
    assert args["model_repository"] == str(tmp_path / "m")
    assert (args["model_instance_kind"], args["model_instance_device_id"]) == ("GPU", "1")
    config = json.loads(args["model_config"])
    assert config["max_batch_size"] == 4
    assert config["input"][0]["dims"] == [2, -1]  # numbers, not protobuf's int64 strings
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["parameters"]["threshold"]["string_value"] == "0.5"


def test_instances_follow_the_instance_groups() -> None:
    assert instances(_config()) == [("CPU", 0), ("CPU", 0), ("GPU", 0), ("GPU", 1)]
    assert instances(model_config_pb2.ModelConfig()) == [("CPU", 0)]


def test_signature_comes_from_the_config() -> None:
    signature = config_signature(_config())
    assert signature.inputs[0].shape == (-1, 2, -1)
    assert signature.outputs[0].dtype == object
    with pytest.raises(EngineError, match="must declare its inputs and outputs"):
        config_signature(_config('name: "m" backend: "python"'))


def test_unsupported_python_configs_fail_their_load_with_the_reason(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    root = python_repository(tmp_path / "models")
    decoupled = """
name: "decoupled"
backend: "python"
input [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]
model_transaction_policy { decoupled: true }
"""
    write_python_model(root, "decoupled", decoupled, "class TritonPythonModel: pass\n")
    write_python_model(root, "no_io", 'name: "no_io" backend: "python"', "")
    server = make_server(root)
    with InferenceClient(server.address) as client:
        index = {m["name"]: m for m in client.repository_index()}
        assert client.is_model_ready("echo")
    assert "decoupled Python models" in index["decoupled"]["reason"]
    assert "must declare its inputs and outputs" in index["no_io"]["reason"]


ENV_CONFIG = """
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "prefix" data_type: TYPE_STRING dims: [ 1 ] }} ]
parameters {{ key: "EXECUTION_ENV_PATH" value {{ string_value: "{env}" }} }}
"""
ENV_MODEL = """
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        prefix = np.array([sys.prefix.encode()], dtype=object)
        return [pb_utils.InferenceResponse([pb_utils.Tensor("prefix", prefix)]) for _ in requests]
"""


def test_execution_env_path_runs_the_model_in_that_environment(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    """A venv of the model's own (given numpy through a .pth file here);
    ``$$TRITON_MODEL_DIRECTORY`` names the model's directory, as in Triton.
    An archive or a folder without an interpreter fails the load."""
    import subprocess
    import sys

    import numpy as np

    root = python_repository(tmp_path / "models")
    env = root / "own_env" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = env / "lib" / version / "site-packages"
    (site / "server_numpy.pth").write_text(str(Path(np.__file__).parent.parent) + "\n")
    own = ENV_CONFIG.format(name="own_env", env="$$TRITON_MODEL_DIRECTORY/venv")
    write_python_model(root, "own_env", own, ENV_MODEL)
    packed = ENV_CONFIG.format(name="packed", env="env.tar.gz")
    write_python_model(root, "packed", packed, ENV_MODEL)
    (root / "empty" / "not_an_env").mkdir(parents=True)
    empty = ENV_CONFIG.format(name="empty", env="not_an_env")
    write_python_model(root, "empty", empty, ENV_MODEL)
    server = make_server(root)
    x = np.ones(1, dtype=np.float32)
    with InferenceClient(server.address) as client:
        answer = client.infer("own_env", {"x": x}, timeout=30)
        index = {m["name"]: m for m in client.repository_index()}
    assert answer["prefix"][0] == str(env).encode()
    assert "names an archive" in index["packed"]["reason"]
    assert "names no Python environment" in index["empty"]["reason"]


def test_restart_delays_double_up_to_a_cap() -> None:
    from inferd.server.python_backend.engine import restart_delay_s

    assert [restart_delay_s(n) for n in range(9)] == [0.25, 0.5, 1, 2, 4, 8, 16, 30, 30]
    assert restart_delay_s(10_000) == 30  # no overflow however long it keeps failing
