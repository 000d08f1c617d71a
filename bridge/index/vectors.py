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

Threads: bridge/index/threads.py (OpenMP counts per calling thread, the exact-search kernel,
split scans of a lone query). On disk: bridge/index/files.py.

Batching: concurrent ``search`` calls are grouped into one FAISS call
(``bridge/index/coalesce.py``);
a lone caller searches at once, callers that arrive while a search runs share the next one.

Thread-safety: a readers-writer lock (writer preference). Any number of searches run at once
(FAISS releases the GIL during a search); ``add``/``remove``/``set_search_params`` wait for
running searches to finish and block new ones while they run. ``save`` is a reader.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import InvalidInputError
from bridge.index import threads
from bridge.index.checks import (
    check_ids,
    check_queries,
    check_vectors,
    search_params_with,
    usable_square,
)
from bridge.index.coalesce import SearchCoalescer, weak_search
from bridge.index.files import (
    IDS_FILE,
    INDEX_FILE,
    TOMBSTONES_FILE,
    IndexCorruptError,
    IndexManifest,
    now,
    read_index_dir,
    save_index_dir,
)
from bridge.index.locks import ReadWriteLock
from bridge.index.split_scan import FlatLayout, flat_layout
from bridge.index.threads import configure_search_threads, configure_threads

logger = logging.getLogger(__name__)

INDEX_KINDS = ("flat", "hnsw", "ivf")
IVF_MIN_ITEMS = 1000
TOMBSTONE_REBUILD_FRACTION = 0.2
IVF_REGROW_FACTOR = 4  # an IVF index that has grown 4x past its training set asks for a rebuild
GPU_MAX_K = 2048


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


class VectorIndex:
    """One FAISS index with its manifest (module docstring). Build with ``build`` or ``load``."""

    _gpu_resources: Any = None
    _gpu_lock = threading.Lock()
    inline_searches = True  # in-process: a quick search may run on the event loop

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
        self._coalescer = SearchCoalescer(weak_search(self._search_batch))
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
        x = check_vectors(vectors, f"{name} vectors", None, allow_empty=True)
        id_array = check_ids(ids, x.shape[0], f"{name} ids")
        n, dim = x.shape
        built_kind = kind
        params: dict[str, Any] = {}
        index: Any
        if kind == "ivf" and n < IVF_MIN_ITEMS:
            logger.info("%s: %d vectors < %d, ivf falls back to flat", name, n, IVF_MIN_ITEMS)
            built_kind = "flat"
        with threads.omp_threads(threads.configured_threads()):
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
            created_at=now(),
            requested_kind=kind,
            updated_at=now(),
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
        params = search_params_with(self.manifest.params, self.kind, ef_search, nprobe)
        with self._lock.write():
            self._apply_params(params)
            self.manifest = dataclasses.replace(self.manifest, params=params)

    # -- search and mutation -----------------------------------------------------------------

    def can_filter(self, filters: Mapping[str, Any]) -> bool:
        """FAISS keeps no metadata: the service filters hits in the store."""
        return False

    def search(
        self, queries: np.ndarray, k: int, filters: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine for each query row: ((Q, k) float32 scores, (Q, k) int64 ids).

        A 1-D query is one row. Where fewer than ``k`` vectors exist, ids are -1 and scores
        -inf. Queries are L2-normalised here. ``filters`` must be empty (``can_filter``).
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        if filters:
            raise InvalidInputError("a FAISS index filters nothing; filter hits in the store")
        return self._coalescer.search(check_queries(queries, self.dim), int(k))

    def _search_batch(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One FAISS search of the (already checked) rows ``q``; see ``search``."""
        self._lock.acquire_read()
        try:
            ntotal = int(self._cpu.ntotal) if self._ids else 0
            kk = min(k, ntotal)
            if kk:
                threads.set_thread_omp(threads.search_threads(q.shape[0]))
                if self.kind == "hnsw":
                    dist, found = self._cpu.search(q, kk, params=self._hnsw_params(kk))
                else:
                    gpu = self._gpu is not None and kk <= GPU_MAX_K
                    if not gpu:  # split scans too: faiss.knn reads the same threshold
                        threads.choose_flat_kernel(q.shape[0])
                    if not gpu and self._splits(q.shape[0], ntotal):
                        dist, found = threads.split_scanner().search(self._flat_layout(), q, kk)
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
        return queries == 1 and self.kind == "flat" and threads.split_scanner().splits(rows)

    def _flat_layout(self) -> FlatLayout:
        """The flat storage as NumPy (under the read lock; add and remove drop it)."""
        layout = self._layout
        if layout is None:
            layout = self._layout = flat_layout(self._cpu)
        return layout

    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        fingerprint: str,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> None:
        """Add vectors under new ids (InvalidInputError for an id already present or removed).
        ``metadata`` is ignored: FAISS keeps vectors only."""
        x = check_vectors(vectors, f"{self.manifest.name} vectors", self.dim, allow_empty=True)
        id_array = check_ids(ids, x.shape[0], f"{self.manifest.name} ids")
        with self._lock.write():
            clash = [int(i) for i in id_array if int(i) in self._ids or int(i) in self._tombstones]
            if clash:
                raise InvalidInputError(
                    f"{self.manifest.name}: id(s) already in the index: {clash[:10]}"
                )
            if id_array.size:
                self._layout = None  # the storage may move
                with threads.omp_threads(threads.configured_threads()):
                    self._cpu.add_with_ids(x, id_array)
                    if self._gpu is not None:
                        self._gpu.add_with_ids(x, id_array)
                self._ids.update(int(i) for i in id_array)
            self.manifest = dataclasses.replace(
                self.manifest, count=len(self._ids), fingerprint=fingerprint, updated_at=now()
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

        id_array = check_ids(np.unique(np.asarray(ids)), None, f"{self.manifest.name} ids")
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
                updated_at=now(),
            )

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write the index directory atomically (bridge/index/files.py); a reader, so searches
        go on while it saves."""
        import faiss

        def write_payload(tmp: Path) -> IndexManifest:
            with self._lock.read():
                faiss.write_index(self._cpu, str(tmp / INDEX_FILE))
                np.save(tmp / IDS_FILE, np.array(sorted(self._ids), dtype=np.int64))
                np.save(tmp / TOMBSTONES_FILE, np.array(sorted(self._tombstones), dtype=np.int64))
                return self.manifest

        save_index_dir(Path(directory), write_payload)

    @classmethod
    def load(cls, directory: Path, use_gpu: bool = True) -> VectorIndex:
        """Load a saved index; NotFoundError if absent, IndexCorruptError if inconsistent."""
        index, manifest, ids, tombstones = read_index_dir(Path(directory))
        return cls(index, manifest, ids, tombstones, use_gpu=use_gpu)


# Re-exported: the index layer's public names (bridge/index/__init__.py lists them).
__all__ = [
    "INDEX_KINDS",
    "IndexCorruptError",
    "IndexManifest",
    "VectorIndex",
    "configure_search_threads",
    "configure_threads",
    "faiss_summary",
    "gpu_available",
    "usable_square",
]
