"""Error messages safe to show a remote caller.

Engines raise ``EngineError`` with messages that may travel to a client, so
the runtime's own text (onnxruntime, TensorRT, CUDA) is reduced to one short
paragraph: model paths replaced, source locations, absolute paths and stack
traces removed, length capped. The original exception stays chained for the
server's own logs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_ORT_PREFIX = re.compile(r"\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*")
_LOAD_PREFIX = re.compile(r"Load model(?: from)? .*? failed\s*:?\s*", re.S)
_STACKTRACE = re.compile(r"\s*Stack ?trace:.*", re.S | re.I)
# ORT_ENFORCE messages start "<file>:<line> <C++ signature> <condition> was false."
_SOURCE_LOCATION = re.compile(
    r"(?:[A-Za-z]:)?[^\s'\":]*[\\/][^\s'\":]+\.(?:h|hh|hpp|c|cc|cpp|cxx|cu|cuh|inc):\d+"
    r"(?:\s+[^\n()]*\([^()\n]*\)(?:\s*const)?)?\s*"
)
# Absolute paths that start a word. Quoted names (ORT writes node names as
# Name:'/fc1/Gemm') are left alone: they are graph names, not files.
_ABS_PATH = re.compile(r"(?:(?<=\s)|^)(?:[A-Za-z]:\\|~?/)[^\s'\",;]+")
_MAX_MESSAGE = 400


def clean_message(text: str, paths: Sequence[str] = ()) -> str:
    """A one-paragraph reason safe to show a remote caller."""
    for p in sorted(paths, key=len, reverse=True):
        if p:
            text = text.replace(p, "<model>")
    text = _STACKTRACE.sub("", text)
    text = _ORT_PREFIX.sub("", text)
    text = _LOAD_PREFIX.sub("", text)
    text = _SOURCE_LOCATION.sub("", text)
    text = _ABS_PATH.sub("<path>", text)
    text = " ".join(text.split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text or "unknown error"
