"""Prometheus metrics of the engine (registered in prometheus_client's default registry).

app/ serves them on /metrics beside its own request metrics. Stages of the hot path
(architecture.md): decode, encode, project, search, hydrate; the retrain job adds its own
stages (train, reproject, evaluate) to the same histogram.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

# Buckets from 0.1 ms to 60 s: search stages are sub-millisecond, retrain stages take minutes.
_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

STAGE_SECONDS = Histogram(
    "bridge_stage_seconds",
    "Wall time of one engine stage (decode, encode, project, search, hydrate, ...)",
    ["stage"],
    buckets=_BUCKETS,
)
ITEMS_INGESTED = Counter(
    "bridge_items_ingested_total", "Items committed to the store", ["modality"]
)
ITEMS_DELETED = Counter("bridge_items_deleted_total", "Items deleted from the store", ["modality"])
SEARCHES = Counter(
    "bridge_searches_total", "Searches answered, by query modality and space", ["query", "space"]
)
JOBS = Counter("bridge_jobs_total", "Background jobs by kind and final status", ["kind", "status"])
JOBS_RUNNING = Gauge("bridge_jobs_running", "Background jobs running now")

# Labelled children, looked up once: `labels()` checks and locks on every call, and on the
# search path it runs right after a scan, cold (docs/architecture.md). Creating a child twice in
# a race is harmless: prometheus_client hands back the same one. Label values here come from
# small fixed sets (stages, modalities, route templates, status codes), so the cache stays
# small.
_CHILDREN: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)`` (values in the metric's label order), cached."""
    key = (metric, values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found


def count_search(query: str, space: str) -> None:
    """SEARCHES for one answered search."""
    child(SEARCHES, query, space).inc()


# Pre-create the label sets so /metrics shows every stage from the first scrape.
for _stage in ("decode", "encode", "project", "search", "hydrate"):
    child(STAGE_SECONDS, _stage)


class StageTimer:
    """Collects per-stage wall times for one request and records each in STAGE_SECONDS."""

    __slots__ = ("timings_ms",)

    def __init__(self) -> None:
        self.timings_ms: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(name, time.perf_counter() - start)

    def record(self, name: str, seconds: float) -> None:
        child(STAGE_SECONDS, name).observe(seconds)
        self.timings_ms[name] = self.timings_ms.get(name, 0.0) + seconds * 1000.0
