"""The model repository, in Triton's layout: discovery and config parsing.

::

    <root>/<model>/config.pbtxt          optional (auto-complete fills it in)
    <root>/<model>/model_card.json       optional
    <root>/<model>/<version>/model.onnx  numeric version directories

Pure discovery and parsing: nothing here loads a model or speaks gRPC.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from inferd.engines.registry import MODEL_FILENAMES
from inferd.protos import model_config_pb2
from inferd.server.repository.errors import ModelNotFoundError, RepositoryError
from inferd.server.repository.errors import quote as _quote
from inferd.server.repository.versions import fallback_versions, select_versions, version_dirs

log = logging.getLogger("inferd.repository")

#: Triton platform names this server knows.
ONNX_PLATFORM = "onnxruntime_onnx"
TENSORRT_PLATFORM = "tensorrt_plan"
#: Triton's Python backend (``model.py``); it has no platform name of its own.
PYTHON_PLATFORM = "python"

#: Triton backend name -> platform name.
BACKEND_PLATFORMS = {
    "onnxruntime": ONNX_PLATFORM,
    "tensorrt": TENSORRT_PLATFORM,
    "python": PYTHON_PLATFORM,
}

#: Platform name -> Triton backend name (Triton fills in whichever is missing).
PLATFORM_BACKENDS = {platform: backend for backend, platform in BACKEND_PLATFORMS.items()}

#: Triton's ensembles: no model file, an empty version directory (server.ensemble).
ENSEMBLE_PLATFORM = "ensemble"

CONFIG_FILENAME = "config.pbtxt"
CARD_FILENAME = "model_card.json"

#: Text fields of a model card copied as they are (stringified).
CARD_FIELDS = ("owner", "description", "intended_use", "data_version", "training_commit")


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
    #: Each output's class labels, from its ``label_filename`` (one per line).
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: How many versions the ``latest`` policy wants (0 under other policies).
    latest_count: int = 0
    #: Older versions that may stand in, newest first, for selected versions
    #: that fail to load (``latest`` policy only).
    fallbacks: dict[int, Path] = field(default_factory=dict)


class ModelRepository:
    """A directory of models in Triton's layout.

    Files are read only where they resolve inside the repository: a symbolic
    link to ``/etc/passwd`` named ``config.pbtxt`` is refused, unless
    ``allow_links_outside`` (the operator's flag) permits links that leave it.
    """

    def __init__(self, root: Path, *, allow_links_outside: bool = False) -> None:
        root = Path(root)
        if not root.is_dir():
            # The operator gave this path, but the message may still travel to
            # a caller (e.g. through a repository-index RPC), so name it only.
            raise RepositoryError(f"model repository '{root.name}' is not a directory")
        self.root = root
        self.allow_links_outside = allow_links_outside
        self._real_root = root.resolve()

    def check_inside(self, path: Path, model: str, relative: str) -> None:
        """Raise RepositoryError when ``path`` resolves outside the repository
        (through a symbolic link) and that is not allowed."""
        if self.allow_links_outside:
            return
        try:
            inside = path.resolve().is_relative_to(self._real_root)
        except (OSError, RuntimeError):  # a link loop
            inside = False
        if not inside:
            raise RepositoryError(
                f"model '{model}': {relative} resolves outside the model repository "
                "(the server's --allow-links-outside-repository permits that)"
            )

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
        self.check_inside(directory, name, name)
        for filename in (CONFIG_FILENAME, CARD_FILENAME):
            if (directory / filename).is_symlink():
                self.check_inside(directory / filename, name, f"{name}/{filename}")
        config = _read_config(name, directory)
        platform = _platform(name, config, directory)
        if not config.platform and platform != PYTHON_PLATFORM:
            config.platform = platform  # Triton leaves a Python model's platform empty
        if platform == ENSEMBLE_PLATFORM:
            filename = ""  # the version directory itself
        else:
            if not config.backend:
                config.backend = PLATFORM_BACKENDS[platform]
            filename = _model_filename(name, config, platform)
            if not config.default_model_filename:
                config.default_model_filename = filename  # as Triton's ModelConfig shows it
        policy, versions = select_versions(name, config, directory, filename, extra_versions)
        latest_count, fallbacks = fallback_versions(config, directory, filename, policy)
        for version, path in (*versions.items(), *fallbacks.items()):
            self.check_inside(path, name, f"{name}/{version}/{filename}")
        return ModelSource(
            name=name,
            directory=directory,
            config=config,
            versions=versions,
            platform=platform,
            card=_read_card(name, directory),
            policy_versions=policy,
            labels=_read_labels(name, config, directory, self),
            latest_count=latest_count,
            fallbacks=fallbacks,
        )


def _read_labels(
    name: str, config: model_config_pb2.ModelConfig, directory: Path, repository: ModelRepository
) -> dict[str, tuple[str, ...]]:
    """Each output's ``label_filename``, a file in the model directory, read
    as Triton does: one label per line (a missing file fails the load)."""
    labels: dict[str, tuple[str, ...]] = {}
    for output in config.output:
        filename = output.label_filename
        if not filename:
            continue
        where = f"model '{name}', output '{output.name}'"
        path = directory / filename
        # The config is operator-written but still must not reach outside the model.
        if Path(filename).is_absolute() or not path.resolve().is_relative_to(directory.resolve()):
            raise RepositoryError(
                f"{where}: label_filename must name a file in the model directory"
            )
        relative = f"{name}/{filename}"
        repository.check_inside(path, name, relative)
        text = _read_text(name, path, relative)
        if text is None:
            raise RepositoryError(f"{where}: label_filename {relative} does not exist")
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()  # the newline ending the last line starts no label
        labels[output.name] = tuple(lines)
    return labels


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
            # The parser's detail quotes the file (whatever it is), so only
            # the operator's log gets it; callers get the position.
            # str(exc) starts "line:column : "; restate the position in words.
            detail = re.sub(r"^\d+:\d+ : ", "", str(exc))
            where = f" line {exc.GetLine()}, column {exc.GetColumn()}" if exc.GetLine() else ""
            log.error("model '%s': cannot parse %s%s: %s", name, relative, where, detail)
            raise RepositoryError(
                f"model '{name}': cannot parse {relative}{where} (details in the server log)"
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
    if config.platform == ENSEMBLE_PLATFORM:
        if config.backend:
            raise RepositoryError(f"model '{name}': an ensemble has no backend")
        return ENSEMBLE_PLATFORM
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
        for version_dir in version_dirs(directory).values()
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
