"""Regenerate the checked-in stubs from the .proto sources.

Run from anywhere: ``python -m inferd.protos.generate``. ``--check`` regenerates
into a temporary folder and exits 1 when the checked-in stubs differ (the drift
test calls it). protoc runs from protos/, so the descriptors carry the file names
Triton's own stubs register (``grpc_service.proto``, ``model_config.proto``);
the generated imports are then rewritten to the ``inferd.protos`` import root.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
PACKAGE = "inferd.protos"
#: The module name the generated code gives its message classes.
_BUILD = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, )'([\w.]+)'")
#: protoc's imports of sibling stubs: ``import x_pb2 as ...`` or ``from a.b import x_pb2 ...``.
_IMPORT = re.compile(
    r"^(import|from) ((?:\w+\.)*\w+_pb2\b|(?:\w+\.)*\w+(?= import \w+_pb2\b))", re.M
)


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # dev dependency, imported only here

    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(PROTO_DIR)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for path in out_dir.rglob("*"):
        if path.name.endswith(SUFFIXES):
            path.write_text(_rooted(path.read_text()))


def _rooted(source: str) -> str:
    """Point protoc's imports of our own stubs at the ``inferd.protos`` package."""
    own = {p.stem + "_pb2" for p in proto_files()}

    def rewrite(match: re.Match[str]) -> str:
        keyword, module = match.groups()
        if keyword == "import" and module in own:  # `import x_pb2 as y`
            return f"from {PACKAGE} import {module}"
        if keyword == "from" and module.split(".")[0] != "google":
            return f"from {PACKAGE}.{module}"
        return match.group(0)

    source = _IMPORT.sub(rewrite, source)
    return _BUILD.sub(lambda m: f"{m.group(1)}'{PACKAGE}.{m.group(2)}'", source)


def generated_files(base: Path) -> list[Path]:
    return sorted(p.relative_to(base) for p in base.rglob("*") if p.name.endswith(SUFFIXES))


def check() -> list[str]:
    """Names of stubs that are missing, extra or differ from a fresh build."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = generated_files(Path(tmp))
        present = generated_files(PROTO_DIR)
        drift = sorted(str(p) for p in set(fresh) ^ set(present))
        for rel in fresh:
            if rel in present and not filecmp.cmp(Path(tmp) / rel, PROTO_DIR / rel, shallow=False):
                drift.append(str(rel))
        return drift


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when stubs drift")
    opts = parser.parse_args(argv)
    if opts.check:
        drift = check()
        if drift:
            print("stubs differ from protos/: " + ", ".join(drift), file=sys.stderr)
            print("run: python -m inferd.protos.generate", file=sys.stderr)
            return 1
        return 0
    generate(PROTO_DIR)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
