"""Shared fixtures for the whole test tree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# `pytest` (unlike `python -m pytest`) does not put the repository root on
# sys.path, and the project is not installed into the venv; the packages live
# at the root.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))


@pytest.fixture(scope="session")
def demo_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled demo model repository, built once per session (~2 s)."""
    from server.demo_models import build_demo_repository

    return build_demo_repository(tmp_path_factory.mktemp("demo") / "models")
