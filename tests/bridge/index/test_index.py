"""VectorIndex: correctness against numpy brute force, mutation, persistence, validation."""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.errors import InvalidInputError, NotFoundError
from bridge.index.checks import check_vectors
from bridge.index.vectors import (
    IVF_MIN_ITEMS,
    IndexCorruptError,
    ReadWriteLock,
    VectorIndex,
    gpu_available,
)

DIM = 32
N = 2000  # >= IVF_MIN_ITEMS so that "ivf" really builds an IVF index
K = 10
RECALL_BOUND = {"flat": 1.0, "hnsw": 0.95, "ivf": 0.9}


def clustered(n: int, dim: int = DIM, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around random centres, like real embeddings (which cluster by content)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def brute_force(data: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = data / np.linalg.norm(data, axis=1, keepdims=True)
    order = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :k]
    return ids[order]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist(), strict=True))
    return hits / truth.size


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vectors = clustered(N)
    ids = np.arange(100, 100 + N, dtype=np.int64) * 3  # ids are not positions
    queries = clustered(50, seed=1) * 2.5  # not normalised: the index normalises
    return ids, vectors, queries


def build(kind: str, ids: np.ndarray, vectors: np.ndarray, **kw: Any) -> VectorIndex:
    return VectorIndex.build(
        "clip_image", ids, vectors, kind, fingerprint="fp-1", use_gpu=False, **kw
    )


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_search_matches_brute_force(kind: str, data: tuple[np.ndarray, ...]) -> None:
    ids, vectors, queries = data
    index = build(kind, ids, vectors)
    assert index.kind == kind and index.ntotal == N and index.dim == DIM
    scores, found = index.search(queries, K)
    assert scores.shape == found.shape == (len(queries), K)
    assert scores.dtype == np.float32 and found.dtype == np.int64
    truth = brute_force(vectors, ids, queries, K)
    assert recall(found, truth) >= RECALL_BOUND[kind]
    # Scores are cosines of the returned ids, in descending order.
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    by_id = dict(zip(ids.tolist(), vectors, strict=True))
    expected = np.array([[qn[i] @ by_id[j] for j in row] for i, row in enumerate(found.tolist())])
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    if kind == "flat":
        np.testing.assert_array_equal(found, truth)


