"""From a Python model's config.pbtxt to a running ``PythonEngine``: the
signature the config declares (a Python model has no file to read it from),
the ``args`` Triton passes to ``initialize``, one process per instance."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from inferd.engines.base import EngineError, Signature, TensorSpec
from inferd.protos import model_config_pb2
from inferd.protos.datatypes import CONFIG_TO_V2, NUMPY_DTYPES
from inferd.server.model_link import ModelCaller
from inferd.server.python_backend.engine import PythonEngine

#: Triton's parameter naming the Python environment a model runs in.
ENV_PARAM = "EXECUTION_ENV_PATH"
MODEL_DIR_VAR = "$$TRITON_MODEL_DIRECTORY"

#: Config fields holding int64 lists, which protobuf's JSON writes as strings.
_INT64_LISTS = ("dims", "shape")


def config_json(config: model_config_pb2.ModelConfig) -> dict[str, Any]:
    """The config as Triton's Python backend hands it over (``args["model_config"]``)."""
    data = json_format.MessageToDict(config, preserving_proto_field_name=True)
    data = _int_lists(data)
    data.setdefault("name", config.name)
    data.setdefault("max_batch_size", 0)
    data.setdefault("input", [])
    data.setdefault("output", [])
    return data  # type: ignore[no-any-return]


def _int_lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: [int(x) for x in v] if k in _INT64_LISTS and isinstance(v, list) else _int_lists(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_int_lists(v) for v in value]
    return value


def config_signature(config: model_config_pb2.ModelConfig) -> Signature:
    """Inputs and outputs as declared (with the batch dimension when it batches)."""
    if not config.input or not config.output:
        raise EngineError(
            f"model '{config.name}': a Python model's config.pbtxt must declare its inputs "
            "and outputs"
        )
    lead = (-1,) if config.max_batch_size > 0 else ()

    def spec(tensor: model_config_pb2.ModelInput | model_config_pb2.ModelOutput) -> TensorSpec:
        type_name = model_config_pb2.DataType.Name(tensor.data_type)
        datatype = CONFIG_TO_V2.get(type_name)
        if datatype is None:
            raise EngineError(f"model '{config.name}', tensor '{tensor.name}': bad data_type")
        return TensorSpec(tensor.name, NUMPY_DTYPES[datatype], lead + tuple(tensor.dims))

    return Signature(
        inputs=tuple(spec(t) for t in config.input),
        outputs=tuple(spec(t) for t in config.output),
    )


def load_python_model(
    name: str,
    version: int,
    model_file: Path,
    config: model_config_pb2.ModelConfig,
    *,
    caller: ModelCaller | None,
    loop: asyncio.AbstractEventLoop | None,
) -> PythonEngine:
    """Start one process per instance (``instance_group``, default one CPU
    instance) and wait for each ``initialize``. Raises EngineError with the reason."""
    if config.model_transaction_policy.decoupled:
        raise EngineError(
            f"model '{name}': decoupled Python models (response senders) are not supported"
        )
    signature = config_signature(config)
    python = environment_python(name, config, model_file.parent.parent)
    setups = [
        {
            "model_file": str(model_file),
            "args": initialize_args(name, version, model_file, config, i),
            "python": python,
        }
        for i in range(len(instances(config)))
    ]
    return PythonEngine(
        name, signature, setups, batched=config.max_batch_size > 0, caller=caller, loop=loop
    )


def environment_python(
    name: str, config: model_config_pb2.ModelConfig, model_dir: Path
) -> str | None:
    """The interpreter of the Python environment (a venv or conda env
    directory) the ``EXECUTION_ENV_PATH`` parameter names, None without one.
    ``$$TRITON_MODEL_DIRECTORY`` stands for the model's directory, as in
    Triton; a relative path is taken from there."""
    if ENV_PARAM not in config.parameters:
        return None
    text = config.parameters[ENV_PARAM].string_value.replace(MODEL_DIR_VAR, str(model_dir))
    where = f"model '{name}': parameter {ENV_PARAM}"
    path = model_dir / text
    if path.name.endswith((".tar.gz", ".tgz", ".tar")):
        raise EngineError(f"{where} names an archive; unpack it and name the directory")
    for candidate in (path / "bin" / "python3", path / "bin" / "python"):
        if candidate.is_file():
            return str(candidate)
    raise EngineError(f"{where} names no Python environment (no bin/python3 in it)")


def instances(config: model_config_pb2.ModelConfig) -> list[tuple[str, int]]:
    """(kind, device) of each instance, as Triton's instance groups lay them
    out: ``count`` per GPU listed (all GPUs: device 0), CPU otherwise."""
    laid_out: list[tuple[str, int]] = []
    for group in config.instance_group:
        count = group.count or 1
        if group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU:
            for gpu in group.gpus or [0]:
                laid_out += [("GPU", gpu)] * count
        else:
            laid_out += [("CPU", 0)] * count
    return laid_out or [("CPU", 0)]


def initialize_args(
    name: str, version: int, model_file: Path, config: model_config_pb2.ModelConfig, instance: int
) -> dict[str, str]:
    """What Triton passes to ``initialize``: every value a string. The
    model places itself on the GPU it is given (the server moves no tensor
    to a GPU for it)."""
    kind, device = instances(config)[instance]
    return {
        "model_config": json.dumps(config_json(config)),
        "model_instance_kind": kind,
        "model_instance_name": f"{name}_{instance}",
        "model_instance_device_id": str(device),
        "model_repository": str(model_file.parent.parent),
        "model_version": str(version),
        "model_name": name,
    }
