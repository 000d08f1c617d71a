"""Latency statistics and the ways the service benchmarks issue timed calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def stats(latencies_s: Sequence[float], wall_s: float) -> dict[str, float]:
    """n, p50/p99/mean in ms, and q/s = n / ``wall_s``."""
    ms = np.asarray(latencies_s) * 1000.0
    return {
        "n": float(len(ms)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "qps": float(len(ms) / wall_s),
    }


def floor_stats(seconds: Sequence[float]) -> dict[str, float]:
    """Stats of a run of raw searches one after another: q/s is 1 / mean."""
    return stats(seconds, sum(seconds))


def run_threads(call: Callable[[int], Any], total: int, clients: int) -> dict[str, float]:
    """``clients`` threads issue ``total`` calls between them, each one at a time."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    counter = iter(range(total))

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                call(i)
            except BaseException as exc:
                errors.append(exc)
                return
            dt = time.perf_counter() - t0
            with lock:
                latencies.append(dt)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} client error(s), first: {errors[0]!r}")
    return stats(latencies, wall)


def run_interleaved(
    call: Callable[[int], Any], floor_call: Callable[[int], float], total: int
) -> tuple[dict[str, float], dict[str, float]]:
    """One client: for each i, a raw floor search of query i (``floor_call`` answers its
    seconds), then ``call(i)`` timed. Answers (service stats, floor stats)."""
    latencies, floor = [], []
    for i in range(total):
        floor.append(floor_call(i))
        t0 = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - t0)
    return stats(latencies, sum(latencies)), stats(floor, sum(floor))


def median_ratio(pairs: Sequence[tuple[dict[str, float], dict[str, float]]], key: str) -> float:
    """Median over same-run pairs (a, b) of a[key] / b[key]: this machine drifts 10-20%
    within minutes, so only cells measured next to each other compare."""
    return float(np.median([a[key] / b[key] for a, b in pairs]))
