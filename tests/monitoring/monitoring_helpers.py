"""Shared by the monitoring tests: a repository with the digits model, its
data, and waiting for the monitoring thread."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from metrics_scrape import scrape, value

MODEL = "digits_mlp"


def digits() -> np.ndarray:
    """The digits data set's pixels (0..16), float32 ``[1797, 64]``."""
    from sklearn.datasets import load_digits

    return np.asarray(load_digits().data, np.float32)


def digits_repository(demo_repository: Path, root: Path) -> Path:
    """A repository holding only a copy of the demo digits model."""
    shutil.copytree(demo_repository / MODEL, root / MODEL)
    return root


def metric(port: int, sample: str, **labels: str) -> float:
    return value(scrape(port), sample, **labels)


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)
