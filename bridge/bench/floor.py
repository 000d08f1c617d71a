"""The service benchmark's FAISS floor, taken on the service's own index.

Issue 4 compares the service with "raw FAISS search of the same vectors in the same run".
The most faithful such floor is a raw search of the very index the service answers from, in
the process that serves it, at the same time as the service queries:

- `raw_search_times(index, queries, total)` times single-query searches straight on a
  VectorIndex's FAISS object (one OpenMP thread, FAISS's scan kernel: what
  `VectorIndex.search` ends in for one query), without the service's checks, locks,
  coalescer, hydration or HTTP. The facade cells call it on the in-process service's index.
- The benchmark server (bridge/bench/appserver.py: `python -m app` plus bench routes) adds
  ``POST /_bench/floor`` (`add_floor_route`), which runs `raw_search_times` on the running
  service's index on the event loop thread (where a lone search runs too) and answers the
  timings. The HTTP cells use it; the route exists only in the benchmark server.

Why not a copy of the vectors in another process: on the 2-core EPYC VMs, four copies of
one 100,000-vector index in one process scan at p50s up to 1.7 ms apart (`mbridge bench
scan-spread`), close to the 2 ms target itself, and the machine's scan speed drifts by
10-20% within minutes. One-client cells therefore interleave the floor with the service: one
raw search of the same vector right before each service query. The floor of earlier runs, a
fresh process with its own copy (`FreshProcessFloor`), is still reported for reference.

`python -m bridge.bench.floor VECTORS.npy QUERIES.npy TOTAL` is that fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Request  # at module level: FastAPI resolves the route's hints here

from bridge.bench.standins import K
from bridge.bench.timing import stats

if TYPE_CHECKING:
    from fastapi import FastAPI

    from bridge.index.vectors import VectorIndex
    from bridge.service.facade import BridgeService

FLOOR_PATH = "/_bench/floor"


def index_for(service: BridgeService, which: str, target: str) -> VectorIndex:
    """The index a query ends in: ``native`` (text/vector -> native CLIP or CLAP index) or
    ``shared`` (the active bridge's shared-space index of ``target``)."""
    from bridge.service.versions import shared_index

    if which == "native":
        index = service.catalog.native(target)
    else:
        active = service._active
        index = shared_index(service.catalog, active, target) if active else None
    if index is None:
        raise LookupError(f"no {which} {target} index is loaded")
    from bridge.index.vectors import VectorIndex

    if not isinstance(index, VectorIndex):
        raise LookupError(f"the floor benchmark measures FAISS indexes, not {type(index).__name__}")
    return index


def raw_search_times(
    index: VectorIndex, queries: np.ndarray, total: int, split: bool | None = None
) -> list[float]:
    """Seconds per raw FAISS search for ``total`` searches, cycling through ``queries``.

    ``split``: scan each query in slices on several threads with FAISS's kernel (faiss.knn),
    on the same slices of the same storage as the service's split scan
    (bridge/index/split_scan.py), without its merge and id mapping; None: split exactly when
    the service would; False: one FAISS search on one thread (the throughput target's floor).
    """
    from bridge.index.split_scan import slice_bounds
    from bridge.index.threads import choose_flat_kernel, set_thread_omp, split_scanner

    rows = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, index.dim)
    rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)  # as VectorIndex.search does
    set_thread_omp(1)  # the thread-local count VectorIndex sets for small batches
    choose_flat_kernel(1)
    faiss_index = index._cpu  # CPU index: this benchmark runs where FAISS reports no GPU
    if split is None:
        split = index._splits(1, int(faiss_index.ntotal))
    search: Callable[[np.ndarray], Any] = lambda q: faiss_index.search(q, K)  # noqa: E731
    if split:
        vectors = index._flat_layout().vectors
        slices = [vectors[a:b] for a, b in slice_bounds(vectors.shape[0], split_scanner().threads)]
        search = _parallel_knn(slices)
    times = []
    for i in range(total):
        q = rows[i % len(rows)][None, :]
        t0 = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - t0)
    return times


