"""What a setting is beyond its Python field: help, group, CLI quirks, old
spellings, and how a value is read from text (a flag or an environment
variable).

``ServerConfig`` (server.settings.config) declares each field with
``option(...)``; ``settings()`` turns those fields into ``Setting`` records
from which the command line and the environment are both generated.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "INFERD_"
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SIZE = re.compile(r"\s*(\d+)\s*(|b|kib|mib|gib)\s*", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kib": KiB, "mib": MiB, "gib": GiB}


class BadValue(argparse.ArgumentTypeError):
    """A text value that does not read as its setting's type (argparse shows
    the message as is)."""


@dataclass(frozen=True, slots=True)
class OldFlag:
    """A flag spelling kept for one release: its value times ``factor`` is
    the new setting's value (``--max-message-mb 64`` -> 64 MiB)."""

    flag: str
    factor: float = 1
    #: How the old flag read its value.
    kind: type = float


#: Marker: the command line uses the field's own default.
SAME = object()


@dataclass(frozen=True, slots=True)
class Option:
    help: str
    group: str = "server"
    #: Default for ``inferd serve`` where it differs from the embedded default
    #: (process-wide state the command owns but a library must leave alone).
    serve_default: Any = SAME
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    #: The flag, where it is not the field's name (``--load-model``, repeatable).
    flag: str | None = None
    old_flags: tuple[OldFlag, ...] = ()
    #: 0 given on the command line or in the environment means None.
    zero_is_none: bool = False
    #: Smallest value accepted (numbers); None: any.
    minimum: float | None = None
    #: Settable from outside (False: wiring between server parts).
    public: bool = True


def option(default: Any, **meta: Any) -> Any:
    """A ``ServerConfig`` field with its default and ``Option``."""
    return field(default=default, metadata=described(**meta))


def described(**meta: Any) -> dict[str, Option]:
    """The metadata of a field with an ``Option`` (for a field without a default)."""
    return {"option": Option(**meta)}


@dataclass(frozen=True, slots=True)
class Setting:
    """One server option as the command line and the environment see it."""

    name: str
    #: The value type without None (bool, int, float, str, Path, tuple).
    kind: type
    optional: bool
    default: Any
    option: Option

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def serve_default(self) -> Any:
        chosen = self.option.serve_default
        return self.default if chosen is SAME else chosen

    @property
    def is_size(self) -> bool:
        return self.name.endswith("_bytes")

    def parse(self, text: str) -> Any:
        """The value of one command-line or environment text."""
        if self.kind is bool:
            return parse_bool(text)
        if self.kind is tuple:
            return tuple(part.strip() for part in text.split(",") if part.strip())
        value = self._parse_scalar(text)
        if self.option.choices and value not in self.option.choices:
            raise BadValue(f"{text!r} is not one of {', '.join(self.option.choices)}")
        if self.option.zero_is_none and value == 0:
            return None
        return value

    def _parse_scalar(self, text: str) -> Any:
        if self.kind is int:
            return parse_size(text) if self.is_size else parse_int(text)
        if self.kind is float:
            return parse_float(text)
        if self.kind is Path:
            return Path(text)
        return text

    def shown(self, value: Any) -> str:
        """A value as ``--help`` shows it."""
        if value is None or value == ():
            return "none"
        if isinstance(value, bool):
            return "on" if value else "off"
        if self.is_size and isinstance(value, int):
            return format_size(value)
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


_SETTINGS: dict[type, tuple[Setting, ...]] = {}


def settings(config_type: type) -> tuple[Setting, ...]:
    """Every public setting of ``config_type``'s fields, in declaration order."""
    if config_type not in _SETTINGS:
        _SETTINGS[config_type] = _read_settings(config_type)
    return _SETTINGS[config_type]


def _read_settings(config_type: type) -> tuple[Setting, ...]:
    hints = typing.get_type_hints(config_type)
    found = []
    for f in dataclasses.fields(config_type):
        opt = f.metadata.get("option")
        if not isinstance(opt, Option) or not opt.public:
            continue
        kind, optional = _unwrap(hints[f.name])
        default = None if f.default is dataclasses.MISSING else f.default
        found.append(Setting(f.name, kind, optional, default, opt))
    return tuple(found)


def _unwrap(hint: Any) -> tuple[type, bool]:
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        rest = [a for a in args if a is not type(None)]
        assert len(rest) == 1, hint
        return _unwrap(rest[0])[0], True
    origin = typing.get_origin(hint)
    if origin is tuple:
        return tuple, False
    assert isinstance(hint, type), hint
    return hint, False


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise BadValue(f"{text!r} is not a boolean (true/false, 1/0, yes/no, on/off)")


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise BadValue(f"{text!r} is not an integer") from None


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadValue(f"{text!r} is not a number") from None


def parse_size(text: str) -> int:
    """Bytes: ``1048576``, ``1024KiB``, ``64MiB``, ``1GiB``."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise BadValue(f"{text!r} is not a size (bytes, or a number with KiB, MiB or GiB)")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


def format_size(value: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if value and value % size == 0:
            return f"{value // size} {unit}"
    return f"{value} bytes"


def scaled(old: OldFlag, kind: type) -> Callable[[str], Any]:
    """The reader of an old flag: its text, in the old unit, as the new value."""

    def read(text: str) -> Any:
        value = parse_int(text) if old.kind is int else parse_float(text)
        result = value * old.factor
        if kind is int:
            if not math.isfinite(result):
                raise BadValue(f"{text!r} is not a finite number")
            return int(result)
        return result

    return read
