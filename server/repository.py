"""The model repository, in Triton's layout.

::

    <root>/<model>/config.pbtxt          optional (auto-complete fills it in)
    <root>/<model>/model_card.json       optional
    <root>/<model>/<version>/model.onnx  numeric version directories

Pure discovery, parsing and validation: nothing here loads a model or speaks
gRPC. Every ``RepositoryError`` message may be shown to a remote caller, so
messages name models and paths relative to the root, never absolute paths
(and never ``str(OSError)``, which carries the absolute file name).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from google.protobuf import text_format

from inferd.engines.base import EngineOptions, Signature, TensorSpec
from inferd.engines.registry import MODEL_FILENAMES
from inferd.protos import model_config_pb2
from inferd.protos.datatypes import CONFIG_TO_V2, V2_TO_CONFIG, v2_datatype

if TYPE_CHECKING:
    from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

#: Triton platform names this server knows.
ONNX_PLATFORM = "onnxruntime_onnx"
TENSORRT_PLATFORM = "tensorrt_plan"

#: Triton backend name -> platform name.
BACKEND_PLATFORMS = {
    "onnxruntime": ONNX_PLATFORM,
    "tensorrt": TENSORRT_PLATFORM,
}

CONFIG_FILENAME = "config.pbtxt"
CARD_FILENAME = "model_card.json"

#: Text fields of a model card copied as they are (stringified).
CARD_FIELDS = ("owner", "description", "intended_use", "data_version", "training_commit")

TENSORRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
OPENVINO_PROVIDER = "OpenVINOExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"

#: ``config.optimization.execution_accelerators`` names -> onnxruntime providers.
GPU_ACCELERATORS = {"tensorrt": TENSORRT_PROVIDER, "cuda": CUDA_PROVIDER}
CPU_ACCELERATORS = {"openvino": OPENVINO_PROVIDER}

# Triton ignores version directories that are not numbers or that start with
# a zero ("0", "01"); ASCII only, so non-Latin digits are not versions.
_VERSION_DIR = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
_INT64_MAX = 2**63 - 1
_THREAD_COUNT = re.compile(r"[0-9]{1,6}", re.ASCII)
_MAX_NAME_IN_MESSAGE = 120

_Tensor = model_config_pb2.ModelInput | model_config_pb2.ModelOutput
_TensorT = TypeVar("_TensorT", model_config_pb2.ModelInput, model_config_pb2.ModelOutput)


class RepositoryError(Exception):
    """A model in the repository is missing, malformed or inconsistent with its
    model file. The message is safe to show a remote caller."""


class ModelNotFoundError(RepositoryError):
    """No model of that name is in the repository."""


@dataclass(frozen=True)
class ModelSource:
    """One model as found on disk, before any engine is loaded.

    ``config`` is the config as parsed (possibly incomplete: pass it through
    ``complete_config`` with the engine's signature), with ``name`` and
    ``platform`` filled in. ``versions`` maps each version selected by the
    version policy to its model file.
    """

    name: str
    directory: Path
    config: model_config_pb2.ModelConfig
    versions: dict[int, Path]
    platform: str
    card: dict[str, str]
    #: The versions the version policy picks (``versions`` may hold more: the
    #: extra versions asked for). Unversioned requests go to the highest of these.
    policy_versions: tuple[int, ...] = ()


class ModelRepository:
    """A directory of models in Triton's layout."""

    def __init__(self, root: Path) -> None:
        root = Path(root)
        if not root.is_dir():
            # The operator gave this path, but the message may still travel to
            # a caller (e.g. through a repository-index RPC), so name it only.
            raise RepositoryError(f"model repository '{root.name}' is not a directory")
        self.root = root

    def index(self) -> list[str]:
        """Names of the model directories, sorted; hidden entries and plain
        files are skipped."""
        try:
            entries = list(self.root.iterdir())
        except OSError as exc:
            raise RepositoryError(f"cannot list the model repository: {exc.strerror}") from None
        return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())

    def source(self, name: str, extra_versions: Collection[int] = ()) -> ModelSource:
        """Find, parse and check model ``name``.

        The name is looked up among ``index()`` and only then joined to the
        root, so a caller's name can never reach outside the repository.
        ``extra_versions`` are selected besides the version policy's choice
        when their model file exists (versions the lifecycle state keeps
        loaded: champion, challenger, staged versions); the caller reports
        the ones that are missing.
        """
        if name not in self.index():
            raise ModelNotFoundError(f"model {_quote(name)} is not in the repository")
        directory = self.root / name
        config = _read_config(name, directory)
        platform = _platform(name, config, directory)
        if not config.platform:
            config.platform = platform
        filename = _model_filename(name, config, platform)
        policy, versions = _select_versions(name, config, directory, filename, extra_versions)
        return ModelSource(
            name=name,
            directory=directory,
            config=config,
            versions=versions,
            platform=platform,
            card=_read_card(name, directory),
            policy_versions=policy,
        )


