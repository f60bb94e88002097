"""Version directories and Triton's version policy (latest, all, specific)."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

from inferd.protos import model_config_pb2
from inferd.server.repository.errors import RepositoryError

# Triton ignores version directories that are not numbers or that start with
# a zero ("0", "01"); ASCII only, so non-Latin digits are not versions.
_VERSION_DIR = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)
_INT64_MAX = 2**63 - 1


def version_dirs(directory: Path) -> dict[int, Path]:
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


def _model_file(version_dir: Path, filename: str) -> Path | None:
    """The version's model file, or the directory itself when the model has
    none (``filename`` ""; an ensemble); None when it is missing."""
    if not filename:
        return version_dir
    path = version_dir / filename
    return path if path.is_file() else None


def select_versions(
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
    found = {n: _model_file(path, filename) for n, path in version_dirs(directory).items()}
    loadable = {n: path for n, path in found.items() if path is not None}
    what = f"a {filename} file" if filename else "a version directory"
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
                f"{filename or 'directory'} in the repository"
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
        raise RepositoryError(f"model '{name}': no version of the model has {what}")
    chosen = sorted({*selected, *(v for v in extra if v in loadable)})
    return tuple(selected), {v: loadable[v] for v in chosen}


def fallback_versions(
    config: model_config_pb2.ModelConfig,
    directory: Path,
    filename: str,
    selected: Collection[int],
) -> tuple[int, dict[int, Path]]:
    """Under the ``latest`` policy (the default): how many versions it wants,
    and the older versions with a model file that may stand in, newest first,
    for selected ones that fail to load. Other policies name their versions
    exactly: (0, {})."""
    choice = config.version_policy.WhichOneof("policy_choice")
    if choice not in (None, "latest"):
        return 0, {}
    count = config.version_policy.latest.num_versions if choice == "latest" else 1
    oldest = min(selected, default=0)
    found = {n: _model_file(path, filename) for n, path in version_dirs(directory).items()}
    older = {n: path for n, path in found.items() if n < oldest and path is not None}
    return count, {v: older[v] for v in sorted(older, reverse=True)}