_floor_pools: dict[int, ThreadPoolExecutor] = {}


def _parallel_knn(slices: list[np.ndarray]) -> Callable[[np.ndarray], None]:
    """q -> None: raw `faiss.knn` of q over every slice, the first in this thread and the rest
    in a pool of the floor's own (not the service's), each thread one OpenMP thread."""
    import faiss

    from bridge.index.split_scan import _one_omp_thread

    workers = len(slices) - 1
    if workers not in _floor_pools:
        _floor_pools[workers] = ThreadPoolExecutor(workers, initializer=_one_omp_thread)
    pool = _floor_pools[workers]
    ip = faiss.METRIC_INNER_PRODUCT

    def search(q: np.ndarray) -> None:
        futures = [pool.submit(faiss.knn, q, part, K, ip) for part in slices[1:]]
        faiss.knn(q, slices[0], K, ip)
        for future in futures:
            future.result()

    return search


def one_search(index: VectorIndex, queries: np.ndarray) -> Callable[[int], float]:
    """i -> seconds of one raw search of ``queries[i % len(queries)]`` (interleaved floors)."""

    def search(i: int) -> float:
        return raw_search_times(index, queries[i % len(queries)], 1)[0]

    return search


def add_floor_route(app: FastAPI, service: Callable[[], BridgeService]) -> None:
    """``POST /_bench/floor`` {"index", "target", "queries": [[...]] or "queries_path": a
    .npy file, "total", optional "split"} -> {"seconds": [...]}: `raw_search_times` on the
    index of the running service (``service()``)."""

    async def floor(request: Request) -> dict[str, Any]:
        # async on purpose: runs on the event loop thread, like an inline lone search
        body = await request.json()
        index = index_for(service(), body["index"], body["target"])
        if "queries_path" in body:  # a run of many: too big for the search body limit
            queries = np.load(body["queries_path"])
        else:
            queries = np.asarray(body["queries"], dtype=np.float32)
        times = raw_search_times(index, queries, int(body["total"]), body.get("split"))
        return {"seconds": times}

    app.add_api_route(FLOOR_PATH, floor, methods=["POST"], include_in_schema=False)
    # first: the demo page is mounted at "/" and would answer 405 for any later POST route
    app.router.routes.insert(0, app.router.routes.pop())


class FreshProcessFloor:
    """Reference floor of earlier runs: raw FAISS (IndexFlatIP, one OpenMP thread, one query
    at a time) on its own copy of the vectors, in a fresh Python process. The verdicts use
    the service's own index instead (module docstring): copies of one 100k index scan up to
    1.7 ms apart on this machine."""

    def __init__(self, vectors: np.ndarray, queries: np.ndarray, workdir: Path, name: str):
        self.vectors, self.queries = workdir / f"{name}-vectors.npy", workdir / f"{name}-q.npy"
        np.save(self.vectors, np.ascontiguousarray(vectors, dtype=np.float32))
        np.save(self.queries, np.ascontiguousarray(queries, dtype=np.float32))

    def measure(self, total: int) -> dict[str, float]:
        command = [sys.executable, "-m", "bridge.bench.floor", str(self.vectors)]
        env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
        done = subprocess.run(
            [*command, str(self.queries), str(total)],
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
            env=env,
        )
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def fresh_floor_main(vectors_path: str, queries_path: str, total: int) -> int:
    """Time ``total`` raw FAISS searches on a fresh index and print their stats as JSON."""
    import faiss

    faiss.omp_set_num_threads(1)
    vectors, queries = np.load(vectors_path), np.load(queries_path)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    for q in queries[:5]:
        index.search(q[None, :], K)  # warm up
    latencies = []
    started = time.perf_counter()
    for i in range(total):
        t0 = time.perf_counter()
        index.search(queries[i % len(queries)][None, :], K)
        latencies.append(time.perf_counter() - t0)
    print(json.dumps(stats(latencies, time.perf_counter() - started)))
    return 0


if __name__ == "__main__":
    raise SystemExit(fresh_floor_main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
