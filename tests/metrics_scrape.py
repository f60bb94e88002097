"""Reading a live server's ``/metrics`` as Prometheus would, for any test
folder (``tests/`` is on the import path, as for ``lifecycle_models``)."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        return str(reply.read().decode())


def scrape(port: int) -> list[Metric]:
    """GET /metrics and parse it as Prometheus does (raises on bad syntax)."""
    return list(text_string_to_metric_families(scrape_text(port)))


def value(families: Iterable[Metric], sample: str, **labels: str) -> float:
    """Sum of the samples named ``sample`` whose labels include ``labels``."""
    total = 0.0
    for family in families:
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
