"""docs/cli.md says what ``inferd serve`` accepts: its option tables are the
ones docs/gen_cli_reference.py generates from the settings, and no flag the
page names is one the commands do not have."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path
from types import ModuleType

from inferd.server.cli import main as inferd_main
from inferd.server.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
CLI_PAGE = ROOT / "docs" / "cli.md"
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_ROW_FLAGS = re.compile(r"^\| ((?:`--[a-z0-9-]+`(?:, )?)+) \|")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_cli_reference", ROOT / "docs" / "gen_cli_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


GEN = _generator()


def serve_flags() -> set[str]:
    """Every flag ``inferd serve`` has, boolean ``--no-`` forms included."""
    flags = {s.flag for s in SETTINGS}
    return flags | {"--no-" + s.flag[2:] for s in SETTINGS if s.kind is bool}


def old_flags() -> set[str]:
    return {old.flag for s in SETTINGS for old in s.option.old_flags}


def other_command_flags() -> set[str]:
    """The flags of the other ``inferd`` commands, read from their ``--help``."""
    found: set[str] = set()
    verbs = ["list", "load", "unload", "stage", "route", "promote", "rollback", "audit"]
    for argv in [
        ["infer"],
        ["models"],
        *(["models", verb] for verb in verbs),
        ["build-engine"],
        ["demo-models"],
        ["batch"],
    ]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            inferd_main([*argv, "--help"])
        found |= set(_FLAG.findall(out.getvalue()))
    return found


def table_flag_problems(page: str) -> list[str]:
    """Flags the generated tables miss or name beyond the settings."""
    block = page.partition(GEN.START)[2].partition(GEN.END)[0]
    options, _, old_table = block.partition("Old spellings")
    listed: set[str] = set()
    for line in options.splitlines():
        match = _ROW_FLAGS.match(line)
        if match:
            listed |= set(_FLAG.findall(match[1]))
    listed_old = {line.split("`")[1] for line in old_table.splitlines() if line.startswith("| `")}
    problems = [f"missing: {flag}" for flag in sorted(serve_flags() - listed)]
    problems += [f"not a setting: {flag}" for flag in sorted(listed - serve_flags())]
    problems += [f"missing old spelling: {flag}" for flag in sorted(old_flags() - listed_old)]
    problems += [f"not an old spelling: {flag}" for flag in sorted(listed_old - old_flags())]
    return problems


def unknown_flags(page: str, known: set[str]) -> list[str]:
    return sorted(set(_FLAG.findall(page)) - known)


def test_cli_page_tables_are_generated_from_the_settings() -> None:
    page = CLI_PAGE.read_text(encoding="utf-8")
    assert GEN.rewritten(page) == page, "docs/cli.md is stale: run python docs/gen_cli_reference.py"


def test_cli_page_lists_every_serve_flag_and_no_other() -> None:
    assert table_flag_problems(CLI_PAGE.read_text(encoding="utf-8")) == []


def test_every_flag_the_cli_page_names_exists() -> None:
    known = serve_flags() | old_flags() | other_command_flags()
    assert unknown_flags(CLI_PAGE.read_text(encoding="utf-8"), known) == []


def test_the_checks_catch_a_missing_and_an_unknown_flag() -> None:
    page = CLI_PAGE.read_text(encoding="utf-8")
    # The old-spelling row first: it holds the new flag's cell too.
    tampered = page.replace("| `--grace` | `--grace-s` |", "| `--graceful` | `--grace-s` |")
    tampered = tampered.replace("| `--grace-s` |", "| `--grace-seconds` |")
    assert table_flag_problems(tampered) == [
        "missing: --grace-s",
        "not a setting: --grace-seconds",
        "missing old spelling: --grace",
        "not an old spelling: --graceful",
    ]
    assert GEN.rewritten(tampered) != tampered
    assert unknown_flags("run `inferd serve --grace-s 5 --gracefull`", serve_flags()) == [
        "--gracefull"
    ]
