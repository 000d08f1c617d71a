"""Split scans (bridge/index/split_scan.py): a lone query over slices on several threads answers
exactly what one FAISS search answers, through VectorIndex too, across adds and removes."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import bridge.index.split_scan as split_scan
import bridge.index.threads as index_module
from bridge.errors import InvalidInputError
from bridge.index.split_scan import SplitScanner, flat_layout, slice_bounds
from bridge.index.vectors import VectorIndex, configure_search_threads


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slices of 100 rows, so that a few hundred vectors already split."""
    monkeypatch.setattr(split_scan, "MIN_ROWS_PER_SLICE", 100)


@pytest.fixture
def search_threads() -> object:
    """Restore the process-wide split setting after a test changes it."""
    before = index_module._scanner
    yield configure_search_threads
    index_module._scanner = before


def one_faiss_search(index: VectorIndex, query: np.ndarray, k: int) -> tuple:
    """What an unsplit search answers: the same index with splitting off."""
    configure_search_threads(1)
    return index.search(query, k)


def test_slice_bounds_cover_the_range_in_order(small_slices: None) -> None:
    assert slice_bounds(1000, 4) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert slice_bounds(1001, 3) == [(0, 333), (333, 667), (667, 1001)]
    assert slice_bounds(250, 4) == [(0, 125), (125, 250)]  # at least 100 rows per slice
    assert slice_bounds(199, 4) == [(0, 199)]
    assert slice_bounds(0, 4) == [(0, 0)]
    assert slice_bounds(1000, 1) == [(0, 1000)]


def test_splits_agrees_with_slice_bounds(small_slices: None) -> None:
    for threads in (1, 2, 3, 8):
        scanner = SplitScanner(threads)
        for rows in (0, 1, 99, 100, 199, 200, 201, 299, 300, 1000, 5000):
            assert scanner.splits(rows) == (len(slice_bounds(rows, threads)) > 1)


@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("k", [1, 10, 150, 700])
def test_split_search_equals_one_faiss_search(
    small_slices: None, search_threads: object, threads: int, k: int
) -> None:
    rng = np.random.default_rng(threads * 1000 + k)
    vectors = unit_rows(rng, 600, 32)
    ids = rng.choice(10**9, size=600, replace=False).astype(np.int64)
    index = VectorIndex.build("t", ids, vectors, fingerprint="f", use_gpu=False)
    queries = unit_rows(rng, 8, 32)
    for query in queries:
        want_scores, want_ids = one_faiss_search(index, query, k)
        configure_search_threads(threads)
        assert index._splits(1, 600)
        scores, found = index.search(query, k)
        np.testing.assert_array_equal(found, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6, atol=1e-6)
    if k > 600:  # more asked for than stored: padded exactly as the unsplit search pads
        assert (found[0, 600:] == -1).all() and np.isneginf(scores[0, 600:]).all()


def test_ties_across_slices_give_k_distinct_best(small_slices: None) -> None:
    """All 400 vectors tie: any 5 distinct ids are a right answer (FAISS's own order among
    exact ties is its heap's), and each is one of the stored ids."""
    import faiss

    base = faiss.IndexIDMap2(faiss.IndexFlatIP(4))
    vectors = np.tile(np.array([[1, 0, 0, 0]], dtype=np.float32), (400, 1))
    base.add_with_ids(vectors, np.arange(400, dtype=np.int64) + 1000)
    scanner = SplitScanner(4)
    try:
        scores, ids = scanner.search(flat_layout(base), vectors[:1], 5)
    finally:
        scanner.close()
    assert len(set(ids[0].tolist())) == 5 and ((ids >= 1000) & (ids < 1400)).all()
    np.testing.assert_allclose(scores, 1.0)


