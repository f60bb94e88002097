"""What ends a batch run early, each with the exit code ``inferd batch`` returns.

The codes are documented in docs/batch.md; messages are one line for the
operator (no traceback).
"""

from __future__ import annotations

#: Every part scored; bad rows, if any, within ``--max-error-fraction``.
EXIT_OK = 0
#: Every part scored, but more bad rows than ``--max-error-fraction`` allows.
EXIT_TOO_MANY_ERRORS = 1
#: Bad flags, a model that does not load, an output folder of another job.
EXIT_USAGE = 2
#: An input file is missing, unreadable or not in its format.
EXIT_INPUT = 3
#: Scoring failed (the engine, or the remote server with ``--url``).
EXIT_SCORING = 4


class BatchError(Exception):
    """A batch run cannot go on; ``str()`` is one line for the operator."""

    exit_code = EXIT_USAGE


class InputFileError(BatchError):
    """An input file cannot be read (named in the message)."""

    exit_code = EXIT_INPUT


class ScoringError(BatchError):
    """The model failed on rows that fit its signature."""

    exit_code = EXIT_SCORING