def _quote(name: str) -> str:
    # repr() escapes control characters; the cap keeps a hostile name short.
    if len(name) > _MAX_NAME_IN_MESSAGE:
        name = name[:_MAX_NAME_IN_MESSAGE] + "..."
    return repr(name)


def _read_text(model: str, path: Path, relative: str) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise RepositoryError(f"model '{model}': {relative} is not UTF-8 text") from None
    except OSError as exc:
        raise RepositoryError(f"model '{model}': cannot read {relative}: {exc.strerror}") from None


def _read_config(name: str, directory: Path) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    relative = f"{name}/{CONFIG_FILENAME}"
    text = _read_text(name, directory / CONFIG_FILENAME, relative)
    if text is not None:
        try:
            text_format.Parse(text, config)
        except text_format.ParseError as exc:
            # str(exc) starts "line:column : "; restate the position in words.
            detail = re.sub(r"^\d+:\d+ : ", "", str(exc))
            where = f" line {exc.GetLine()}, column {exc.GetColumn()}" if exc.GetLine() else ""
            raise RepositoryError(
                f"model '{name}': cannot parse {relative}{where}: {detail}"
            ) from None
    if not config.name:
        config.name = name
    elif config.name != name:
        raise RepositoryError(
            f"model '{name}': config.pbtxt names the model '{config.name}', "
            "which is not its directory name"
        )
    return config


def _platform(name: str, config: model_config_pb2.ModelConfig, directory: Path) -> str:
    platform = BACKEND_PLATFORMS.get(config.platform, config.platform)
    if platform and platform not in MODEL_FILENAMES:
        raise RepositoryError(f"model '{name}': platform '{config.platform}' is not supported")
    if config.backend:
        from_backend = BACKEND_PLATFORMS.get(config.backend)
        if from_backend is None:
            raise RepositoryError(f"model '{name}': backend '{config.backend}' is not supported")
        if platform and platform != from_backend:
            raise RepositoryError(
                f"model '{name}': platform '{config.platform}' does not match "
                f"backend '{config.backend}'"
            )
        platform = from_backend
    if platform:
        return platform
    return _infer_platform(name, config, directory)


def _infer_platform(name: str, config: model_config_pb2.ModelConfig, directory: Path) -> str:
    """The platform from the model file present, as Triton's auto-complete does."""
    by_filename = {MODEL_FILENAMES[p]: p for p in (ONNX_PLATFORM, TENSORRT_PLATFORM)}
    if config.default_model_filename:
        suffix = Path(config.default_model_filename).suffix
        for filename, platform in by_filename.items():
            if Path(filename).suffix == suffix:
                return platform
        raise RepositoryError(
            f"model '{name}': cannot tell the platform of "
            f"'{config.default_model_filename}'; set platform or backend in config.pbtxt"
        )
    found = {
        platform
        for version_dir in _version_dirs(directory).values()
        for filename, platform in by_filename.items()
        if (version_dir / filename).is_file()
    }
    if len(found) == 1:
        return found.pop()
    problem = "model files of several platforms" if found else "no model.onnx or model.plan"
    raise RepositoryError(
        f"model '{name}': cannot tell the platform ({problem}); "
        "set platform or backend in config.pbtxt"
    )