def test_ivf_parameters_and_nprobe(data: tuple[np.ndarray, ...]) -> None:
    ids, vectors, queries = data
    index = build("ivf", ids, vectors)
    nlist = index.manifest.params["nlist"]
    assert nlist == min(int(4 * np.sqrt(N)), N // 39)
    truth = brute_force(vectors, ids, queries, K)
    index.set_search_params(nprobe=1)
    low = recall(index.search(queries, K)[1], truth)
    index.set_search_params(nprobe=nlist)
    full = recall(index.search(queries, K)[1], truth)
    assert full == 1.0 and low < full
    assert index.manifest.params["nprobe"] == nlist


def test_hnsw_ef_search(data: tuple[np.ndarray, ...]) -> None:
    ids, vectors, queries = data
    index = build("hnsw", ids, vectors, hnsw_m=8)
    truth = brute_force(vectors, ids, queries, K)
    index.set_search_params(ef_search=10)
    low = recall(index.search(queries, K)[1], truth)
    index.set_search_params(ef_search=400)
    high = recall(index.search(queries, K)[1], truth)
    assert high >= low and high >= 0.99
    assert index.manifest.params["ef_search"] == 400


def test_ivf_falls_back_to_flat_below_minimum() -> None:
    vectors = clustered(IVF_MIN_ITEMS - 1)
    index = build("ivf", np.arange(len(vectors)), vectors)
    assert index.kind == "flat" and index.manifest.requested_kind == "ivf"
    assert index.needs_rebuild() is None
    more = clustered(2, seed=5)
    index.add(np.array([10_000, 10_001]), more, "fp-2")
    assert "ivf requested" in (index.needs_rebuild() or "")


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_add_and_remove(kind: str, data: tuple[np.ndarray, ...]) -> None:
    ids, vectors, _ = data
    index = build(kind, ids, vectors)
    gone = ids[:5]
    index.remove(np.concatenate([gone, [7, 8]]), "fp-2")  # unknown ids are ignored
    assert index.ntotal == N - 5 and index.manifest.count == N - 5
    assert index.manifest.fingerprint == "fp-2"
    _, found = index.search(vectors[:5], 3)
    assert not np.isin(found, gone).any()
    assert not index.contains(gone).any() and index.contains(ids[5:8]).all()
    new_vectors = clustered(3, seed=9)
    new_ids = np.array([1, 2, 5], dtype=np.int64)
    index.add(new_ids, new_vectors, "fp-3")
    scores, found = index.search(new_vectors, 1)
    np.testing.assert_array_equal(found[:, 0], new_ids)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert index.ntotal == N - 2 and index.manifest.fingerprint == "fp-3"
    assert set(index.ids().tolist()) == (set(ids.tolist()) - set(gone.tolist())) | {1, 2, 5}
    with pytest.raises(InvalidInputError, match="already in the index"):
        index.add(np.array([1]), new_vectors[:1], "fp-4")
    if kind == "hnsw":
        assert index.manifest.tombstones == 5
        with pytest.raises(InvalidInputError, match="already in the index"):
            index.add(gone[:1], new_vectors[:1], "fp-4")  # tombstoned ids are never reused


def test_hnsw_tombstones_ask_for_a_rebuild() -> None:
    vectors = clustered(100)
    index = build("hnsw", np.arange(100), vectors)
    index.remove(np.arange(15), "x")
    assert index.needs_rebuild() is None
    index.remove(np.arange(15, 20), "x")
    assert "tombstones" in (index.needs_rebuild() or "")
    # Tombstones are skipped inside the graph walk: k live results, none of them removed.
    _, found = index.search(vectors[:20], 10)
    assert not np.isin(found, np.arange(20)).any()
    assert (found >= 0).all()


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_k_larger_than_ntotal(kind: str) -> None:
    vectors = clustered(4)
    index = build(kind, np.array([10, 11, 12, 13]), vectors)
    index.remove(np.array([13]), "x")
    scores, found = index.search(vectors[0], 6)
    assert found.shape == (1, 6)
    assert sorted(found[0, :3].tolist()) == [10, 11, 12] and found[0, 3:].tolist() == [-1] * 3
    assert np.isneginf(scores[0, 3:]).all() and np.isfinite(scores[0, :3]).all()


def test_empty_index() -> None:
    index = build("flat", np.zeros(0, np.int64), np.zeros((0, DIM), np.float32))
    assert index.ntotal == 0
    scores, found = index.search(np.ones(DIM), 3)
    assert found.tolist() == [[-1, -1, -1]] and np.isneginf(scores).all()
    index.add(np.array([4]), np.ones((1, DIM)), "fp")
    assert index.search(np.ones(DIM), 3)[1][0].tolist() == [4, -1, -1]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip(kind: str, tmp_path: Path, data: tuple[np.ndarray, ...]) -> None:
    ids, vectors, queries = data
    index = VectorIndex.build(
        "shared_image",
        ids,
        vectors,
        kind,
        fingerprint="fp-9",
        encoder="clip-test",
        checkpoint_sha256="abc123",
        use_gpu=False,
    )
    index.remove(ids[:3], "fp-10")
    index.set_search_params(ef_search=128, nprobe=16)
    expected = index.search(queries, K)
    directory = tmp_path / "shared_image"
    index.save(directory)
    index.save(directory)  # replacing an existing directory
    assert sorted(p.name for p in directory.iterdir()) == [
        "ids.npy",
        "index.faiss",
        "manifest.json",
        "tombstones.npy",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    loaded = VectorIndex.load(directory, use_gpu=False)
    assert loaded.manifest == index.manifest
    got = loaded.search(queries, K)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["name"] == "shared_image" and manifest["kind"] == kind
    assert manifest["dim"] == DIM and manifest["count"] == N - 3
    assert manifest["fingerprint"] == "fp-10" and manifest["encoder"] == "clip-test"
    assert manifest["checkpoint_sha256"] == "abc123"
    assert datetime.fromisoformat(manifest["created_at"]).utcoffset() is not None
    assert manifest["tombstones"] == (3 if kind == "hnsw" else 0)
    if kind == "hnsw":
        assert manifest["params"]["ef_search"] == 128
    if kind == "ivf":
        assert manifest["params"]["nprobe"] == 16


def test_load_errors_and_crash_recovery(tmp_path: Path) -> None:
    vectors = clustered(20)
    index = build("flat", np.arange(20), vectors)
    directory = tmp_path / "clip_image"
    with pytest.raises(NotFoundError):
        VectorIndex.load(directory)
    index.save(directory)
    # A save that crashed between its two renames: only the moved-aside copy exists.
    os.rename(directory, tmp_path / ".clip_image.old-1234abcd")
    assert VectorIndex.load(directory, use_gpu=False).ntotal == 20
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["count"] = 21
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match="manifest count"):
        VectorIndex.load(directory, use_gpu=False)
    (directory / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(IndexCorruptError, match=r"index\.faiss was changed or damaged on disk"):
        VectorIndex.load(directory, use_gpu=False)
    # A manifest from before checksums: FAISS itself refuses the garbage.
    del manifest["checksums"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexCorruptError, match="cannot read"):
        VectorIndex.load(directory, use_gpu=False)


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (np.arange(3), np.ones(3), "expected a 2-D array"),
        (np.arange(3), np.ones((3, 4), dtype=np.int32), "expected float"),
        (np.arange(2), np.ones((3, 4)), "2 ids for 3 vectors"),
        (np.array([1, 1, 2]), np.ones((3, 4)), "unique"),
        (np.array([-1, 0, 2]), np.ones((3, 4)), ">= 0"),
        (np.array([0.0, 1.0, 2.0]), np.ones((3, 4)), "integer ids"),
        (np.arange(3), np.full((3, 4), np.nan), "NaN"),
        (np.arange(0), np.zeros((0, 0)), "dimension 0"),
    ],
)
def test_build_rejects_bad_input(ids: np.ndarray, vectors: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        build("flat", ids, vectors)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (np.full((1, DIM), np.nan), "NaN or Inf"),
        (np.full((2, DIM), np.inf), "NaN or Inf"),
        (np.full((1, DIM), 1e300), "NaN or Inf"),  # finite float64, not a float32
        (np.ones((1, DIM), dtype=np.int64), "expected float"),
        (np.zeros((0, DIM)), "no rows"),
    ],
)
def test_search_rejects_bad_queries(query: np.ndarray, message: str) -> None:
    index = build("flat", np.arange(10), clustered(10))
    with pytest.raises(InvalidInputError, match=message):
        index.search(query, 3)


