"""``inferd infer`` and ``inferd models``: client subcommands for the inferd CLI.

``server/cli.py`` dispatches here; each entry point takes the arguments after
the subcommand name and returns the exit status: 0 success, 1 the server
refused or could not be reached, 2 bad arguments or input files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from inferd.clients import admin, rest
from inferd.clients._codec import InferResult, NDArray
from inferd.clients.errors import InferenceServerError
from inferd.clients.sync import InferenceClient
from inferd.protos.datatypes import v2_datatype

DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_HTTP_URL = "127.0.0.1:8000"


def infer_main(argv: list[str]) -> int:
    """``inferd infer MODEL --input NAME=FILE.npy [...] [--output NAME ...]``."""
    parser = argparse.ArgumentParser(
        prog="inferd infer", description="Send one inference request and print the outputs."
    )
    parser.add_argument("model", help="model name")
    parser.add_argument(
        "--input",
        "-i",
        dest="inputs",
        action="append",
        required=True,
        type=_input_spec,
        metavar="NAME=FILE.npy",
        help="an input tensor from a .npy file (repeat for each input)",
    )
    parser.add_argument(
        "--output",
        "-o",
        dest="outputs",
        action="append",
        metavar="NAME",
        help="request only this output (repeatable; default: all)",
    )
    _add_url(parser)
    parser.add_argument("--version", default="", help="model version (default: server's choice)")
    parser.add_argument("--timeout", type=float, help="deadline in seconds")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--http",
        action="store_true",
        help=f"use the HTTP/REST protocol (--url default {DEFAULT_HTTP_URL})",
    )
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args

    inputs: dict[str, NDArray] = {}
    for name, path in args.inputs:
        if name in inputs:
            return _fail(f"input {name!r} given more than once", 2)
        try:
            inputs[name] = _load_npy(path)
        except (OSError, ValueError, EOFError) as err:
            return _fail(f"input {name!r}: cannot read {path}: {err}", 2)

    try:
        if args.http:
            url = DEFAULT_HTTP_URL if args.url == DEFAULT_URL else args.url
            result = rest.infer(
                url,
                args.model,
                inputs,
                outputs=args.outputs,
                version=args.version,
                timeout=args.timeout,
            )
        else:
            with InferenceClient(args.url) as client:
                result = client.infer(
                    args.model,
                    inputs,
                    outputs=args.outputs,
                    version=args.version,
                    timeout=args.timeout,
                )
    except (InferenceServerError, rest.HttpInferenceError) as err:
        return _fail(str(err), 1)
    except (ValueError, TypeError) as err:  # an input the protocol cannot carry
        return _fail(str(err), 2)

    if args.json:
        print(json.dumps(_result_json(result), indent=2))
    else:
        print(f"model {result.model_name} version {result.model_version}")
        for name, array in result.items():
            print(f"{name}  {v2_datatype(array.dtype)}  {list(array.shape)}")
            print(repr(array))
    return 0


MODELS_VERBS = (
    "list",
    "load",
    "unload",
    "route",
    "stage",
    "promote",
    "rollback",
    "audit",
    "drift",
)


def models_main(argv: list[str]) -> int:
    """``inferd models [VERB ...]``: list (the default), load, unload, route,
    stage, promote, rollback, audit, drift."""
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["list", *argv]  # plain `inferd models [--ready] [--json]` lists
    parser = argparse.ArgumentParser(
        prog="inferd models",
        description="List models, load/unload them, and manage routes, stages and rollouts.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=help_, description=help_)
        _add_url(sub)
        sub.add_argument(
            "--metadata",
            "-H",
            action="append",
            default=[],
            type=_metadata_spec,
            metavar="KEY=VALUE",
            help="gRPC metadata sent with the call (e.g. authorization='Bearer ...')",
        )
        sub.add_argument("--json", action="store_true", help="print the answer as JSON")
        return sub

    listing = verb("list", "the server's repository index (the default verb)")
    listing.add_argument("--ready", action="store_true", help="only models ready for inference")
    for name, help_ in (
        ("load", "load or reload a model (server in --model-control-mode explicit)"),
        ("unload", "unload every version of a model (explicit mode)"),
    ):
        verb(name, help_).add_argument("model")
    route = verb("route", "show routes, or set or clear a model's challenger")
    route.add_argument("model", nargs="?", default="", help="model (default: show all)")
    route.add_argument("--challenger", type=int, help="version to route to (0 clears)")
    route.add_argument("--clear", action="store_true", help="remove the challenger")
    route.add_argument("--mode", default="canary", choices=list(admin.MODES))
    route.add_argument("--weight", type=float, default=0.0, help="challenger share, 0..1")
    route.add_argument("--window", type=float, default=0.0, help="guardrail window, seconds")
    route.add_argument("--min-requests", type=int, default=0)
    route.add_argument("--max-error-ratio", type=float, default=0.0)
    route.add_argument("--max-p99-ms", type=float, default=0.0)
    route.add_argument("--max-disagreement", type=float, default=0.0)
    route.add_argument("--reason", default="", help="recorded in the audit log")
    stage = verb("stage", "move a version to a stage (production: promote)")
    stage.add_argument("model")
    stage.add_argument("version", type=int)
    stage.add_argument("stage", choices=list(admin.STAGES))
    stage.add_argument("--reason", default="")
    promote = verb("promote", "make a version (default: the challenger) the champion")
    promote.add_argument("model")
    promote.add_argument("version", type=int, nargs="?", default=0)
    promote.add_argument("--reason", default="")
    rollback = verb("rollback", "drop the challenger, or restore the previous champion")
    rollback.add_argument("model")
    rollback.add_argument("--reason", default="")
    audit = verb("audit", "the audit log, newest first")
    audit.add_argument("model", nargs="?", default="")
    audit.add_argument("--limit", type=int, default=50)
    verb("drift", "drift of each tensor against its reference (docs/monitoring.md)").add_argument(
        "model", nargs="?", default=""
    )

    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    try:
        return _models_verb(args)
    except InferenceServerError as err:
        return _fail(str(err), 1)
    except ValueError as err:
        return _fail(str(err), 2)


def _models_verb(args: argparse.Namespace) -> int:
    metadata = list(args.metadata)
    if args.verb in ("list", "load", "unload"):
        with InferenceClient(args.url, metadata=metadata) as client:
            if args.verb == "load":
                client.load_model(args.model)
                return _done(args, {"model": args.model, "loaded": True})
            if args.verb == "unload":
                client.unload_model(args.model)
                return _done(args, {"model": args.model, "unloaded": True})
            models = client.repository_index(ready=args.ready)
        if args.json:
            print(json.dumps(models, indent=2))
        else:
            columns = ("name", "version", "state", "reason")
            _table([[str(m.get(c, "")) for c in columns] for m in models], columns)
        return 0
    with admin.AdminClient(args.url, metadata=metadata) as client:
        if args.verb == "route":
            if args.clear or args.challenger is not None:
                if not args.model:
                    raise ValueError("name the model whose route to set")
                guardrails = {
                    "window_seconds": args.window,
                    "min_requests": args.min_requests,
                    "max_error_ratio": args.max_error_ratio,
                    "max_p99_ms": args.max_p99_ms,
                    "max_disagreement_ratio": args.max_disagreement,
                }
                routes = [
                    client.set_route(
                        args.model,
                        0 if args.clear else args.challenger,
                        args.mode,
                        args.weight,
                        guardrails,
                        args.reason,
                    )
                ]
            else:
                routes = client.routes(args.model)
            return _print_routes(args, routes)
        if args.verb == "stage":
            route = client.set_stage(args.model, args.version, args.stage, args.reason)
        elif args.verb == "promote":
            route = client.promote(args.model, args.version, args.reason)
        elif args.verb == "rollback":
            route = client.rollback(args.model, args.reason)
        elif args.verb == "drift":
            return _print_drift(args, client.drift(args.model))
        else:
            entries = client.audit_log(args.model, args.limit)
            if args.json:
                print(json.dumps(entries, indent=2))
            else:
                fields = ("id", "time", "principal", "action", "model", "reason")
                _table([[str(e.get(c, "")) for c in fields] for e in entries], fields)
            return 0
        return _print_routes(args, [route])


def _done(args: argparse.Namespace, result: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.verb}ed {args.model}" if args.verb != "unload" else f"unloaded {args.model}")
    return 0


def _print_routes(args: argparse.Namespace, routes: list[dict[str, Any]]) -> int:
    if args.json:
        print(json.dumps(routes, indent=2))
        return 0
    for route in routes:
        mode = str(route.get("mode", "")).removeprefix("ROUTE_MODE_").lower()
        line = f"{route['model']}  champion {route.get('champion') or '-'}"
        if route.get("challenger"):
            line += f"  challenger {route['challenger']} ({mode} {route.get('weight', 0):.0%})"
        line += f"  serving {route.get('serving') or '-'}  revision {route.get('revision', 0)}"
        print(line)
        stages = ", ".join(
            f"{s['version']} {str(s.get('stage', '')).removeprefix('STAGE_').lower()}"
            + (" (ready)" if s.get("ready") else "")
            for s in route.get("stages", [])
        )
        if stages:
            print(f"  stages: {stages}")
        if route.get("previous_champions"):
            print(f"  previous champions: {route['previous_champions']}")
        if route.get("tripped"):
            print(f"  rolled back by guardrails: {route['tripped']}")
        rows = [
            [
                s["variant"],
                str(s["version"]),
                str(s.get("requests", 0)),
                f"{s.get('traffic_share', 0.0):.1%}",
                str(s.get("errors", 0)),
                f"{s.get('window_p50_ms', 0.0):.2f}",
                f"{s.get('window_p99_ms', 0.0):.2f}",
                str(s.get("shadow_requests", 0)),
                str(s.get("shadow_disagreements", 0)),
            ]
            for s in route.get("stats", [])
        ]
        if rows:
            columns = (
                "variant",
                "version",
                "requests",
                "share",
                "errors",
                "p50_ms",
                "p99_ms",
                "shadow",
                "disagree",
            )
            _table(rows, columns, indent="  ")
    return 0


def _print_drift(args: argparse.Namespace, reply: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    if not reply.get("monitoring"):
        print("monitoring is off on this server (it needs --metrics-port and --monitoring)")
        return 0
    threshold = float(reply.get("psi_threshold", 0.0))
    rows = [
        [
            t["model"],
            str(t.get("version", 0)),
            t["tensor"],
            f"{t.get('psi', 0.0):.3f}",
            f"{t.get('js_distance', 0.0):.3f}",
            "DRIFT" if t.get("psi", 0.0) > threshold else "ok",
            str(t.get("window_rows", 0)),
            f"{t.get('reference_rows', 0)} ({t.get('reference_source', '')})",
        ]
        for t in reply.get("tensors", [])
    ]
    print(f"PSI threshold {threshold:g}")
    if not rows:
        print("no drift computed yet (windows are still filling)")
        return 0
    columns = ("model", "version", "tensor", "psi", "js", "status", "window", "reference")
    _table(rows, columns)
    return 0


def _table(rows: list[list[str]], columns: Sequence[str], indent: str = "") -> None:
    rows = [[c.upper() for c in columns], *rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(indent + "  ".join(cells).rstrip())


def _metadata_spec(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip().lower(), value


def _add_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"server gRPC address (default {DEFAULT_URL})"
    )


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace | int:
    # argparse exits on --help and on errors; the CLI wants a status back.
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2


def _input_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name, path


def _load_npy(path: str) -> NDArray:
    # No pickles: a .npy from elsewhere must not run code. BYTES inputs
    # therefore come as fixed-width str/bytes arrays, not object arrays.
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise ValueError("not a .npy array file (an .npz archive?)")
    return loaded


def _fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def _result_json(result: InferResult) -> dict[str, Any]:
    return {
        "model_name": result.model_name,
        "model_version": result.model_version,
        "id": result.id,
        "parameters": result.parameters,
        "outputs": {
            name: {
                "datatype": v2_datatype(array.dtype),
                "shape": list(array.shape),
                "data": _json_data(array),
            }
            for name, array in result.items()
        },
    }


def _json_data(array: NDArray) -> Any:
    datatype = v2_datatype(array.dtype)
    if datatype == "BYTES":
        # JSON has no bytes; non-UTF-8 bytes show as \x escapes.
        text = [bytes(b).decode("utf-8", "backslashreplace") for b in array.reshape(-1)]
        return np.array(text, dtype=object).reshape(array.shape).tolist()
    if datatype in ("FP16", "BF16"):
        return array.astype(np.float64).tolist()
    return array.tolist()
