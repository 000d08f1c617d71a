"""A lone query's exact search of a big flat index, scanned on several threads at once.

FAISS parallelises a flat search over queries, so one query scans on one core however many
are idle: 22-25 ms for 100,000 x 512 on this project's 2-core VM, most of a lone request's
latency. Here the stored vectors (a no-copy view of the IndexFlatIP's storage) are cut into
contiguous slices; the calling thread scans the first and worker threads the others, each
with FAISS's own one-query kernel (`faiss.knn`, what `IndexFlatIP.search` runs), and the
slices' top-k lists are merged. Results are those of one FAISS search: the same scores, and
row positions mapped to ids through the IndexIDMap2's id map (exactly tied scores may come
in another order).

Only single-query calls split (VectorIndex decides): batches of 6 or more already use a
BLAS product, and under load the service batches queries. Slices are at least
`MIN_ROWS_PER_SLICE` rows, so small indexes (10k: one scan of ~2 ms) never pay the thread
hand-off. `faiss.knn` picks its kernel by FAISS's process-wide BLAS threshold, so the caller
must set it for one query first (VectorIndex does). The gain needs the other cores free:
a library thread that busy-waits (OpenBLAS after a NumPy product; `python -m app` gives
NumPy one OpenBLAS thread for that reason) takes it away. `mbridge bench split-scan`
measures the gain (100k, 2 cores: 1.54x q/s for one client, 1.00x and 1.02x for 8 and 32).
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bridge.errors import InvalidInputError

MIN_ROWS_PER_SLICE = 16_384


class FlatLayout(NamedTuple):
    """An IndexIDMap2(IndexFlatIP)'s storage as NumPy: valid until its next add or remove."""

    vectors: np.ndarray  # (n, d) float32 view of the flat storage (no copy)
    ids: np.ndarray  # (n,) int64: row position -> id


def flat_layout(index: Any) -> FlatLayout:
    """The layout of an ``IndexIDMap2(IndexFlatIP)`` (call under the index's read lock)."""
    import faiss

    flat = faiss.downcast_index(index.index)
    n, d = int(flat.ntotal), int(flat.d)
    if n == 0:
        vectors = np.empty((0, d), dtype=np.float32)
    else:
        vectors = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)  # type: ignore[attr-defined]
    ids = faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)
    if ids.shape[0] != n:
        raise RuntimeError(f"flat index holds {n} vectors but {ids.shape[0]} ids")
    return FlatLayout(vectors, ids)


def slice_count(rows: int, threads: int) -> int:
    """How many slices ``rows`` vectors are scanned in: at most ``threads``, each at least
    MIN_ROWS_PER_SLICE rows, and always one."""
    return max(1, min(threads, rows // MIN_ROWS_PER_SLICE))


def slice_bounds(rows: int, threads: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) slices, ``slice_count`` of them (one slice, the whole range,
    when ``rows`` is too small to split)."""
    count = slice_count(rows, threads)
    edges = [rows * i // count for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _one_omp_thread() -> None:
    import faiss

    faiss.omp_set_num_threads(1)  # each slice is one thread's work; no nested OpenMP team


def scan_slice(vectors: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's exact inner-product top-k of ``query`` (1, d) over ``vectors``: (scores, rows)."""
    import faiss

    scores, rows = faiss.knn(query, vectors, min(k, vectors.shape[0]), faiss.METRIC_INNER_PRODUCT)
    return scores, rows


class SplitScanner:
    """Scans one query over slices of a flat layout on up to ``threads`` threads."""

    def __init__(self, threads: int) -> None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InvalidInputError(f"search threads must be an integer >= 1, got {threads!r}")
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def splits(self, rows: int) -> bool:
        """Whether a query over ``rows`` vectors would be scanned in more than one slice
        (checked on every search, so without building the slices)."""
        return slice_count(rows, self.threads) > 1

    def pool(self) -> ThreadPoolExecutor:
        """The worker threads (created on first use; the calling thread scans a slice too)."""
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    self.threads - 1, thread_name_prefix="split-scan", initializer=_one_omp_thread
                )
            return self._pool

    def search(
        self, layout: FlatLayout, query: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(1, k') scores and ids of the top k' = min(k, n) rows for one (1, d) query."""
        vectors = layout.vectors
        bounds = slice_bounds(vectors.shape[0], self.threads)
        futures: list[Future[tuple[np.ndarray, np.ndarray]]] = []
        if len(bounds) > 1:
            pool = self.pool()
            futures = [pool.submit(scan_slice, vectors[a:b], query, k) for a, b in bounds[1:]]
        parts = [scan_slice(vectors[bounds[0][0] : bounds[0][1]], query, k)]
        parts.extend(future.result() for future in futures)
        scores = np.concatenate([s for s, _ in parts], axis=1)
        offsets = [start for start, _ in bounds]
        rows = np.concatenate(
            [np.where(r >= 0, r + at, -1) for (_, r), at in zip(parts, offsets, strict=True)],
            axis=1,
        )
        # stable, so exact ties across slices stay in slice order (within a slice FAISS's
        # heap orders them; an unsplit search may list tied rows in another order)
        best = np.argsort(-scores[0], kind="stable")[: min(k, vectors.shape[0])]
        found = rows[:, best]
        ids = np.where(found >= 0, layout.ids[np.maximum(found, 0)], -1)
        return scores[:, best], ids

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


def default_threads() -> int:
    """One slice per core this process may use: its CPU affinity, capped by a cgroup CPU
    quota (a container's ``--cpus``), which affinity does not show."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Whole CPUs of this cgroup's quota, rounded up (cgroup v2 ``cpu.max``, else v1
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``); None when there is no quota."""
    try:
        if (root / "cpu.max").is_file():
            quota, period = (root / "cpu.max").read_text().split()[:2]
        else:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        if quota in ("max", "-1"):
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None
