"""Which optional extra a command lacks: a plain ``pip install inferd`` is
the client, and server-side commands name the extra to install in one line
instead of failing with a traceback."""

from __future__ import annotations

import importlib


def missing_module(*modules: str) -> str | None:
    """The first module that importing ``modules`` (in order) finds not
    installed, or None when all import. A missing module of inferd itself
    is a broken install, not a missing extra: it is raised."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] == "inferd":
                raise
            return exc.name
    return None


def needs_extra(command: str, extra: str, missing: str) -> str:
    """The one-line reason ``inferd <command>`` cannot run here."""
    return (
        f"inferd {command} needs the {extra} extra (pip install 'inferd[{extra}]'): "
        f"{missing} is not installed"
    )
