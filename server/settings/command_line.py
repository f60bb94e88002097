"""``inferd serve``'s flags and ``INFERD_*`` variables, generated from
``ServerConfig``'s fields; a flag beats a variable, a variable beats the
default."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferd.server.settings.checks import SettingsError, check
from inferd.server.settings.config import ServerConfig
from inferd.server.settings.options import BadValue, OldFlag, Setting, scaled, settings

#: Every setting of ``inferd serve``, in ``--help`` order.
SETTINGS: tuple[Setting, ...] = settings(ServerConfig)
_BY_NAME = {s.name: s for s in SETTINGS}
#: Namespace attribute where old spellings given are recorded.
_OLD_USED = "_old_flags_used"

DESCRIPTION = (
    "Run the gRPC inference server. Every option can also be set by an environment "
    "variable, INFERD_ and the option's name in capitals (--grace-s: INFERD_GRACE_S); a "
    "flag beats the variable. SECONDS: a number of seconds (0.5); SIZE: bytes, or with "
    "KiB, MiB or GiB (64MiB); BOOL variables: true/false, 1/0, yes/no, on/off; lists "
    "(INFERD_LOAD_MODELS): comma-separated."
)


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting (and the old spellings, hidden) to ``parser``.
    A flag not given is absent from the parsed namespace, so the
    environment and the default can fill it (``read_serve_settings``)."""
    groups: dict[str, argparse._ActionsContainer] = {"server": parser}
    for setting in SETTINGS:
        group = setting.option.group
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        target = groups[group]
        common: dict[str, Any] = {
            "dest": setting.name,
            "default": argparse.SUPPRESS,
            "help": _help(setting),
        }
        if setting.kind is bool:
            # `--x`, `--x false` (Triton spells its flags' values) and `--no-x`.
            target.add_argument(
                setting.flag, nargs="?", const=True, type=setting.parse,
                metavar="true|false", **common,
            )  # fmt: skip
            target.add_argument(
                "--no-" + setting.flag[2:], dest=setting.name, action="store_false",
                default=argparse.SUPPRESS, help=argparse.SUPPRESS,
            )  # fmt: skip
        elif setting.kind is tuple:
            target.add_argument(setting.flag, action="append", metavar=_metavar(setting), **common)
        elif setting.option.choices:
            target.add_argument(setting.flag, choices=setting.option.choices, **common)
        else:
            target.add_argument(
                setting.flag, type=setting.parse, metavar=_metavar(setting), **common
            )
        for old in setting.option.old_flags:
            target.add_argument(
                old.flag,
                dest=setting.name,
                default=argparse.SUPPRESS,
                action=_OldFlagAction,
                type=_old_reader(old, setting),
                help=argparse.SUPPRESS,
                new_flag=setting.flag,
                zero_is_none=setting.option.zero_is_none,
            )


@dataclass
class ServeSettings:
    """The settings of one ``inferd serve``: each value and where it came from."""

    values: dict[str, Any]
    #: "flag" or "env" for each value not a default.
    sources: dict[str, str]
    #: One line per old flag spelling used (``deprecations``).
    old_flags: list[tuple[str, str]] = field(default_factory=list)

    def name(self, setting: str) -> str:
        """The setting as the operator gave it (the flag when not given at all)."""
        known = _BY_NAME.get(setting)
        if known is None:
            return setting
        return known.env if self.sources.get(setting) == "env" else known.flag

    def deprecations(self) -> list[str]:
        return [
            f"{old} is deprecated and goes in the next release; use {new} ({_unit(_by_flag(new))})"
            for old, new in self.old_flags
        ]

    def to_config(self, **overrides: Any) -> ServerConfig:
        """The checked ``ServerConfig``; raises SettingsError."""
        values = {**self.values, **overrides}
        if values.get("model_repository") is None:
            raise SettingsError("no model repository (--model-repository)")
        config = ServerConfig(**values)
        check(config, self.name)
        return config


def read_serve_settings(opts: argparse.Namespace, environ: Mapping[str, str]) -> ServeSettings:
    """Each setting from its flag in ``opts``, else its ``INFERD_*`` variable
    in ``environ`` (an empty one counts as unset), else ``inferd serve``'s
    default. Raises SettingsError naming a variable whose text is not a value."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        text = environ.get(setting.env, "")
        if hasattr(opts, setting.name):
            value = getattr(opts, setting.name)
            values[setting.name] = tuple(value) if setting.kind is tuple else value
            sources[setting.name] = "flag"
        elif text.strip():
            try:
                values[setting.name] = setting.parse(text)
            except BadValue as exc:
                raise SettingsError(f"{setting.env}: {exc}") from None
            sources[setting.name] = "env"
        else:
            values[setting.name] = setting.serve_default
    old = list(dict.fromkeys(getattr(opts, _OLD_USED, ())))
    return ServeSettings(values, sources, old)


def parse_serve_settings(
    argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> ServeSettings:
    """``inferd serve ARGV`` as settings (argparse exits 2 on a bad flag);
    ``environ`` defaults to none at all, not the process's."""
    parser = argparse.ArgumentParser(prog="inferd serve", description=DESCRIPTION)
    add_serve_arguments(parser)
    return read_serve_settings(parser.parse_args(list(argv)), environ or {})


class _OldFlagAction(argparse.Action):
    def __init__(self, *args: Any, new_flag: str, zero_is_none: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.new_flag = new_flag
        self.zero_is_none = zero_is_none

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, None if self.zero_is_none and values == 0 else values)
        used = getattr(namespace, _OLD_USED, [])
        setattr(namespace, _OLD_USED, [*used, (option_string or "", self.new_flag)])


def _old_reader(old: OldFlag, setting: Setting) -> Callable[[str], Any]:
    if old.kind is Path:
        return Path
    return scaled(old, setting.kind)


def _by_flag(flag: str) -> Setting:
    return next(s for s in SETTINGS if s.flag == flag)


def _unit(setting: Setting) -> str:
    if setting.name.endswith("_s"):
        return "seconds"
    if setting.is_size:
        return "bytes, or e.g. 64MiB"
    return "same value"


def _metavar(setting: Setting) -> str:
    if setting.option.metavar:
        return setting.option.metavar
    if setting.name.endswith("_s"):
        return "SECONDS"
    if setting.is_size:
        return "SIZE"
    if setting.name.endswith("_port"):
        return "PORT"
    if setting.kind is int:
        return "N"
    if setting.kind is Path:
        return "PATH"
    return setting.name.rsplit("_", 1)[-1].upper()


def _help(setting: Setting) -> str:
    text = setting.option.help
    if "default" in text:
        suffix = f"env {setting.env}"
    else:
        suffix = f"default {setting.shown(setting.serve_default)}; env {setting.env}"
    return f"{text} ({suffix})".replace("%", "%%")