def test_adds_and_removes_refresh_the_layout(small_slices: None, search_threads: object) -> None:
    rng = np.random.default_rng(7)
    vectors = unit_rows(rng, 500, 16)
    index = VectorIndex.build(
        "t", np.arange(500, dtype=np.int64), vectors, fingerprint="f", use_gpu=False
    )
    configure_search_threads(2)
    assert index.search(vectors[7], 1)[1][0, 0] == 7  # layout cached here
    index.remove(np.array([7]), "g")
    assert 7 not in index.search(vectors[7], 5)[1][0]  # rows shifted: the layout was rebuilt
    extra = unit_rows(rng, 300, 16)  # storage grows (and may move)
    index.add(np.arange(1000, 1300, dtype=np.int64), extra, "h")
    assert index.search(extra[299], 1)[1][0, 0] == 1299
    assert index.search(vectors[499], 1)[1][0, 0] == 499
    want = one_faiss_search(index, vectors[3], 50)
    configure_search_threads(2)
    np.testing.assert_array_equal(index.search(vectors[3], 50)[1], want[1])


def test_only_lone_queries_on_flat_indexes_split(
    small_slices: None, search_threads: object
) -> None:
    rng = np.random.default_rng(3)
    vectors = unit_rows(rng, 400, 16)
    ids = np.arange(400, dtype=np.int64)
    flat = VectorIndex.build("f", ids, vectors, fingerprint="f", use_gpu=False)
    hnsw = VectorIndex.build("h", ids, vectors, kind="hnsw", fingerprint="f", use_gpu=False)
    configure_search_threads(2)
    assert flat._splits(1, 400)
    assert not flat._splits(2, 400)  # batches: FAISS's BLAS path, all cores already
    assert not flat._splits(1, 150)  # too few rows for two slices of 100
    assert not hnsw._splits(1, 400)
    configure_search_threads(1)
    assert not flat._splits(1, 400)


def test_worker_threads_scan(small_slices: None, search_threads: object) -> None:
    """The slices after the first really run on the pool's threads, one OpenMP thread each."""
    seen: list[str] = []
    scan = split_scan.scan_slice

    def recording_scan(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple:
        seen.append(threading.current_thread().name)
        return scan(vectors, query, k)

    rng = np.random.default_rng(5)
    layout = split_scan.FlatLayout(unit_rows(rng, 300, 8), np.arange(300, dtype=np.int64))
    scanner = SplitScanner(3)
    try:
        split_scan.scan_slice = recording_scan  # type: ignore[assignment]
        scanner.search(layout, unit_rows(rng, 1, 8), 4)
    finally:
        split_scan.scan_slice = scan  # type: ignore[assignment]
        scanner.close()
    assert seen.count(threading.current_thread().name) == 1  # the first slice
    assert sorted(name.startswith("split-scan") for name in seen) == [False, True, True]


def test_bad_thread_counts_are_refused(search_threads: object) -> None:
    with pytest.raises(InvalidInputError, match="non-negative"):
        configure_search_threads(-1)
    with pytest.raises(InvalidInputError, match=">= 1"):
        SplitScanner(0)
    configure_search_threads(0)  # one per core
    assert index_module._scanner.threads == split_scan.default_threads()


@pytest.mark.parametrize(
    ("files", "want"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),  # cgroup v2, --cpus=2
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_cgroup_quota_caps_the_default(tmp_path: Path, files: dict[str, str], want: object) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert split_scan.cgroup_cpu_quota(tmp_path) == want


def test_a_split_scan_uses_the_scan_kernel_after_a_batch(
    small_slices: None, search_threads: object
) -> None:
    """A batch leaves FAISS's process-wide kernel threshold at BLAS; faiss.knn reads the same
    threshold, and one query by BLAS took ~2x as long at 100k (a spell of 30 ms instead of
    13 ms searches after every concurrent burst), so the split path resets it."""
    import faiss

    from bridge.index.threads import _NEVER_BLAS

    rng = np.random.default_rng(11)
    vectors = unit_rows(rng, 400, 16)
    index = VectorIndex.build(
        "t", np.arange(400, dtype=np.int64), vectors, fingerprint="f", use_gpu=False
    )
    configure_search_threads(2)
    index.search(vectors[:8], 3)  # a batch: BLAS
    assert faiss.cvar.distance_compute_blas_threshold == 0
    index.search(vectors[0], 3)  # a lone query: split, scanned
    assert faiss.cvar.distance_compute_blas_threshold == _NEVER_BLAS


def test_switching_thread_counts_reuses_scanners(search_threads: object) -> None:
    configure_search_threads(2)
    first = index_module._scanner
    configure_search_threads(1)
    configure_search_threads(2)
    assert index_module._scanner is first  # no new pool (and thread) per switch
