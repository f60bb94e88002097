"""Tensors between the server and a model process: shared memory above
``SHM_MIN_BYTES``, mapped by the receiver without a copy and unlinked at once."""

from __future__ import annotations

import os

import numpy as np

from inferd.server.python_backend.transport import (
    SHM_DIR,
    SHM_MIN_BYTES,
    Transport,
    sweep,
    unpack,
)


def _segments(prefix: str) -> list[str]:
    return [name for name in os.listdir(SHM_DIR) if name.startswith(prefix)]


def test_large_arrays_cross_through_shared_memory_and_leave_nothing_behind() -> None:
    transport = Transport(f"inferd-test-{os.getpid()}-large")
    big = np.arange(SHM_MIN_BYTES // 4 * 3, dtype=np.float32).reshape(3, -1)[:, ::2]
    wires = transport.pack({"big": big})
    assert wires["big"][0] == "shm"
    assert _segments(transport.prefix) != []
    arrays = unpack(wires)
    np.testing.assert_array_equal(arrays["big"], big)
    assert _segments(transport.prefix) == []  # unlinked on arrival
    arrays["big"][0, 0] = -1.0  # the receiver's copy-on-write view is writable
    assert big[0, 0] == 0.0


def test_small_and_bytes_arrays_travel_inline() -> None:
    transport = Transport(f"inferd-test-{os.getpid()}-small")
    text = np.array([b"a" * SHM_MIN_BYTES], dtype=object)
    wires = transport.pack({"small": np.ones(4, np.float32), "text": text})
    assert wires["small"][0] == "inline"
    assert wires["text"][0] == "inline"
    assert unpack(wires)["text"].tolist() == text.tolist()


def test_sweep_removes_what_a_dead_receiver_never_read() -> None:
    transport = Transport(f"inferd-test-{os.getpid()}-sweep")
    transport.pack({"lost": np.zeros(SHM_MIN_BYTES, np.uint8)})
    assert len(_segments(transport.prefix)) == 1
    assert sweep(transport.prefix) == 1
    assert _segments(transport.prefix) == []
