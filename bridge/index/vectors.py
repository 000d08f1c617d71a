"""FAISS vector index: inner product on L2-normalised vectors (= cosine similarity).

Every vector that enters (build, add, search) is L2-normalised here, so scores are cosines in
[-1, 1] whatever the caller passes. Ids are int64 (the store's rowids, never reused).

Kinds:
- ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact. The default.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat(M, METRIC_INNER_PRODUCT))``, approximate; ``ef_search``
  is configurable (a search uses ``max(ef_search, k)``). HNSW cannot remove vectors: ``remove``
  puts ids in a tombstone set, and search passes FAISS an
  ``IDSelectorNot(IDSelectorBatch(tombstones))`` so the graph walk skips them (k live results,
  no over-fetching). Tombstoned vectors still cost memory and graph hops; they
  are saved with the index, and ``needs_rebuild()`` asks for a rebuild from the store once they
  exceed ``TOMBSTONE_REBUILD_FRACTION`` of the live count.
- ``ivf``: ``IndexIVFFlat(IndexFlatIP, nlist, METRIC_INNER_PRODUCT)`` trained on the build data,
  ``nlist = ivf_nlist`` or ``min(4 * sqrt(N), N // 39)`` (FAISS wants >= 39 training points per
  list), ``nprobe`` configurable. Below ``IVF_MIN_ITEMS`` vectors an ivf build falls back to flat
  (exact search of < 1000 vectors costs microseconds, and k-means on so few points is poor); the
  manifest keeps ``requested_kind`` so that a catalog rebuilds it as IVF once it has grown.

GPU: when ``use_gpu`` and ``faiss.get_num_gpus() > 0``, flat and ivf indexes are copied to GPU 0
(``index_cpu_to_gpu``; never ``index_cpu_to_all_gpus``, which returns an empty index on a machine
without GPUs). The CPU index stays the master copy: adds go to both, removes (which FAISS GPU
indexes do not implement) go to the CPU index and the GPU copy is refreshed from it, and ``save``
writes the CPU master. HNSW always stays on CPU. Searches with ``k`` above the GPU limit (2048)
run on the CPU copy.

Threads: searches of at most ``SMALL_QUERY_BATCH`` queries run with one OpenMP thread (set and
restored per calling thread), which removes millisecond OpenMP barrier stalls from the p99 of
single-query serving without slowing it (see ``_search_threads``); larger batches, builds and
adds use ``configure_threads(n)`` (default: FAISS's, one per core). OpenMP keeps the thread
count per calling thread, so ``faiss.omp_set_num_threads`` in the main thread does not reach
the worker threads that serve requests; ``configure_threads`` does. A lone query on a flat
index of two slices' worth of vectors or more is the exception: it is scanned in slices on
several threads at once (``configure_search_threads``, bridge/index/split_scan.py).

Batching: concurrent ``search`` calls are grouped into one FAISS call
(``bridge/index/coalesce.py``);
a lone caller searches at once, callers that arrive while a search runs share the next one.

Thread-safety: a readers-writer lock (writer preference). Any number of searches run at once
(FAISS releases the GIL during a search); ``add``/``remove``/``set_search_params`` wait for
running searches to finish and block new ones while they run. ``save`` is a reader.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bridge.arrays import l2_normalize
from bridge.errors import BridgeError, InvalidInputError, NotFoundError
from bridge.index.coalesce import SearchCoalescer
from bridge.index.split_scan import FlatLayout, SplitScanner, default_threads, flat_layout

logger = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "hnsw", "ivf")
IVF_MIN_ITEMS = 1000
TOMBSTONE_REBUILD_FRACTION = 0.2
IVF_REGROW_FACTOR = 4  # an IVF index that has grown 4x past its training set asks for a rebuild
GPU_MAX_K = 2048
SMALL_QUERY_BATCH = 64  # batches up to this size (coalesced serving batches) use one OpenMP thread
BLAS_MIN_QUERIES = 6  # exact search uses a BLAS product from this many queries per call
_NEVER_BLAS = 2**31 - 1
INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
IDS_FILE = "ids.npy"
TOMBSTONES_FILE = "tombstones.npy"


class IndexCorruptError(BridgeError):
    """An index directory on disk is unreadable or disagrees with its manifest."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class IndexManifest:
    """What an index holds; saved as manifest.json beside index.faiss.

    ``fingerprint`` is the store's fingerprint of the modality the index was last synced with
    (bridge/storage/items.py). ``params`` holds the kind's parameters (hnsw_m, ef_search, nlist,
    nprobe, trained_count).
    """

    name: str
    kind: str
    dim: int
    count: int
    fingerprint: str
    encoder: str | None
    checkpoint_sha256: str | None
    created_at: str
    requested_kind: str = ""
    updated_at: str = ""
    tombstones: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    faiss_version: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> IndexManifest:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    def acquire_read(self) -> None:
        """Enter as a reader (the search path calls this pair directly: a generator-based
        context manager costs more than the lock itself)."""
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _check_vectors(vectors: Any, name: str, dim: int | None, allow_empty: bool) -> np.ndarray:
    array = np.asarray(vectors)
    if array.ndim != 2:
        raise InvalidInputError(f"{name}: expected a 2-D array (N, D), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(f"{name}: expected float values, got dtype {array.dtype}")
    if array.shape[0] == 0 and not allow_empty:
        raise InvalidInputError(f"{name}: the array has no rows")
    if array.shape[1] == 0:
        raise InvalidInputError(f"{name}: vectors have dimension 0 (shape {array.shape})")
    if dim is not None and array.shape[1] != dim:
        raise InvalidInputError(
            f"{name}: expected dimension {dim}, got {array.shape[1]} (shape {array.shape})"
        )
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{name}: contains NaN or Inf")
    return l2_normalize(array)


def usable_square(row: np.ndarray) -> float | None:
    """The float32 sum of squares of the float32 ``row`` when it alone shows every value
    finite and one not zero (0 < sum < inf), in one NumPy call; else None, and the caller's
    exact checks decide (NaN, Inf, float32 overflow of large finite values, underflow of tiny
    ones). The search path runs this cold, right after a scan."""
    with np.errstate(over="ignore"):  # overflow means "decide exactly", not a warning
        square = float(np.dot(row, row))
    return square if 0.0 < square < math.inf else None


def _check_queries(queries: Any, dim: int) -> np.ndarray:
    """``_check_vectors`` for search queries with fewer NumPy passes: a search runs right
    after the previous one streamed the index through the caches, so every pass here runs
    cold. Float64 sums of squares of float32 values are finite exactly when the values are."""
    array = np.asarray(queries)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] != dim:
        return _check_vectors(array, "queries", dim, allow_empty=False)  # its error message
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(f"queries: expected float values, got dtype {array.dtype}")
    if array.dtype != np.float32:
        with np.errstate(over="ignore"):  # beyond float32's range: inf, rejected just below
            array = array.astype(np.float32)
    if array.shape[0] == 1:  # the common case, in two NumPy calls
        square = usable_square(array[0])
        if square is not None:
            return array / np.float32(math.sqrt(square))
    squares = np.einsum("ij,ij->i", array, array, dtype=np.float64)
    if not np.isfinite(squares).all():
        raise InvalidInputError("queries: contains NaN or Inf")
    # Norms and division in float64: a norm above ~1.8e19 or below ~1e-19 has a square
    # outside float32's range (rows of such vectors came out all zeros or unscaled).
    norms = np.maximum(np.sqrt(squares), np.finfo(np.float64).tiny)[:, None]
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def _check_ids(ids: Any, n: int | None, name: str = "ids") -> np.ndarray:
    array = np.asarray(ids)
    if array.ndim != 1:
        raise InvalidInputError(f"{name}: expected a 1-D array of ids, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InvalidInputError(f"{name}: expected integer ids, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if n is not None and array.shape[0] != n:
        raise InvalidInputError(f"{name}: {array.shape[0]} ids for {n} vectors")
    if array.size and array.min() < 0:
        raise InvalidInputError(f"{name}: ids must be >= 0")
    if np.unique(array).shape[0] != array.shape[0]:
        raise InvalidInputError(f"{name}: ids must be unique")
    return np.ascontiguousarray(array)


def gpu_available() -> bool:
    """True when FAISS reports at least one GPU (faiss-gpu on a machine with a GPU)."""
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return bool(get is not None and get() > 0)


def faiss_summary() -> str:
    """FAISS's version, the SIMD level its kernels run at and its GPU count, for the start-up
    log. (FAISS 1.15 wheels are one library that picks AVX2 / AVX-512 kernels at run time;
    its loader still tries per-SIMD modules first and logs each missing one at INFO.)"""
    import faiss

    config = getattr(faiss, "SIMDConfig", None)
    simd = config.get_level_name() if config is not None else "chosen at import"
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return f"faiss {faiss.__version__}, SIMD level {simd}, {gpus} GPU(s)"


def _choose_flat_kernel(queries: int) -> None:
    """Exact search: a BLAS matrix product for batches of ``BLAS_MIN_QUERIES`` or more queries,
    FAISS's one-query-at-a-time scan below that.

    FAISS picks between the two with the process-wide ``distance_compute_blas_threshold``,
    whose default in this build (128,000) never picks BLAS for the batches that
    ``SearchCoalescer`` forms, and whose meaning differs between FAISS versions; so it is set
    per call. Two threads setting it at once can only make one search take the slower kernel,
    never change a result. Measured here, one thread, 512-d, per query: 10k vectors 0.81 ms
    scanned vs 0.56 ms (8 per call) and 0.23 ms (32 per call) with BLAS; 100k: 9.6 vs 4.8 and
    2.1 ms. BLAS loses below that: one query takes 4.5 ms, and at 4 per call 0.93 ms vs 0.65
    ms scanned (10k) and break-even at 100k, hence the floor of 6.
    """
    import faiss

    threshold = 0 if queries >= BLAS_MIN_QUERIES else _NEVER_BLAS
    if faiss.cvar.distance_compute_blas_threshold != threshold:
        faiss.cvar.distance_compute_blas_threshold = threshold


class VectorIndex:
    """One FAISS index with its manifest (module docstring). Build with ``build`` or ``load``."""

    _gpu_resources: Any = None
    _gpu_lock = threading.Lock()

    def __init__(
        self,
        cpu_index: Any,
        manifest: IndexManifest,
        ids: np.ndarray,
        tombstones: np.ndarray | None = None,
        use_gpu: bool = True,
    ) -> None:
        """Wrap an existing FAISS CPU index (internal: use ``build`` or ``load``)."""
        self._cpu = cpu_index
        self._ids: set[int] = {int(i) for i in ids}
        self._tombstones: set[int] = set() if tombstones is None else {int(i) for i in tombstones}
        self._lock = ReadWriteLock()
        # Concurrent searches share FAISS calls (bridge/index/coalesce.py).
        self._coalescer = SearchCoalescer(self._search_batch)
        self._selector: tuple[Any, Any] | None = None  # (IDSelectorBatch, IDSelectorNot)
        self._layout: FlatLayout | None = None  # flat storage as NumPy, for split scans
        self._refresh_selector()
        self.manifest = dataclasses.replace(
            manifest, count=len(self._ids), tombstones=len(self._tombstones)
        )
        self._gpu: Any = None
        if use_gpu and manifest.kind in ("flat", "ivf") and gpu_available():
            self._gpu = self._to_gpu(cpu_index)
        self._apply_params(self.manifest.params)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        name: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        kind: str = "flat",
        *,
        fingerprint: str,
        encoder: str | None = None,
        checkpoint_sha256: str | None = None,
        use_gpu: bool = True,
        hnsw_m: int = 32,
        ivf_nlist: int | None = None,
        ef_search: int = 64,
        ef_construction: int = 80,
        nprobe: int = 32,
    ) -> VectorIndex:
        """Build an index of ``vectors`` (N, D) with ids ``ids`` (N,); N may be 0 if D > 0."""
        import faiss

        if kind not in INDEX_KINDS:
            raise InvalidInputError(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        for label, value in (("hnsw_m", hnsw_m), ("ef_search", ef_search), ("nprobe", nprobe)):
            if not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"{label} must be a positive integer, got {value!r}")
        x = _check_vectors(vectors, f"{name} vectors", None, allow_empty=True)
        id_array = _check_ids(ids, x.shape[0], f"{name} ids")
        n, dim = x.shape
        built_kind = kind
        params: dict[str, Any] = {}
        index: Any
        if kind == "ivf" and n < IVF_MIN_ITEMS:
            logger.info("%s: %d vectors < %d, ivf falls back to flat", name, n, IVF_MIN_ITEMS)
            built_kind = "flat"
        with _omp_threads(_configured_threads):
            if built_kind == "flat":
                index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
                index.add_with_ids(x, id_array)
            elif built_kind == "hnsw":
                hnsw = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
                hnsw.hnsw.efConstruction = max(ef_construction, hnsw_m)
                index = faiss.IndexIDMap2(hnsw)
                index.add_with_ids(x, id_array)
                params = {
                    "hnsw_m": hnsw_m,
                    "ef_construction": ef_construction,
                    "ef_search": ef_search,
                }
            else:
                nlist = ivf_nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
                if not 1 <= nlist <= n:
                    raise InvalidInputError(f"ivf_nlist must be in [1, {n}], got {nlist}")
                quantizer = faiss.IndexFlatIP(dim)
                index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
                index.train(x)
                index.add_with_ids(x, id_array)
                params = {"nlist": nlist, "nprobe": min(nprobe, nlist), "trained_count": n}
        manifest = IndexManifest(
            name=name,
            kind=built_kind,
            dim=dim,
            count=n,
            fingerprint=fingerprint,
            encoder=encoder,
            checkpoint_sha256=checkpoint_sha256,
            created_at=_now(),
            requested_kind=kind,
            updated_at=_now(),
            params=params,
            faiss_version=str(getattr(faiss, "__version__", "")),
        )
        return cls(index, manifest, id_array, use_gpu=use_gpu)

    @classmethod
    def _to_gpu(cls, cpu_index: Any) -> Any:
        import faiss

        with cls._gpu_lock:
            if cls._gpu_resources is None:
                cls._gpu_resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(cls._gpu_resources, 0, cpu_index)

    def _apply_params(self, params: dict[str, Any]) -> None:
        import faiss

        for target in (self._cpu, self._gpu):
            if target is None:
                continue
            space = faiss.ParameterSpace() if target is self._cpu else faiss.GpuParameterSpace()
            if "ef_search" in params and self.manifest.kind == "hnsw":
                space.set_index_parameter(target, "efSearch", int(params["ef_search"]))
            if "nprobe" in params and self.manifest.kind == "ivf":
                space.set_index_parameter(target, "nprobe", int(params["nprobe"]))

    # -- properties --------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        """Number of live vectors (tombstoned ones excluded)."""
        return len(self._ids)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    def ids(self) -> np.ndarray:
        """The live ids, ascending (int64)."""
        with self._lock.read():
            return np.array(sorted(self._ids), dtype=np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``ids`` are live in the index."""
        with self._lock.read():
            return np.array([int(i) in self._ids for i in np.asarray(ids).ravel()], dtype=bool)

    def needs_rebuild(self) -> str | None:
        """A reason to rebuild from the store (too many tombstones, IVF outgrown), or None."""
        m = self.manifest
        if m.tombstones and m.tombstones > TOMBSTONE_REBUILD_FRACTION * max(m.count, 1):
            return f"{m.tombstones} tombstones for {m.count} live vectors"
        if m.requested_kind == "ivf" and m.kind == "flat" and m.count >= IVF_MIN_ITEMS:
            return f"ivf requested, built flat for a small set, now {m.count} vectors"
        trained = int(m.params.get("trained_count", 0))
        if m.kind == "ivf" and trained and m.count > IVF_REGROW_FACTOR * trained:
            return f"ivf trained on {trained} vectors, now holds {m.count}"
        return None

    def set_search_params(self, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Change HNSW ``ef_search`` or IVF ``nprobe`` (ignored for kinds they do not apply to)."""
        params = dict(self.manifest.params)
        if ef_search is not None:
            if ef_search < 1:
                raise InvalidInputError(f"ef_search must be >= 1, got {ef_search}")
            if self.kind == "hnsw":
                params["ef_search"] = int(ef_search)
        if nprobe is not None:
            if nprobe < 1:
                raise InvalidInputError(f"nprobe must be >= 1, got {nprobe}")
            if self.kind == "ivf":
                params["nprobe"] = min(int(nprobe), int(params["nlist"]))
        with self._lock.write():
            self._apply_params(params)
            self.manifest = dataclasses.replace(self.manifest, params=params)

    # -- search and mutation -----------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine for each query row: ((Q, k) float32 scores, (Q, k) int64 ids).

        A 1-D query is one row. Where fewer than ``k`` vectors exist, ids are -1 and scores
        -inf. Queries are L2-normalised here.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        return self._coalescer.search(_check_queries(queries, self.dim), int(k))

    def _search_batch(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One FAISS search of the (already checked) rows ``q``; see ``search``."""
        self._lock.acquire_read()
        try:
            ntotal = int(self._cpu.ntotal) if self._ids else 0
            kk = min(k, ntotal)
            if kk:
                _set_thread_omp(_search_threads(q.shape[0]))
                if self.kind == "hnsw":
                    dist, found = self._cpu.search(q, kk, params=self._hnsw_params(kk))
                else:
                    gpu = self._gpu is not None and kk <= GPU_MAX_K
                    if not gpu:  # split scans too: faiss.knn reads the same threshold
                        _choose_flat_kernel(q.shape[0])
                    if not gpu and self._splits(q.shape[0], ntotal):
                        dist, found = _scanner.search(self._flat_layout(), q, kk)
                    else:
                        dist, found = (self._gpu if gpu else self._cpu).search(q, kk)
        finally:
            self._lock.release_read()
        if kk < k:  # fewer vectors than asked for: pad with (-inf, -1)
            scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
            labels = np.full((q.shape[0], k), -1, dtype=np.int64)
            if kk:
                scores[:, :kk], labels[:, :kk] = dist, found
        else:
            scores, labels = dist, found
        scores[labels < 0] = -np.inf  # removed or missing neighbours
        return scores, labels

    def _splits(self, queries: int, rows: int) -> bool:
        """A lone query on a big exact index: scanned on several threads
        (bridge/index/split_scan.py)."""
        return queries == 1 and self.kind == "flat" and _scanner.splits(rows)

    def _flat_layout(self) -> FlatLayout:
        """The flat storage as NumPy (under the read lock; add and remove drop it)."""
        layout = self._layout
        if layout is None:
            layout = self._layout = flat_layout(self._cpu)
        return layout

    def add(self, ids: np.ndarray, vectors: np.ndarray, fingerprint: str) -> None:
        """Add vectors under new ids (InvalidInputError for an id already present or removed)."""
        x = _check_vectors(vectors, f"{self.manifest.name} vectors", self.dim, allow_empty=True)
        id_array = _check_ids(ids, x.shape[0], f"{self.manifest.name} ids")
        with self._lock.write():
            clash = [int(i) for i in id_array if int(i) in self._ids or int(i) in self._tombstones]
            if clash:
                raise InvalidInputError(
                    f"{self.manifest.name}: id(s) already in the index: {clash[:10]}"
                )
            if id_array.size:
                self._layout = None  # the storage may move
                with _omp_threads(_configured_threads):
                    self._cpu.add_with_ids(x, id_array)
                    if self._gpu is not None:
                        self._gpu.add_with_ids(x, id_array)
                self._ids.update(int(i) for i in id_array)
            self.manifest = dataclasses.replace(
                self.manifest, count=len(self._ids), fingerprint=fingerprint, updated_at=_now()
            )

    def _hnsw_params(self, k: int) -> Any:
        """HNSW search parameters: efSearch >= k (fewer candidates than k can return fewer
        than k results) and a selector that skips tombstoned ids inside the graph walk."""
        import faiss

        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.efSearch = max(int(self.manifest.params.get("ef_search", 64)), k)
        if self._selector is not None:
            params.sel = self._selector[1]
        return params

    def _refresh_selector(self) -> None:
        import faiss

        if not self._tombstones:
            self._selector = None
            return
        batch = faiss.IDSelectorBatch(np.array(sorted(self._tombstones), dtype=np.int64))
        self._selector = (batch, faiss.IDSelectorNot(batch))

    def set_fingerprint(self, fingerprint: str) -> None:
        """Record that the index matches the store at ``fingerprint`` (after a check by ids)."""
        with self._lock.write():
            self.manifest = dataclasses.replace(self.manifest, fingerprint=fingerprint)

    def remove(self, ids: np.ndarray, fingerprint: str) -> None:
        """Remove ids (unknown ones are ignored). HNSW: tombstones, filtered at search."""
        import faiss

        id_array = _check_ids(np.unique(np.asarray(ids)), None, f"{self.manifest.name} ids")
        with self._lock.write():
            present = np.array([i for i in id_array if int(i) in self._ids], dtype=np.int64)
            if present.size:
                if self.kind == "hnsw":
                    self._tombstones.update(int(i) for i in present)
                    self._refresh_selector()
                else:
                    self._layout = None  # rows shift
                    removed = self._cpu.remove_ids(faiss.IDSelectorBatch(present))
                    if removed != present.size:
                        raise IndexCorruptError(
                            f"{self.manifest.name}: removed {removed} of {present.size} ids"
                        )
                    if self._gpu is not None:
                        self._gpu = self._to_gpu(self._cpu)
                        self._apply_params(self.manifest.params)
                self._ids.difference_update(int(i) for i in present)
            self.manifest = dataclasses.replace(
                self.manifest,
                count=len(self._ids),
                tombstones=len(self._tombstones),
                fingerprint=fingerprint,
                updated_at=_now(),
            )

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write index.faiss, ids.npy, tombstones.npy and manifest.json to ``directory``.

        Atomic: everything goes to a temp sibling directory (files fsynced) which then replaces
        ``directory`` by rename; the old one is moved aside first and deleted after. A crash
        between the two renames leaves ``<directory>.old-*``, which ``load`` restores.
        """
        import faiss

        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
        try:
            with self._lock.read():
                faiss.write_index(self._cpu, str(tmp / INDEX_FILE))
                np.save(tmp / IDS_FILE, np.array(sorted(self._ids), dtype=np.int64))
                np.save(tmp / TOMBSTONES_FILE, np.array(sorted(self._tombstones), dtype=np.int64))
                manifest = self.manifest
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
            for name in (INDEX_FILE, IDS_FILE, TOMBSTONES_FILE, MANIFEST_FILE):
                with open(tmp / name, "rb") as handle:
                    os.fsync(handle.fileno())
            old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
            if directory.exists():
                os.rename(directory, old)
            os.rename(tmp, directory)
            _fsync_dir(directory.parent)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, directory: Path, use_gpu: bool = True) -> VectorIndex:
        """Load a saved index; NotFoundError if absent, IndexCorruptError if inconsistent."""
        import faiss

        directory = Path(directory)
        _recover_interrupted_save(directory)
        if not (directory / MANIFEST_FILE).is_file():
            raise NotFoundError(f"no index at {directory}")
        try:
            manifest = IndexManifest.from_json(json.loads((directory / MANIFEST_FILE).read_text()))
            index = faiss.read_index(str(directory / INDEX_FILE))
            ids = np.load(directory / IDS_FILE, allow_pickle=False)
            tombstones = np.load(directory / TOMBSTONES_FILE, allow_pickle=False)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise IndexCorruptError(f"cannot read the index at {directory}: {exc}") from exc
        if index.d != manifest.dim or index.ntotal != ids.shape[0] + tombstones.shape[0]:
            raise IndexCorruptError(
                f"{directory}: index has d={index.d}, ntotal={index.ntotal}; manifest and id "
                f"files say d={manifest.dim}, {ids.shape[0]} ids + {tombstones.shape[0]} removed"
            )
        if manifest.count != ids.shape[0]:
            raise IndexCorruptError(
                f"{directory}: manifest count {manifest.count} != {ids.shape[0]} ids"
            )
        return cls(index, manifest, ids, tombstones, use_gpu=use_gpu)


_configured_threads: int | None = None
_scanner = SplitScanner(default_threads())
_scanners = {_scanner.threads: _scanner}  # by thread count: switching back reuses the pool


def configure_search_threads(threads: int | None) -> None:
    """Threads a lone query's exact scan of a big flat index may use (None or 0: one per
    core; 1: never split). bridge/index/split_scan.py explains when a scan splits."""
    global _scanner
    wanted = _thread_count(threads, "search threads") or default_threads()
    if wanted not in _scanners:  # kept: a search may be using one; threads start on first use
        _scanners[wanted] = SplitScanner(wanted)
    _scanner = _scanners[wanted]


def configure_threads(threads: int | None) -> None:
    """Set the OpenMP thread count FAISS uses for builds and large query batches (None or 0:
    FAISS's default, the number of cores).

    ``faiss.omp_set_num_threads`` only changes the calling thread's setting (OpenMP keeps it
    per thread: set in the main thread, a worker thread still sees the default), so a
    service-wide setting must be applied by the thread that runs FAISS; VectorIndex does that
    around every build, add and search.
    """
    global _configured_threads
    _configured_threads = _thread_count(threads, "FAISS threads")


def _thread_count(threads: int | None, what: str) -> int | None:
    """``threads`` checked (None or an integer >= 0; InvalidInputError naming ``what``
    otherwise), with 0 read as None: "the default"."""
    if threads is not None and (not isinstance(threads, int) or threads < 0):
        raise InvalidInputError(f"{what} must be a non-negative integer, got {threads!r}")
    return threads or None


@contextmanager
def _omp_threads(threads: int | None) -> Iterator[None]:
    """Run FAISS with ``threads`` OpenMP threads in this thread (None: the thread's default,
    which a search may have lowered), then put back the count it had. Counts set by code
    that calls ``faiss.omp_set_num_threads`` itself in the same thread are not tracked."""
    before = _current_thread_omp()
    _set_thread_omp(threads)
    try:
        yield
    finally:
        _set_thread_omp(before)


_thread_omp = threading.local()  # .default: the thread's own count; .current: what we set


def _set_thread_omp(threads: int | None) -> None:
    """Leave this thread's OpenMP count at ``threads`` (None: the thread's default), calling
    into FAISS only when it changes. Searches use this instead of ``_omp_threads``: setting
    and restoring around every search were two FAISS calls per query, run cold."""
    import faiss

    current = _current_thread_omp()
    wanted = threads or _thread_omp.default
    if wanted != current:
        faiss.omp_set_num_threads(wanted)
        _thread_omp.current = wanted


def _current_thread_omp() -> int:
    """This thread's OpenMP count as last set through here (read from FAISS the first time)."""
    if not hasattr(_thread_omp, "current"):
        import faiss

        _thread_omp.default = _thread_omp.current = faiss.omp_get_max_threads()
    current: int = _thread_omp.current
    return current


def _search_threads(nq: int) -> int | None:
    """One thread for small batches, else the configured count.

    FAISS searches one query on one thread anyway (flat, HNSW and IVF parallelise over
    queries), but IndexIDMap's id translation opens an OpenMP region whose barrier stalls for
    milliseconds when the cores are busy: measured on a loaded 2-core box, 5,000 x 64 flat,
    single-query p99 32 ms with 2 threads vs 0.25 ms with 1 (p50 0.035 ms either way).
    """
    return 1 if nq <= SMALL_QUERY_BATCH else _configured_threads


def _single_thread_if(condition: bool) -> Any:
    """``_omp_threads(1)`` when ``condition`` (kept for the benchmark's raw-FAISS floor)."""
    return _omp_threads(1 if condition else None)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _recover_interrupted_save(directory: Path) -> None:
    """If a save crashed between its two renames, put the previous index back."""
    if directory.exists() or not directory.parent.is_dir():
        return
    olds = sorted(
        directory.parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime
    )
    if olds:
        logger.warning("restoring %s from an interrupted save (%s)", directory, olds[-1].name)
        os.rename(olds[-1], directory)