def _model_filename(name: str, config: model_config_pb2.ModelConfig, platform: str) -> str:
    filename = config.default_model_filename or MODEL_FILENAMES[platform]
    # The config is operator-written but still must not point outside the
    # version directory.
    if filename in (".", "..") or "/" in filename or "\\" in filename or "\0" in filename:
        raise RepositoryError(f"model '{name}': default_model_filename must be a plain file name")
    return filename


def _version_dirs(directory: Path) -> dict[int, Path]:
    try:
        entries = list(directory.iterdir())
    except OSError:
        return {}
    versions: dict[int, Path] = {}
    for entry in entries:
        if _VERSION_DIR.fullmatch(entry.name) and entry.is_dir():
            number = int(entry.name)
            if number <= _INT64_MAX:
                versions[number] = entry
    return versions


def _select_versions(
    name: str,
    config: model_config_pb2.ModelConfig,
    directory: Path,
    filename: str,
    extra: Collection[int] = (),
) -> tuple[tuple[int, ...], dict[int, Path]]:
    """Apply the version policy.

    A version directory without its model file is not a candidate for
    ``latest``/``all`` (it may still be being copied in), but a version named
    by ``specific`` must be loadable.
    """
    loadable = {
        number: path / filename
        for number, path in _version_dirs(directory).items()
        if (path / filename).is_file()
    }
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        selected = sorted(loadable)
    elif choice == "specific":
        wanted = sorted(set(policy.specific.versions))
        if not wanted:
            raise RepositoryError(f"model '{name}': the specific version policy lists no versions")
        missing = [v for v in wanted if v not in loadable]
        if missing:
            listed = ", ".join(str(v) for v in missing)
            raise RepositoryError(
                f"model '{name}': version policy names version(s) {listed}, which have no "
                f"{filename} in the repository"
            )
        selected = wanted
    else:
        count = policy.latest.num_versions if choice == "latest" else 1
        if count < 1:
            raise RepositoryError(
                f"model '{name}': the latest version policy needs num_versions >= 1"
            )
        selected = sorted(loadable)[-count:]
    if not selected:
        raise RepositoryError(f"model '{name}': no version of the model has a {filename} file")
    chosen = sorted({*selected, *(v for v in extra if v in loadable)})
    return tuple(selected), {v: loadable[v] for v in chosen}


def tree_fingerprint(directory: Path, *, max_entries: int = 10_000) -> str:
    """A digest of the names, sizes, inodes and modification times of the
    files under ``directory`` (hidden entries skipped): it changes when a file
    is added, removed, rewritten or renamed into place. Contents are not read,
    so polling a large repository stays cheap; write model files under a
    temporary name and rename them, so a half-written file is never seen as
    final. "" when the directory cannot be read."""
    digest = hashlib.blake2b(digest_size=16)
    seen = 0
    try:
        for base, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for filename in sorted(f for f in files if not f.startswith(".")):
                path = os.path.join(base, filename)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                rel = os.path.relpath(path, directory)
                digest.update(
                    f"{rel}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode(
                        "utf-8", "surrogateescape"
                    )
                )
                seen += 1
                if seen >= max_entries:
                    return digest.hexdigest()
    except OSError:
        return ""
    return digest.hexdigest()


