"""A cheap fingerprint of a directory tree, to notice changed model files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def tree_fingerprint(directory: Path, *, max_entries: int = 10_000) -> str:
    """A digest of the names, sizes, inodes and modification times of the
    files under ``directory`` (hidden entries skipped): it changes when a file
    is added, removed, rewritten or renamed into place. Contents are not read,
    so polling a large repository stays cheap; write model files under a
    temporary name and rename them, so a half-written file is never seen as
    final. "" when the directory cannot be read."""
    digest = hashlib.blake2b(digest_size=16)
    seen = 0
    try:
        for base, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for filename in sorted(f for f in files if not f.startswith(".")):
                path = os.path.join(base, filename)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                rel = os.path.relpath(path, directory)
                digest.update(
                    f"{rel}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\n".encode(
                        "utf-8", "surrogateescape"
                    )
                )
                seen += 1
                if seen >= max_entries:
                    return digest.hexdigest()
    except OSError:
        return ""
    return digest.hexdigest()
