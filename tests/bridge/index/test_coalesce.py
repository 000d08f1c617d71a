"""Group-commit search batching: each caller gets exactly its own rows, batches really form."""

from __future__ import annotations

import gc
import threading
import time
import weakref

import numpy as np
import pytest

from bridge.index.coalesce import SearchCoalescer
from bridge.index.vectors import VectorIndex


def _fake_search(calls: list[int], delay: float = 0.0):  # type: ignore[no-untyped-def]
    """Score row i, column j = row's first value + j; ids likewise, so rows are traceable."""

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(queries))
        time.sleep(delay)
        base = queries[:, :1]
        return base + np.arange(k), (base * 1000).astype(np.int64) + np.arange(k)

    return search


def test_a_lone_caller_searches_at_once_alone() -> None:
    calls: list[int] = []
    coalescer = SearchCoalescer(_fake_search(calls))
    for i in range(5):
        scores, ids = coalescer.search(np.full((1, 4), float(i)), 3)
        assert scores.tolist() == [[i, i + 1, i + 2]]
        assert ids.tolist() == [[i * 1000, i * 1000 + 1, i * 1000 + 2]]
    assert calls == [1, 1, 1, 1, 1]


def test_concurrent_callers_share_batches_and_get_their_own_rows() -> None:
    calls: list[int] = []
    coalescer = SearchCoalescer(_fake_search(calls, delay=0.02))
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    start = threading.Barrier(16)

    def caller(i: int) -> None:
        start.wait()
        rows = 1 + i % 3  # callers send 1-3 rows and ask for different k
        queries = np.full((rows, 4), float(i))
        results[i] = coalescer.search(queries, 2 + i % 4)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 16
    for i, (scores, ids) in results.items():
        k, rows = 2 + i % 4, 1 + i % 3
        assert scores.shape == (rows, k) and ids.shape == (rows, k)
        assert (scores[:, 0] == i).all() and (ids[:, 0] == i * 1000).all()
    assert sum(calls) == sum(1 + i % 3 for i in range(16))
    assert len(calls) < 16  # the 20 ms searches made later callers queue and share
    assert coalescer.batches == len(calls) and coalescer.queries == 16


def test_batches_respect_the_row_limit() -> None:
    calls: list[int] = []
    coalescer = SearchCoalescer(_fake_search(calls, delay=0.02), max_batch_rows=4)
    start = threading.Barrier(12)

    def caller() -> None:
        start.wait()
        coalescer.search(np.ones((1, 2)), 1)

    threads = [threading.Thread(target=caller) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sum(calls) == 12 and max(calls) <= 4


def test_a_failed_search_fails_its_batch_and_later_calls_work() -> None:
    fail = threading.Event()
    fail.set()

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if fail.is_set():
            raise RuntimeError("index went away")
        return np.zeros((len(queries), k)), np.zeros((len(queries), k), dtype=np.int64)

    coalescer = SearchCoalescer(search)
    with pytest.raises(RuntimeError, match="went away"):
        coalescer.search(np.ones((1, 2)), 1)
    fail.clear()
    scores, _ = coalescer.search(np.ones((2, 2)), 3)
    assert scores.shape == (2, 3)


def test_index_answers_concurrent_queries_like_serial_ones() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 32)).astype(np.float32)
    index = VectorIndex.build("t", np.arange(2000), vectors, "flat", fingerprint="x")
    queries = rng.standard_normal((64, 32)).astype(np.float32)
    serial = [index.search(q, 5) for q in queries]
    parallel: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def caller(i: int) -> None:
        for j in range(i, 64, 8):
            parallel[j] = index.search(queries[j], 5)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for j, (scores, ids) in enumerate(serial):
        assert np.array_equal(parallel[j][1], ids)
        np.testing.assert_allclose(parallel[j][0], scores, atol=1e-5)


def test_a_dropped_index_is_freed_at_once_not_by_the_cycle_collector() -> None:
    """Its coalescer holds its search weakly: no reference cycle keeps the vectors alive."""
    index = VectorIndex.build(
        "t", np.arange(8), np.eye(8, dtype=np.float32), fingerprint="f", use_gpu=False
    )
    index.search(np.eye(8, dtype=np.float32)[:2], 3)
    alive = weakref.ref(index)
    gc.disable()
    try:
        del index
        assert alive() is None
    finally:
        gc.enable()