def _read_card(name: str, directory: Path) -> dict[str, str]:
    relative = f"{name}/{CARD_FILENAME}"
    text = _read_text(name, directory / CARD_FILENAME, relative)
    if text is None:
        return {}
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise RepositoryError(f"model '{name}': {relative} is not valid JSON: {detail}") from None
    if not isinstance(data, dict):
        raise RepositoryError(f"model '{name}': {relative} must hold a JSON object")
    card: dict[str, str] = {}
    # Unknown keys are ignored so cards may carry more than this server shows.
    for key in CARD_FIELDS:
        if key in data and data[key] is not None:
            card[key] = _card_value(name, key, data[key])
    metrics = data.get("metrics")
    if metrics is not None:
        if not isinstance(metrics, dict):
            raise RepositoryError(f"model '{name}': 'metrics' in {relative} must be an object")
        for metric, value in metrics.items():
            card[f"metrics.{metric}"] = _card_value(name, f"metrics.{metric}", value)
    return card


def _card_value(name: str, key: str, value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        # JSON spelling: true/false, 0.93, NaN.
        return json.dumps(value)
    raise RepositoryError(f"model '{name}': model card field '{key}' must be a string or number")


# --- auto-complete and validation against the engine -----------------------


def complete_config(
    config: model_config_pb2.ModelConfig,
    signature: Signature,
    *,
    default_max_batch_size: int = 64,
) -> model_config_pb2.ModelConfig:
    """Triton's auto-complete: a copy of ``config`` with inputs, outputs,
    ``max_batch_size`` and ``platform`` filled in from the engine's signature,
    and the configured tensors checked against it.

    A config with no inputs, no outputs and ``max_batch_size`` 0 counts as
    auto-completed: if every tensor's first dimension is dynamic it gets
    ``max_batch_size = default_max_batch_size`` (0 turns that off) and the
    batch dimension is dropped from dims. Other fields are left as they are.
    """
    name = config.name or "<unnamed>"
    out = model_config_pb2.ModelConfig()
    out.CopyFrom(config)
    if not out.platform and out.backend in BACKEND_PLATFORMS:
        out.platform = BACKEND_PLATFORMS[out.backend]
    if out.max_batch_size < 0:
        raise RepositoryError(f"model '{name}': max_batch_size must not be negative")

    tensors = signature.inputs + signature.outputs
    if (
        not out.input
        and not out.output
        and out.max_batch_size == 0
        and default_max_batch_size > 0
        and tensors
        and all(t.shape and t.shape[0] == -1 for t in tensors)
    ):
        limit = max(signature.batch_sizes) if signature.batch_sizes else default_max_batch_size
        out.max_batch_size = min(default_max_batch_size, limit)

    batching = out.max_batch_size > 0
    if batching:
        _check_batch_dims(name, out.max_batch_size, signature)

    if out.input:
        _check_tensors(name, "input", out.input, signature.inputs, batching)
        configured = {t.name for t in out.input}
        missing = [t.name for t in signature.inputs if t.name not in configured]
        if missing:
            raise RepositoryError(
                f"model '{name}': model input(s) {', '.join(repr(m) for m in missing)} "
                "are not in config.pbtxt"
            )
    else:
        _fill(name, out.input, signature.inputs, batching)
    if out.output:
        _check_tensors(name, "output", out.output, signature.outputs, batching)
    else:
        _fill(name, out.output, signature.outputs, batching)
    return out


def _check_batch_dims(name: str, max_batch_size: int, signature: Signature) -> None:
    for spec in signature.inputs + signature.outputs:
        # A fixed first dim equal to max_batch_size is an engine built for
        # one batch size (the scheduler pads up to it).
        if not spec.shape or spec.shape[0] not in (-1, max_batch_size):
            raise RepositoryError(
                f"model '{name}', tensor '{spec.name}': max_batch_size is {max_batch_size} "
                f"but the model's shape {list(spec.shape)} has no batch dimension "
                "(the first dimension must be -1)"
            )
    if signature.batch_sizes and max_batch_size > max(signature.batch_sizes):
        raise RepositoryError(
            f"model '{name}': max_batch_size {max_batch_size} is larger than the "
            f"largest batch the model runs ({max(signature.batch_sizes)})"
        )


def _datatype(name: str, spec: TensorSpec) -> str:
    try:
        return v2_datatype(spec.dtype)
    except ValueError:
        raise RepositoryError(
            f"model '{name}', tensor '{spec.name}': the model's type {spec.dtype} "
            "has no protocol datatype"
        ) from None


def _fill(
    name: str,
    target: RepeatedCompositeFieldContainer[_TensorT],
    specs: Sequence[TensorSpec],
    batching: bool,
) -> None:
    for spec in specs:
        tensor = target.add()
        tensor.name = spec.name
        type_name = V2_TO_CONFIG[_datatype(name, spec)]
        tensor.data_type = cast(
            "model_config_pb2.DataType", model_config_pb2.DataType.Value(type_name)
        )
        tensor.dims.extend(spec.shape[1:] if batching else spec.shape)


def _check_tensors(
    name: str,
    kind: str,
    configured: Iterable[_Tensor],
    specs: Sequence[TensorSpec],
    batching: bool,
) -> None:
    by_name = {s.name: s for s in specs}
    seen: set[str] = set()
    for tensor in configured:
        where = f"model '{name}', {kind} '{tensor.name}'"
        if tensor.name in seen:
            raise RepositoryError(f"{where}: configured more than once")
        seen.add(tensor.name)
        spec = by_name.get(tensor.name)
        if spec is None:
            known = ", ".join(repr(s) for s in by_name) or "none"
            raise RepositoryError(f"{where}: the model has no such {kind} (it has {known})")
        config_type = model_config_pb2.DataType.Name(tensor.data_type)
        model_type = _datatype(name, spec)
        if CONFIG_TO_V2.get(config_type) != model_type:
            raise RepositoryError(
                f"{where}: config data_type {config_type} does not match the model's "
                f"{V2_TO_CONFIG[model_type]}"
            )
        # With reshape the model sees reshape.shape, not dims.
        dims = list(tensor.reshape.shape if tensor.HasField("reshape") else tensor.dims)
        model_dims = list(spec.shape[1:] if batching else spec.shape)
        if not _dims_match(dims, model_dims):
            shown = "reshape" if tensor.HasField("reshape") else "dims"
            batch_note = " (without the batch dimension)" if batching else ""
            raise RepositoryError(
                f"{where}: config {shown} {dims} do not match the model's shape "
                f"{model_dims}{batch_note}"
            )


def _dims_match(dims: Sequence[int], model_dims: Sequence[int]) -> bool:
    return len(dims) == len(model_dims) and all(
        a == b or a == -1 or b == -1 for a, b in zip(dims, model_dims, strict=True)
    )


# --- engine options -----------------------------------------------------------


def engine_options(
    config: model_config_pb2.ModelConfig, *, default_max_batch_size: int = 0
) -> EngineOptions:
    """Engine settings from the config, as Triton's onnxruntime backend reads
    them: instance counts, thread-pool parameters, execution accelerators
    (with their parameters), the GPU, and the largest batch the scheduler
    will dispatch (``default_max_batch_size`` when the config leaves it to
    auto-complete)."""
    name = config.name or "<unnamed>"
    concurrency = 0
    for group in config.instance_group:
        if group.count < 0:
            raise RepositoryError(f"model '{name}': instance_group count must not be negative")
        concurrency += group.count or 1  # Triton's default count is 1
    providers = _providers(config)
    max_batch = config.max_batch_size
    if max_batch <= 0 and not config.input and not config.output:
        max_batch = default_max_batch_size  # auto-complete will pick it
    return EngineOptions(
        concurrency=max(concurrency, 1),
        intra_op_threads=_thread_count(config, "intra_op_thread_count"),
        inter_op_threads=_thread_count(config, "inter_op_thread_count"),
        providers=providers,
        provider_options=_provider_options(config, providers),
        device_id=_device_id(config),
        max_batch_size=max(0, max_batch),
    )


def _thread_count(config: model_config_pb2.ModelConfig, key: str) -> int:
    if key not in config.parameters:
        return 0
    value = config.parameters[key].string_value.strip()
    if not _THREAD_COUNT.fullmatch(value):
        raise RepositoryError(
            f"model '{config.name or '<unnamed>'}': parameter '{key}' must be a "
            f"non-negative integer, not {_quote(value)}"
        )
    return int(value)


def _providers(config: model_config_pb2.ModelConfig) -> tuple[str, ...]:
    name = config.name or "<unnamed>"
    kinds = {group.kind for group in config.instance_group}
    gpu_kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
    cpu_kind = model_config_pb2.ModelInstanceGroup.KIND_CPU
    # As in Triton, GPU accelerators do not apply to CPU-only instances.
    cpu_only = bool(kinds) and kinds == {cpu_kind}
    accelerators = config.optimization.execution_accelerators
    gpu: set[str] = set()
    for accelerator in accelerators.gpu_execution_accelerator:
        provider = GPU_ACCELERATORS.get(accelerator.name)
        if provider is None:
            raise RepositoryError(
                f"model '{name}': unknown GPU execution accelerator '{accelerator.name}'"
            )
        gpu.add(provider)
    providers: list[str] = []
    if not cpu_only:
        # TensorRT first, then CUDA for the nodes TensorRT cannot take; any
        # GPU accelerator or a KIND_GPU group means CUDA.
        if TENSORRT_PROVIDER in gpu:
            providers.append(TENSORRT_PROVIDER)
        if gpu or gpu_kind in kinds:
            providers.append(CUDA_PROVIDER)
    for accelerator in accelerators.cpu_execution_accelerator:
        provider = CPU_ACCELERATORS.get(accelerator.name)
        if provider is None:
            raise RepositoryError(
                f"model '{name}': unknown CPU execution accelerator '{accelerator.name}'"
            )
        providers.append(provider)
    providers.append(CPU_PROVIDER)
    return tuple(dict.fromkeys(providers))  # drop repeats, keep order


# --- accelerator parameters ---------------------------------------------------------------

_TRUE = ("true", "1", "on", "yes")
_FALSE = ("false", "0", "off", "no")
_PRECISIONS = ("FP32", "FP16", "INT8")
_INTEGER = re.compile(r"[0-9]{1,19}", re.ASCII)


def _bool_param(where: str, key: str, value: str) -> str:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return "True"
    if lowered in _FALSE:
        return "False"
    raise RepositoryError(f"{where}: parameter '{key}' must be true or false, not {_quote(value)}")


def _int_param(where: str, key: str, value: str, low: int = 0) -> str:
    text = value.strip()
    if not _INTEGER.fullmatch(text) or int(text) < low:
        raise RepositoryError(
            f"{where}: parameter '{key}' must be an integer >= {low}, not {_quote(value)}"
        )
    return str(int(text))


def _choice_param(where: str, key: str, value: str, choices: Sequence[str]) -> str:
    for choice in choices:
        if value.strip().upper() == choice.upper():
            return choice
    listed = ", ".join(choices)
    raise RepositoryError(
        f"{where}: parameter '{key}' must be one of {listed}, not {_quote(value)}"
    )


def _tensorrt_parameters(where: str, parameters: dict[str, str]) -> dict[str, str]:
    """Triton's onnxruntime-backend TensorRT accelerator parameters -> the
    onnxruntime TensorRT execution provider's options."""
    out: dict[str, str] = {}
    for key, value in sorted(parameters.items()):
        if key == "precision_mode":
            precision = _choice_param(where, key, value, _PRECISIONS)
            # INT8 also enables FP16 for the layers INT8 cannot take. It needs
            # a QDQ (explicitly quantized) model or a calibration table in the
            # engine cache directory.
            out["trt_fp16_enable"] = "True" if precision != "FP32" else "False"
            out["trt_int8_enable"] = "True" if precision == "INT8" else "False"
        elif key == "max_workspace_size_bytes":
            out["trt_max_workspace_size"] = _int_param(where, key, value, 1)
        elif key in ("trt_max_partition_iterations", "trt_min_subgraph_size"):
            out[key] = _int_param(where, key, value, 1)
        elif key in ("trt_engine_cache_enable", "trt_timing_cache_enable"):
            out[key] = _bool_param(where, key, value)
        elif key == "trt_engine_cache_path":
            if not value.strip() or "\0" in value:
                raise RepositoryError(f"{where}: parameter '{key}' must name a directory")
            out[key] = value.strip()
        else:
            raise RepositoryError(
                f"{where}: unknown parameter {_quote(key)} (known: precision_mode, "
                "max_workspace_size_bytes, trt_max_partition_iterations, trt_min_subgraph_size, "
                "trt_engine_cache_enable, trt_engine_cache_path, trt_timing_cache_enable)"
            )
    if out.get("trt_engine_cache_enable") == "True" and "trt_engine_cache_path" not in out:
        # onnxruntime would otherwise write engines into the working directory.
        raise RepositoryError(
            f"{where}: trt_engine_cache_enable needs trt_engine_cache_path (a writable directory)"
        )
    return out


def _cuda_parameters(where: str, parameters: dict[str, str]) -> dict[str, str]:
    """onnxruntime CUDA execution provider options, passed through checked."""
    out: dict[str, str] = {}
    for key, value in sorted(parameters.items()):
        if key == "gpu_mem_limit":
            out[key] = _int_param(where, key, value, 1)
        elif key == "cudnn_conv_algo_search":
            out[key] = _choice_param(where, key, value, ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"))
        elif key == "arena_extend_strategy":
            out[key] = _choice_param(where, key, value, ("kNextPowerOfTwo", "kSameAsRequested"))
        elif key == "cudnn_conv_use_max_workspace":
            out[key] = "1" if _bool_param(where, key, value) == "True" else "0"
        else:
            raise RepositoryError(
                f"{where}: unknown parameter {_quote(key)} (known: gpu_mem_limit, "
                "cudnn_conv_algo_search, arena_extend_strategy, cudnn_conv_use_max_workspace)"
            )
    return out


def _provider_options(
    config: model_config_pb2.ModelConfig, providers: Sequence[str]
) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """Per-provider options from the accelerators' ``parameters`` maps, for
    the providers that will actually be asked for."""
    name = config.name or "<unnamed>"
    options: dict[str, dict[str, str]] = {}
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        where = f"model '{name}', GPU execution accelerator '{accelerator.name}'"
        parameters = dict(accelerator.parameters)
        if accelerator.name == "tensorrt":
            parsed = _tensorrt_parameters(where, parameters)
        elif accelerator.name == "cuda":
            parsed = _cuda_parameters(where, parameters)
        else:  # unknown names were refused by _providers
            continue
        provider = GPU_ACCELERATORS[accelerator.name]
        if provider in providers:
            options.setdefault(provider, {}).update(parsed)
    for accelerator in config.optimization.execution_accelerators.cpu_execution_accelerator:
        if accelerator.parameters:
            raise RepositoryError(
                f"model '{name}', CPU execution accelerator '{accelerator.name}': "
                "parameters are not supported"
            )
    return tuple(
        (provider, tuple(sorted(values.items())))
        for provider, values in sorted(options.items())
        if values
    )


def _device_id(config: model_config_pb2.ModelConfig) -> int:
    """The GPU named by ``instance_group.gpus`` (0 when none is named). One
    engine runs on one GPU, so groups naming several GPUs are refused."""
    name = config.name or "<unnamed>"
    gpus: set[int] = set()
    for group in config.instance_group:
        for gpu in group.gpus:
            if gpu < 0:
                raise RepositoryError(f"model '{name}': instance_group gpus must not be negative")
            gpus.add(gpu)
    if len(gpus) > 1:
        listed = ", ".join(str(g) for g in sorted(gpus))
        raise RepositoryError(
            f"model '{name}': instance groups on several GPUs ({listed}) are not supported; "
            "name one GPU in instance_group gpus (run one server per GPU)"
        )
    return gpus.pop() if gpus else 0
