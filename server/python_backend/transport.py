"""Tensors across the process boundary: shared memory above a small size.

An array of at least ``SHM_MIN_BYTES`` is written once into a new segment
(a file under ``/dev/shm``); the message carries only its name, dtype and
shape. The receiver maps the segment copy-on-write, unlinks its name at once
and wraps the mapping in an array without copying; the memory goes when the
array does. Smaller arrays and BYTES (object) arrays travel in the pickled
message itself. Segment names start with the sender's prefix, so the server
can remove what a dead model process left behind (``sweep``).
"""

from __future__ import annotations

import glob
import itertools
import mmap
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

#: Arrays smaller than this travel inside the message (a segment costs more).
SHM_MIN_BYTES = 64 * 1024

SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()

#: One tensor on the wire: ("inline", array) or ("shm", name, dtype, shape).
Wire = tuple[Any, ...]


class Transport:
    """Packs and unpacks named arrays for one side of one channel."""

    def __init__(self, prefix: str) -> None:
        #: Names of this side's segments start with it (``sweep``).
        self.prefix = prefix
        self._numbers = itertools.count()

    def pack(self, arrays: Mapping[str, np.ndarray]) -> dict[str, Wire]:
        return {name: self.pack_one(array) for name, array in arrays.items()}

    def pack_one(self, array: np.ndarray) -> Wire:
        array = np.asarray(array)
        if array.dtype.hasobject or array.nbytes < SHM_MIN_BYTES:
            return ("inline", array)
        name = f"{self.prefix}-{next(self._numbers)}"
        path = os.path.join(SHM_DIR, name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, array.nbytes)
            segment = mmap.mmap(fd, array.nbytes)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        view = np.ndarray(array.shape, array.dtype, buffer=segment)
        view[...] = array
        del view
        segment.close()
        return ("shm", name, array.dtype, array.shape)


def unpack(wires: Mapping[str, Wire]) -> dict[str, np.ndarray]:
    return {name: unpack_one(wire) for name, wire in wires.items()}


def unpack_one(wire: Wire) -> np.ndarray:
    if wire[0] == "inline":
        array: np.ndarray = wire[1]
        return array
    _, name, dtype, shape = wire
    if "/" in name or name.startswith("."):
        raise ValueError("bad shared-memory segment name")
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        # Private: the receiver may write into its arrays without touching the sender's.
        segment = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE)
    finally:
        os.close(fd)
        os.unlink(path)
    return np.ndarray(shape, dtype, buffer=segment)


def sweep(prefix: str) -> int:
    """Remove segments whose names start with ``prefix`` (a dead process's
    undelivered tensors); returns how many."""
    removed = 0
    for path in glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + "*")):
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed
