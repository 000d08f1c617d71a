"""Latency statistics and the timed-call drivers of the service benchmarks."""

from __future__ import annotations

import threading
import time

import pytest

from bridge.bench.timing import floor_stats, median_ratio, run_interleaved, run_threads, stats


def test_stats_are_percentiles_in_ms_and_calls_per_wall_second() -> None:
    s = stats([0.001 * i for i in range(1, 101)], wall_s=2.0)  # 1..100 ms
    assert s["n"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["mean_ms"] == pytest.approx(50.5)
    assert s["qps"] == 50.0
    assert floor_stats([0.002, 0.002])["qps"] == pytest.approx(500.0)  # back to back: 1 / mean


def test_run_threads_makes_every_call_once_from_that_many_threads() -> None:
    seen: list[int] = []
    threads: set[int] = set()
    lock = threading.Lock()

    def call(i: int) -> None:
        time.sleep(0.002)
        with lock:
            seen.append(i)
            threads.add(threading.get_ident())

    s = run_threads(call, total=40, clients=4)
    assert sorted(seen) == list(range(40)) and s["n"] == 40
    assert len(threads) == 4
    assert s["p50_ms"] >= 2.0


def test_run_threads_reports_a_client_error() -> None:
    def call(i: int) -> None:
        if i == 3:
            raise ValueError("boom")

    with pytest.raises(RuntimeError, match="client error.*boom"):
        run_threads(call, total=10, clients=2)


def test_run_interleaved_times_the_call_and_takes_the_floor_as_given() -> None:
    order: list[str] = []

    def floor(i: int) -> float:
        order.append(f"floor {i}")
        return 0.001

    service, floor_s = run_interleaved(lambda i: order.append(f"call {i}"), floor, 3)
    assert order == ["floor 0", "call 0", "floor 1", "call 1", "floor 2", "call 2"]
    assert service["n"] == floor_s["n"] == 3
    assert floor_s["p50_ms"] == pytest.approx(1.0)


def test_median_ratio_pairs_cells_measured_together() -> None:
    pairs = [({"q": 2.0}, {"q": 1.0}), ({"q": 3.0}, {"q": 1.0}), ({"q": 1.0}, {"q": 4.0})]
    assert median_ratio(pairs, "q") == 2.0
