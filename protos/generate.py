"""Regenerate the checked-in stubs from the .proto sources.

Run from anywhere: ``python -m protos.generate``. ``--check`` regenerates into a
temporary folder and exits 1 when the checked-in stubs differ (the drift test
calls it). Paths are resolved from the repository root so imports in the
generated code read ``from protos import ...``.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc  # dev dependency, imported only here

    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p.relative_to(ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def generated_files(base: Path) -> list[Path]:
    return sorted(
        p.relative_to(base) for p in (base / "protos").rglob("*") if p.name.endswith(SUFFIXES)
    )


def check() -> list[str]:
    """Names of stubs that are missing, extra or differ from a fresh build."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = generated_files(Path(tmp))
        present = generated_files(ROOT)
        drift = sorted(str(p) for p in set(fresh) ^ set(present))
        for rel in fresh:
            if rel in present and not filecmp.cmp(Path(tmp) / rel, ROOT / rel, shallow=False):
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
            print("run: python -m protos.generate", file=sys.stderr)
            return 1
        return 0
    generate(ROOT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
