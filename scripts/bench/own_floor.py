"""The service benchmark's FAISS floor, taken on the service's own index.

Issue 4 compares the service with "raw FAISS search of the same vectors in the same run".
The most faithful such floor is a raw search of the very index the service answers from, in
the process that serves it, at the same time as the service queries:

- `raw_search_times(index, queries, total)` times single-query searches straight on a
  VectorIndex's FAISS object (one OpenMP thread, FAISS's scan kernel: what
  `VectorIndex.search` ends in for one query), without the service's checks, locks,
  coalescer, hydration or HTTP. The facade cells call it on the in-process service's index.
- `python scripts/bench/own_floor.py` is `python -m app` (same settings, same code) plus one
  route, ``POST /_bench/floor``, that runs `raw_search_times` on the running service's index
  on the event loop thread (where a lone search runs too) and answers the timings. The HTTP
  cells start the server this way; the route exists only in this benchmark server.

Why not a copy of the vectors in another process: on the 2-core EPYC VMs, four copies of
one 100,000-vector index in one process scan at p50s up to 1.7 ms apart
(scripts/bench/scan_spread.py), close to the 2 ms target itself, and the machine's scan
speed drifts by 10-20% within minutes. One-client cells therefore interleave the floor with
the service: one raw search of the same vector right before each service query.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as `python -m app` sets it, before NumPy

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI, Request  # at module level: FastAPI resolves the route's hints here

if TYPE_CHECKING:
    from bridge.index.vectors import VectorIndex
    from bridge.service.facade import BridgeService

REPO = Path(__file__).resolve().parents[2]
FLOOR_PATH = "/_bench/floor"
K = 10


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
    return index


def raw_search_times(
    index: VectorIndex, queries: np.ndarray, total: int, split: bool | None = None
) -> list[float]:
    """Seconds per raw FAISS search for ``total`` searches, cycling through ``queries``.

    ``split``: scan each query in slices on several threads with FAISS's kernel (faiss.knn),
    on the same slices of the same storage as the service's split scan
    (bridge/index/split_scan.py), without its merge and id mapping; None: split exactly when the
    service would; False: one FAISS search on one thread (the throughput target's floor).
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


def add_floor_route(app: FastAPI) -> None:
    """``POST /_bench/floor`` {"index", "target", "queries": [[...]] or "queries_path": a
    .npy file, "total", optional "split"} -> {"seconds": [...]}: `raw_search_times` on the
    running service's index."""

    async def floor(request: Request) -> dict[str, Any]:
        # async on purpose: runs on the event loop thread, like an inline lone search
        body = await request.json()
        service = request.app.state.holder.require()
        index = index_for(service, body["index"], body["target"])
        if "queries_path" in body:  # a run of many: too big for the search body limit
            queries = np.load(body["queries_path"])
        else:
            queries = np.asarray(body["queries"], dtype=np.float32)
        times = raw_search_times(index, queries, int(body["total"]), body.get("split"))
        return {"seconds": times}

    app.add_api_route(FLOOR_PATH, floor, methods=["POST"], include_in_schema=False)
    # first: the demo page is mounted at "/" and would answer 405 for any later POST route
    app.router.routes.insert(0, app.router.routes.pop())


def serve_main() -> int:
    """`python -m app` with the floor route added to the app it builds."""
    sys.path.insert(0, str(REPO))
    import app.__main__ as entry
    import app.main

    create_app = app.main.create_app

    def create_app_with_floor(*args: Any, **kwargs: Any) -> FastAPI:
        application = create_app(*args, **kwargs)
        add_floor_route(application)
        return application

    app.main.create_app = create_app_with_floor  # entry.main imports it at call time
    return entry.main([])


if __name__ == "__main__":
    raise SystemExit(serve_main())
