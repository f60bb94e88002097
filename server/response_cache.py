"""Triton's response cache: answers of models whose config has
``response_cache { enable: true }``, kept in one server-wide LRU bounded in
bytes (``--response-cache-bytes``).

The key is the model, its version and what that version was loaded from
(so a reload with new files never meets an old answer), every input's name,
dtype, shape and bytes, the requested outputs and the request parameters that
can change the answer (all but ``NEUTRAL_PARAMETERS``). Entries are found by
the key's digest and then compared by the full key, so two keys whose
digests collide still get their own answers (unlike Triton's, which trusts
its 64-bit hash). A hit answers without the scheduler; a miss runs the
request and stores its outputs. Retiring a version (reload, unload) drops its
entries. Everything runs on the event loop: no locks.

The data plane calls ``answer`` only for versions that have a cache
(``ModelVersion.cache``), so other models pay one attribute test.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Hashable
from typing import TYPE_CHECKING

import numpy as np

from inferd.protos.datatypes import serialize_bytes
from inferd.server.observer import ServerObserver
from inferd.server.request import InferRequest

if TYPE_CHECKING:
    from inferd.server.model_version import ModelVersion

#: Request parameters that change when or how an answer is given, not what it is.
NEUTRAL_PARAMETERS = frozenset({"timeout", "priority", "binary_data_output"})
#: What one entry costs besides its arrays and key bytes (objects, dict slots), bytes.
ENTRY_OVERHEAD = 512
#: Per BYTES element: the object array's pointer plus the ``bytes`` object header.
_BYTES_ELEMENT = 48

Outputs = dict[str, np.ndarray]
#: (model, version, source key): whose answers an entry holds.
Owner = tuple[str, int, str]


def key_digest(parts: tuple[Hashable, ...]) -> int:
    """The digest entries are found by (the tests replace it to force collisions)."""
    return hash(parts)


class CacheKey:
    """A request's full key; equal only when every part is."""

    __slots__ = ("digest", "nbytes", "owner", "parts")

    def __init__(self, owner: Owner, parts: tuple[Hashable, ...], nbytes: int = 0) -> None:
        self.owner = owner
        self.parts = parts
        #: The input bytes it holds (counted against the cache's size).
        self.nbytes = nbytes
        self.digest = key_digest((owner, parts))

    def __hash__(self) -> int:
        return self.digest

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CacheKey)
            and self.digest == other.digest
            and self.owner == other.owner
            and self.parts == other.parts
        )


def request_key(version: ModelVersion, request: InferRequest) -> CacheKey:
    inputs = tuple(
        (name, array.dtype.str, array.shape, _bytes(array))
        for name, array in sorted(request.inputs.items())
    )
    parameters = tuple(
        sorted((k, v) for k, v in request.parameters.items() if k not in NEUTRAL_PARAMETERS)
    )
    owner = (version.name, version.version, version.source_key)
    nbytes = sum(len(data) for _, _, _, data in inputs)
    return CacheKey(owner, (inputs, tuple(sorted(request.outputs)), parameters), nbytes)


def _bytes(array: np.ndarray) -> bytes:
    if array.dtype == object:
        return serialize_bytes(array)
    return np.ascontiguousarray(array).tobytes()


def outputs_nbytes(outputs: Outputs) -> int:
    total = 0
    for array in outputs.values():
        if array.dtype == object:
            total += sum(len(b) for b in array.flat) + _BYTES_ELEMENT * array.size
        else:
            total += array.nbytes
    return total


class ResponseCache:
    def __init__(self, capacity_bytes: int, observer: ServerObserver | None = None) -> None:
        self.capacity_bytes = capacity_bytes
        self.observer = observer or ServerObserver()
        self._entries: OrderedDict[CacheKey, tuple[Outputs, int]] = OrderedDict()
        self._by_owner: dict[Owner, set[CacheKey]] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    # -- the data plane's call --------------------------------------------------------------

    async def answer(self, version: ModelVersion, request: InferRequest) -> tuple[Outputs, int]:
        """``request``'s outputs, from the cache or from its scheduler, and
        the rows inferred (0 for a hit: Triton's inference_count leaves hits out)."""
        start = time.monotonic_ns()
        key = request_key(version, request)
        found = self.get(key)
        if found is not None:
            version.stats.record_cache_hit(time.monotonic_ns() - start)
            version.observer.on_cache(True)
            return found, 0
        looked_up = time.monotonic_ns() - start
        outputs = await version.scheduler.submit(request)  # failures are not stored
        stored = time.monotonic_ns()
        self.put(key, outputs)
        self.misses += 1
        version.stats.record_cache_miss(looked_up + time.monotonic_ns() - stored)
        version.observer.on_cache(False)
        return outputs, request.rows

    # -- the LRU ----------------------------------------------------------------------------

    def get(self, key: CacheKey) -> Outputs | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return dict(entry[0])

    def put(self, key: CacheKey, outputs: Outputs) -> bool:
        """Store a copy of ``outputs`` (read-only, owning its memory); False
        when the entry alone is larger than the cache."""
        size = outputs_nbytes(outputs) + key.nbytes + ENTRY_OVERHEAD
        if size > self.capacity_bytes:
            return False
        if key in self._entries:
            self._remove(key)
        evicted = 0
        while self.bytes + size > self.capacity_bytes:
            oldest = next(iter(self._entries))
            self._remove(oldest)
            evicted += 1
        stored = {}
        for name, array in outputs.items():
            # A view would keep its whole batch alive, uncounted.
            own = array if array.base is None else array.copy()
            own.flags.writeable = False
            stored[name] = own
        self._entries[key] = (stored, size)
        self._by_owner.setdefault(key.owner, set()).add(key)
        self.bytes += size
        self.evictions += evicted
        self.observer.on_cache_change(self.bytes, len(self._entries), evicted)
        return True

    def drop(self, version: ModelVersion) -> int:
        """Forget every answer of ``version`` (it is being retired); returns how many."""
        keys = self._by_owner.pop((version.name, version.version, version.source_key), set())
        for key in keys:
            self._remove(key, owner_known=False)
        if keys:
            self.observer.on_cache_change(self.bytes, len(self._entries), 0)
        return len(keys)

    def _remove(self, key: CacheKey, *, owner_known: bool = True) -> None:
        _, size = self._entries.pop(key)
        self.bytes -= size
        if owner_known:
            keys = self._by_owner.get(key.owner)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_owner[key.owner]