def test_search_normalises_queries() -> None:
    vectors = clustered(10)
    index = build("flat", np.arange(10), vectors)
    scores, found = index.search(7.5 * vectors[3], 3)
    unit_scores, unit_found = index.search(vectors[3][None, :], 3)
    assert found.tolist() == unit_found.tolist() and found[0, 0] == 3
    np.testing.assert_allclose(scores, unit_scores, rtol=1e-6)
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_unit_rows_are_indexed_without_a_normalised_copy() -> None:
    """A projector's output is unit length already; only other rows are normalised (a copy
    as large as the index, at a build)."""
    unit = clustered(10)
    assert check_vectors(unit, "v", DIM, allow_empty=False) is unit
    scaled = 3.0 * unit
    normalised = check_vectors(scaled, "v", DIM, allow_empty=False)
    assert normalised is not scaled
    np.testing.assert_allclose(normalised, unit, rtol=1e-6)
    mixed = unit.copy()
    mixed[4] *= 1.01
    np.testing.assert_allclose(check_vectors(mixed, "v", DIM, allow_empty=False), unit, rtol=1e-6)


@pytest.mark.parametrize("scale", [1e25, 1e-25])  # float32 squares overflow / underflow
def test_one_query_outside_float32_square_range_is_still_searched(scale: float) -> None:
    vectors = clustered(10)
    index = build("flat", np.arange(10), vectors)
    scores, found = index.search((vectors[3] * scale).astype(np.float32), 3)
    unit_scores, unit_found = index.search(vectors[3], 3)
    assert found.tolist() == unit_found.tolist()
    np.testing.assert_allclose(scores, unit_scores, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e25, 1e-25])  # float32 squares overflow / underflow
def test_indexed_vectors_outside_float32_square_range_are_normalised(scale: float) -> None:
    vectors = clustered(10)
    scaled = vectors.copy()
    scaled[3] *= scale  # before the fix: a zero row (1e25) or an unscaled one (1e-25)
    index = build("flat", np.arange(10), scaled)
    scores, found = index.search(vectors[3], 3)
    assert found[0, 0] == 3 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_query_with_one_bad_value_is_rejected(bad: float) -> None:
    index = build("flat", np.arange(10), clustered(10))
    query = clustered(1)[0].copy()
    query[DIM // 2] = bad
    with pytest.raises(InvalidInputError, match="NaN or Inf"):
        index.search(query, 3)


def test_bad_kind_queries_and_k() -> None:
    vectors = clustered(10)
    with pytest.raises(InvalidInputError, match="index kind"):
        build("annoy", np.arange(10), vectors)
    with pytest.raises(InvalidInputError, match="hnsw_m"):
        build("hnsw", np.arange(10), vectors, hnsw_m=0)
    index = build("flat", np.arange(10), vectors)
    with pytest.raises(InvalidInputError, match=f"expected dimension {DIM}, got 5"):
        index.search(np.ones((2, 5)), 3)
    with pytest.raises(InvalidInputError, match="2-D"):
        index.search(np.ones((1, 2, DIM)), 3)
    for bad_k in (0, -1, True, 2.5):
        with pytest.raises(InvalidInputError, match="k must be"):
            index.search(vectors[:1], bad_k)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="expected dimension"):
        index.add(np.array([99]), np.ones((1, DIM + 1)), "x")
    with pytest.raises(InvalidInputError, match="nprobe"):
        index.set_search_params(nprobe=0)


