"""Errors of the model repository, and the quoting that keeps them safe to show.

Every ``RepositoryError`` message may be shown to a remote caller, so
messages name models and paths relative to the root, never absolute paths
(and never ``str(OSError)``, which carries the absolute file name).
"""

from __future__ import annotations

_MAX_NAME_IN_MESSAGE = 120


class RepositoryError(Exception):
    """A model in the repository is missing, malformed or inconsistent with its
    model file. The message is safe to show a remote caller."""


class ModelNotFoundError(RepositoryError):
    """No model of that name is in the repository."""


def quote(name: str) -> str:
    # repr() escapes control characters; the cap keeps a hostile name short.
    if len(name) > _MAX_NAME_IN_MESSAGE:
        name = name[:_MAX_NAME_IN_MESSAGE] + "..."
    return repr(name)
