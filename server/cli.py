"""The ``inferd`` command: ``serve``, ``infer``, ``models``, ``demo-models``,
``build-engine``, ``batch``, ``monitor`` (``COMMANDS``), and ``--version``.

Start-up errors print one ``error: ...`` line and exit 2; no traceback.
A plain ``pip install inferd`` is the client: ``infer`` and ``models`` work
there, ``serve`` says which extra it needs.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from inferd import __version__
from inferd.server.extras import missing_module, needs_extra

DEMO_ENV = "INFERD_DEMO_REPOSITORY"

#: Every subcommand and its ``--help`` line; ``inferd --help`` lists them all.
COMMANDS: dict[str, str] = {
    "serve": "run the gRPC inference server",
    "infer": "send one request (inferd infer --help)",
    "models": "list and manage the server's models (inferd models --help)",
    "demo-models": "build the bundled demo model repository",
    "build-engine": "build a TensorRT plan from an ONNX model (inferd build-engine --help)",
    "batch": "score input files into Parquet predictions (inferd batch --help)",
    "monitor": "model monitoring tools: reference distributions (inferd monitor --help)",
}

log = logging.getLogger("inferd.cli")


def default_demo_repository() -> Path:
    """Where ``inferd serve`` with no repository builds the bundled demo models."""
    env = os.environ.get(DEMO_ENV)
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "inferd" / "demo-models"


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from inferd.server.settings import DESCRIPTION, add_serve_arguments

    p = sub.add_parser("serve", help=COMMANDS["serve"], description=DESCRIPTION)
    add_serve_arguments(p)


def missing_server_module() -> str | None:
    """The first module ``inferd serve`` imports that is not installed (the
    ``server`` extra is missing), or None."""
    return missing_module("inferd.engines.onnx", "inferd.server.app")


def _serve(opts: argparse.Namespace) -> int:
    missing = missing_server_module()
    if missing is not None:
        return _error(needs_extra("serve", "server", missing))
    from inferd.server.app import StartupError, serve
    from inferd.server.settings import SettingsError, read_serve_settings
    from inferd.server.telemetry.logs import resolve_format

    try:
        settings = read_serve_settings(opts, os.environ)
    except SettingsError as exc:
        return _error(str(exc))
    level, fmt = settings.values["log_level"], settings.values["log_format"]
    # Resolved once here so workers (whose stderr is the same) agree.
    setup = functools.partial(_setup_logging, level, resolve_format(fmt))
    setup()
    for line in settings.deprecations():
        log.warning(line, extra={"event": "deprecated_flag"})
    repository = settings.values["model_repository"]
    if repository is None:
        try:
            repository = _build_demo(default_demo_repository())
        except ImportError as exc:
            return _error(_demo_missing(exc))
    try:
        config = settings.to_config(model_repository=repository)
    except SettingsError as exc:
        return _error(str(exc))
    try:
        if config.workers > 1:
            from inferd.server.workers import run_workers

            return run_workers(config, config.workers, setup)
        _run(serve(config))
    except StartupError as exc:
        return _error(str(exc))
    return 0


def _setup_logging(level: str, fmt: str = "text") -> None:
    from inferd.server.telemetry.logs import setup_logging

    setup_logging(level, fmt)


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop  # the fast extra; a faster loop when it is installed

        uvloop.run(main)
    except ImportError:
        asyncio.run(main)


def _build_demo(dest: Path, *, force: bool = False) -> Path:
    # Imported here: its training stack (onnx, scikit-learn) is the optional `demo` extra.
    from inferd.server.demo_models import build_demo_repository

    return build_demo_repository(dest, force=force)


def _demo_missing(exc: ImportError) -> str:
    return (
        f"the demo models need the 'demo' extra (pip install 'inferd[demo]'): "
        f"{exc.name or exc} is not installed"
    )


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # Client subcommands own their argument parsing.
    if args and args[0] in ("infer", "models"):
        from inferd.clients.cli import infer_main, models_main

        return (infer_main if args[0] == "infer" else models_main)(args[1:])
    if args and args[0] == "build-engine":
        from inferd.server.build_engine import main as build_engine_main

        return build_engine_main(args[1:])
    if args and args[0] == "batch":
        from inferd.server.batch.cli import main as batch_main

        return batch_main(args[1:])
    if args and args[0] == "monitor":
        from inferd.server.monitoring.cli import main as monitor_main

        return monitor_main(args[1:])
    parser = argparse.ArgumentParser(prog="inferd", description="gRPC inference server")
    parser.add_argument("--version", action="version", version=f"inferd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    for name in ("infer", "models", "build-engine", "batch", "monitor"):  # own arguments
        sub.add_parser(name, help=COMMANDS[name])
    demo = sub.add_parser("demo-models", help=COMMANDS["demo-models"])
    demo.add_argument("dest", type=Path)
    demo.add_argument("--force", action="store_true")
    opts = parser.parse_args(args)
    if opts.command == "serve":
        return _serve(opts)
    if opts.command == "demo-models":
        try:
            _setup_logging("INFO", "auto")  # a progress line per model, on stderr
            print(_build_demo(opts.dest, force=opts.force))
        except FileExistsError as exc:
            return _error(str(exc))
        except ImportError as exc:
            return _error(_demo_missing(exc))
        return 0
    parser.error(f"unknown command {opts.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