def test_readers_writer_lock_excludes_writers_from_readers() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    reading = threading.Event()

    def reader() -> None:
        with lock.read():
            reading.set()
            time.sleep(0.05)
            events.append("read-end")

    def writer() -> None:
        reading.wait()
        with lock.write():
            events.append("write")

    threads = [threading.Thread(target=reader), threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events == ["read-end", "write"]
    # Two readers overlap.
    with lock.read(), lock.read():
        pass


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_concurrent_searches_with_mutations(kind: str) -> None:
    vectors = clustered(600, seed=3)
    index = build(kind, np.arange(300), vectors[:300])
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        try:
            while not stop.is_set():
                scores, found = index.search(vectors[:8], 5)
                assert (found[:, 0] >= 0).all() and np.isfinite(scores[:, 0]).all()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    readers = [threading.Thread(target=search) for _ in range(3)]
    for t in readers:
        t.start()
    try:
        for start in range(300, 600, 30):
            index.add(np.arange(start, start + 30), vectors[start : start + 30], "x")
            index.remove(np.arange(start - 300, start - 290), "x")
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert errors == []
    assert index.ntotal == 600 - 100
    _, found = index.search(vectors[550:552], 1)
    assert found[:, 0].tolist() == [550, 551]


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_gpu_index_matches_cpu(kind: str, tmp_path: Path, data: tuple[np.ndarray, ...]) -> None:
    if not gpu_available():
        pytest.skip("faiss reports no GPU")
    ids, vectors, queries = data
    cpu = build(kind, ids, vectors)
    gpu = VectorIndex.build("clip_image", ids, vectors, kind, fingerprint="fp-1", use_gpu=True)
    assert gpu.on_gpu and not cpu.on_gpu
    want, got = cpu.search(queries, K), gpu.search(queries, K)
    assert recall(got[1], want[1]) >= 0.99
    np.testing.assert_allclose(np.sort(got[0], axis=1), np.sort(want[0], axis=1), atol=1e-4)
    gpu.remove(ids[:10], "fp-2")
    gpu.add(np.array([1]), vectors[:1], "fp-3")
    _, found = gpu.search(vectors[:10], 1)
    assert found[0, 0] == 1 and not np.isin(found, ids[:10]).any()
    assert gpu.search(queries[:1], 3000)[1].shape == (1, 3000)  # above GPU_MAX_K: CPU copy
    gpu.save(tmp_path / "g")
    loaded = VectorIndex.load(tmp_path / "g", use_gpu=True)
    assert loaded.on_gpu and loaded.ntotal == N - 9
    np.testing.assert_array_equal(loaded.search(queries, K)[1], gpu.search(queries, K)[1])


def test_faiss_thread_settings_are_per_call() -> None:
    """Small searches run on one OpenMP thread, large ones and builds on the configured count
    (the thread's default when none is configured), whatever ran before in the thread."""
    import faiss

    import bridge.index.threads
    from bridge.index.threads import SMALL_QUERY_BATCH, configure_threads

    vectors = clustered(SMALL_QUERY_BATCH + 10)
    index = build("flat", np.arange(len(vectors)), vectors)
    seen: list[int] = []
    original_search, original_add = index._cpu.search, index._cpu.add_with_ids

    def spy(original: Any) -> Any:
        def call(*args: object, **kwargs: object) -> object:
            seen.append(faiss.omp_get_max_threads())
            return original(*args, **kwargs)

        return call

    index._cpu.search = spy(original_search)
    index._cpu.add_with_ids = spy(original_add)
    index.search(vectors[:1], 3)  # small batch: one thread during the call
    assert seen == [1]
    default = bridge.index.threads._thread_omp.default  # the count before VectorIndex set any
    assert default >= 1
    index.add(np.array([10_000]), vectors[:1], "fp")  # a build step after it: the default
    assert seen[-1] == default and faiss.omp_get_max_threads() == 1  # as the search left it
    with pytest.raises(InvalidInputError):
        configure_threads(-1)
    configure_threads(1)
    try:
        index.search(vectors, 3)  # large batch: the configured count
        assert seen[-1] == 1
    finally:
        configure_threads(None)
    index.search(vectors, 3)
    assert seen[-1] == default
    index.search(vectors[:2], 3)
    assert seen[-1] == 1
