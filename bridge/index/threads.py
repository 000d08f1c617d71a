"""How FAISS uses the cores: OpenMP thread counts per calling thread, the exact-search kernel
(BLAS product or one-query scan), and split scans of a lone query.

Searches of at most ``SMALL_QUERY_BATCH`` queries run with one OpenMP thread (set per calling
thread), which removes millisecond OpenMP barrier stalls from the p99 of single-query serving
without slowing it (see ``search_threads``); larger batches, builds and adds use
``configure_threads(n)`` (default: FAISS's, one per core). OpenMP keeps the thread count per
calling thread, so ``faiss.omp_set_num_threads`` in the main thread does not reach the worker
threads that serve requests; ``configure_threads`` does. A lone query on a flat index of two
slices' worth of vectors or more is the exception: it is scanned in slices on several threads
at once (``configure_search_threads``, bridge/index/split_scan.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bridge.errors import InvalidInputError
from bridge.index.split_scan import SplitScanner, default_threads

SMALL_QUERY_BATCH = 64  # batches up to this size (coalesced serving batches) use one OpenMP thread
BLAS_MIN_QUERIES = 6  # exact search uses a BLAS product from this many queries per call
_NEVER_BLAS = 2**31 - 1


def choose_flat_kernel(queries: int) -> None:
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
def omp_threads(threads: int | None) -> Iterator[None]:
    """Run FAISS with ``threads`` OpenMP threads in this thread (None: the thread's default,
    which a search may have lowered), then put back the count it had. Counts set by code
    that calls ``faiss.omp_set_num_threads`` itself in the same thread are not tracked."""
    before = _current_thread_omp()
    set_thread_omp(threads)
    try:
        yield
    finally:
        set_thread_omp(before)


_thread_omp = threading.local()  # .default: the thread's own count; .current: what we set


def set_thread_omp(threads: int | None) -> None:
    """Leave this thread's OpenMP count at ``threads`` (None: the thread's default), calling
    into FAISS only when it changes. Searches use this instead of ``omp_threads``: setting
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


def search_threads(nq: int) -> int | None:
    """One thread for small batches, else the configured count.

    FAISS searches one query on one thread anyway (flat, HNSW and IVF parallelise over
    queries), but IndexIDMap's id translation opens an OpenMP region whose barrier stalls for
    milliseconds when the cores are busy: measured on a loaded 2-core box, 5,000 x 64 flat,
    single-query p99 32 ms with 2 threads vs 0.25 ms with 1 (p50 0.035 ms either way).
    """
    return 1 if nq <= SMALL_QUERY_BATCH else _configured_threads


def single_thread_if(condition: bool) -> Any:
    """``omp_threads(1)`` when ``condition`` (kept for the benchmark's raw-FAISS floor)."""
    return omp_threads(1 if condition else None)


def configured_threads() -> int | None:
    """The OpenMP count for builds, adds and large batches (None: FAISS's default)."""
    return _configured_threads


def split_scanner() -> SplitScanner:
    """The scanner lone queries on big flat indexes use (configure_search_threads)."""
    return _scanner
