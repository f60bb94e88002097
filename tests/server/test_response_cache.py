"""The response cache (``response_cache { enable: true }`` and
``--response-cache-bytes``): hits skip the batcher and show in Triton's
statistics, colliding digests still get their own answers, retiring a version
drops its answers, the LRU is bounded in bytes, and /metrics counts it all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferd.clients import InferenceClient
from inferd.server import response_cache
from inferd.server.request import InferRequest
from inferd.server.response_cache import ENTRY_OVERHEAD, ResponseCache, request_key
from tests.conftest import ServerThread
from tests.ensemble_models import chain_and_diamond, chain_reference, write_model
from tests.metrics_scrape import scrape, value

CACHED = "response_cache { enable: true }"
X = np.arange(8, dtype=np.float32).reshape(2, 4)
OTHER = X + 100


def _repository(root: Path) -> Path:
    chain_and_diamond(root)
    write_model(root, "scale", extra=CACHED)  # cached; shift, add2 are not
    return root


@pytest.fixture
def server(tmp_path: Path, make_server: Callable[..., ServerThread]) -> ServerThread:
    return make_server(
        _repository(tmp_path / "models"),
        response_cache_bytes=1 << 20,
        metrics_port=0,
        model_control_mode="explicit",
        load_models=("*",),
    )


def _stats(client: InferenceClient, model: str) -> dict[str, Any]:
    (stats,) = client.model_statistics(model)["model_stats"]
    return stats


def _count(stats: dict[str, Any], field: str) -> int:
    return int(stats["inference_stats"][field].get("count", 0))


def test_a_hit_skips_the_batcher_and_shows_in_triton_statistics(server: ServerThread) -> None:
    with InferenceClient(server.address) as client:
        first = client.infer("scale", {"x": X}, timeout=30)
        second = client.infer("scale", {"x": X}, timeout=30)
        np.testing.assert_array_equal(first["y"], X * 3)
        np.testing.assert_array_equal(second["y"], X * 3)
        stats = _stats(client, "scale")
        assert _count(stats, "cache_miss") == 1
        assert _count(stats, "cache_hit") == 1
        assert int(stats["inference_stats"]["cache_hit"]["ns"]) > 0
        assert _count(stats, "success") == 2  # hits are successes...
        assert _count(stats, "queue") == 2  # ...and queue counts, as Triton's
        # ...but the model ran once: no second inference or execution.
        assert int(stats["inference_count"]) == 2
        assert int(stats["execution_count"]) == 1
        assert _count(stats, "compute_infer") == 1
        # A model without response_cache never touches the cache.
        client.infer("shift", {"x": X}, timeout=30)
        client.infer("shift", {"x": X}, timeout=30)
        shift = _stats(client, "shift")
        assert _count(shift, "cache_hit") == _count(shift, "cache_miss") == 0
        assert int(shift["execution_count"]) == 2
        # Another input is another answer.
        np.testing.assert_array_equal(
            client.infer("scale", {"x": OTHER}, timeout=30)["y"], OTHER * 3
        )
        assert _count(_stats(client, "scale"), "cache_miss") == 2
    metrics = scrape(server.server.metrics_port)  # type: ignore[union-attr]
    assert value(metrics, "inferd_cache_hits_total", model="scale") == 1
    assert value(metrics, "inferd_cache_misses_total", model="scale") == 2
    assert value(metrics, "inferd_cache_entries") == 2
    assert value(metrics, "inferd_cache_bytes") > 2 * X.nbytes
    assert value(metrics, "inferd_cache_evictions_total") == 0


def test_ensemble_steps_hit_the_cache_of_their_model(server: ServerThread) -> None:
    with InferenceClient(server.address) as client:
        for _ in range(2):
            y = client.infer("chain", {"x": X}, timeout=30)["y"]
            np.testing.assert_allclose(y, chain_reference(X), rtol=1e-6)
        assert _count(_stats(client, "scale"), "cache_hit") == 1
        assert int(_stats(client, "shift")["execution_count"]) == 2


def test_colliding_digests_still_get_their_own_answers(
    server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(response_cache, "key_digest", lambda parts: 42)
    with InferenceClient(server.address) as client:
        for _ in range(2):  # misses, then hits: every key in one bucket
            np.testing.assert_array_equal(client.infer("scale", {"x": X}, timeout=30)["y"], X * 3)
            np.testing.assert_array_equal(
                client.infer("scale", {"x": OTHER}, timeout=30)["y"], OTHER * 3
            )
        stats = _stats(client, "scale")
    assert _count(stats, "cache_miss") == 2
    assert _count(stats, "cache_hit") == 2


def test_unload_and_reload_drop_the_versions_answers(server: ServerThread) -> None:
    cache = server.server.response_cache  # type: ignore[union-attr]
    assert cache is not None
    with InferenceClient(server.address) as client:
        client.infer("scale", {"x": X}, timeout=30)
        assert len(cache) == 1
        client.unload_model("scale", timeout=30)
        assert len(cache) == 0 and cache.bytes == 0
        client.load_model("scale", timeout=30)
        client.infer("scale", {"x": X}, timeout=30)
        assert _count(_stats(client, "scale"), "cache_miss") == 1  # a fresh version: a miss
        assert len(cache) == 1
        # A reload of an unchanged version keeps it, and its answers.
        client.load_model("scale", timeout=30)
        assert len(cache) == 1
        # A reload with a changed config retires the old version and its answers.
        config = server.config.model_repository / "scale" / "config.pbtxt"
        config.write_text(
            config.read_text() + 'parameters { key: "note" value { string_value: "v2" } }\n'
        )
        client.load_model("scale", timeout=30)
        assert len(cache) == 0


# -- the LRU and the key, without a server ------------------------------------------------


class _Version:
    """What the key reads of a model version."""

    def __init__(self, name: str = "m", version: int = 1, source_key: str = "k") -> None:
        self.name, self.version, self.source_key = name, version, source_key


def _key(x: np.ndarray, version: Any = None, **parameters: Any) -> response_cache.CacheKey:
    request = InferRequest({"x": x}, (), x.shape[0], parameters=parameters)
    return request_key(version or _Version(), request)


def test_lru_by_bytes_evicts_the_least_recently_used() -> None:
    a, b, c = (np.full((1, 256), i, np.float32) for i in range(3))  # 1 KiB outputs each
    entry = a.nbytes * 2 + ENTRY_OVERHEAD  # output + input bytes in the key
    cache = ResponseCache(2 * entry + 10)
    assert cache.put(_key(a), {"y": a}) and cache.put(_key(b), {"y": b})
    assert cache.get(_key(a)) is not None  # a is now the most recently used
    assert cache.put(_key(c), {"y": c})
    assert cache.get(_key(b)) is None  # b went
    assert cache.get(_key(a)) is not None and cache.get(_key(c)) is not None
    assert cache.evictions == 1 and cache.bytes == 2 * entry
    # An answer larger than the whole cache is not stored (and evicts nothing).
    big = np.zeros((1, 4096), np.float32)
    assert not cache.put(_key(big), {"y": big})
    assert len(cache) == 2 and cache.evictions == 1


def test_stored_answers_own_their_memory_and_are_read_only() -> None:
    batch = np.arange(16, dtype=np.float32).reshape(4, 4)
    cache = ResponseCache(1 << 20)
    cache.put(_key(batch[:1]), {"y": batch[:1]})  # a view of a batch's output
    found = cache.get(_key(batch[:1]))
    assert found is not None
    assert found["y"].base is None and not found["y"].flags.writeable
    np.testing.assert_array_equal(found["y"], batch[:1])


def test_the_key_holds_what_changes_the_answer_and_nothing_else() -> None:
    x = np.ones((1, 4), np.float32)
    assert _key(x) == _key(x.copy())
    assert _key(x) != _key(x + 1)
    assert _key(x) != _key(x.astype(np.float64))
    assert _key(x) != _key(x.reshape(1, 2, 2))
    assert _key(x) != _key(x, _Version(version=2))
    assert _key(x) != _key(x, _Version(source_key="reloaded"))
    assert _key(x) != _key(x, mode="fast")  # a parameter a model may read
    assert _key(x) == _key(x, timeout=5, priority=1)  # when, not what
    text = np.array([[b"a", b"bc"]], dtype=object)
    assert _key(text) == _key(np.array([[b"a", b"bc"]], dtype=object))
    assert _key(text) != _key(np.array([[b"ab", b"c"]], dtype=object))


def test_without_a_server_cache_the_models_setting_does_nothing(
    tmp_path: Path, make_server: Callable[..., ServerThread]
) -> None:
    server = make_server(_repository(tmp_path / "models"))
    assert server.server is not None and server.server.response_cache is None
    with InferenceClient(server.address) as client:
        for _ in range(2):
            client.infer("scale", {"x": X}, timeout=30)
        stats = _stats(client, "scale")
    assert int(stats["execution_count"]) == 2
    assert _count(stats, "cache_hit") == _count(stats, "cache_miss") == 0
