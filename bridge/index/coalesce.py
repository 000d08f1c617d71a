"""Group commit for index searches: queries from concurrent threads run as one FAISS batch.

One exact search of a single query reads the whole index (a matrix-vector product, bound by
memory bandwidth); a batch of B queries reads it once for all B (a matrix product). Under
concurrent load, batching is what lets throughput grow with clients instead of staying at
one-query speed.

No timer and no extra thread: the first caller to arrive while nothing runs becomes the
leader and searches at once with whatever is queued (so a lone client pays nothing extra).
Callers that arrive while a batch runs queue up; when the batch ends, the leader hands the
lead to the oldest queued caller, which searches everything queued by then in one call.
Each leader runs exactly one batch, so no caller waits behind more than one batch before its
own.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SearchFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def weak_search(method: SearchFn) -> SearchFn:
    """An index's bound search method, holding its index weakly. An index that owns a
    coalescer of its own bound method is a reference cycle: dropped, its vectors (the size
    of the whole index) waited for the cyclic garbage collector instead of going at once."""
    ref = weakref.WeakMethod(method)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        bound = ref()
        if bound is None:  # only reachable through a coalescer that outlived its index
            raise RuntimeError("the index of this search was dropped")
        return bound(queries, k)

    return search


@dataclass(eq=False)
class _Request:
    queries: np.ndarray  # (Q, D)
    k: int
    done: threading.Event | None = None  # only callers that wait get one (leaders never do)
    lead: bool = False  # woken to lead the next batch rather than with a result
    result: tuple[np.ndarray, np.ndarray] | None = None
    error: BaseException | None = None


class SearchCoalescer:
    """Runs ``search_fn(queries, k)`` for concurrent callers in shared batches."""

    def __init__(self, search_fn: SearchFn, max_batch_rows: int = 256) -> None:
        self._search_fn = search_fn
        self._max_batch_rows = max_batch_rows
        self._lock = threading.Lock()
        self._queue: list[_Request] = []
        self._busy = False  # a leader is running a batch
        self.batches = 0  # batches run, and queries answered: for tests and metrics
        self.queries = 0

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) scores and ids for ``queries`` (Q, D), as ``search_fn`` would return."""
        request = _Request(queries, k)
        with self._lock:
            leader = not self._busy
            if not leader:
                request.done = threading.Event()
            self._queue.append(request)
            self._busy = True
        if not leader:
            assert request.done is not None
            request.done.wait()
            leader = request.lead  # handed the lead: our query is in the batch we now run
        if leader:
            self._run_one_batch()
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _take_batch(self) -> list[_Request]:
        """Oldest queued requests up to max_batch_rows query rows (at least one request)."""
        rows, taken = 0, 0
        for request in self._queue:
            if taken and rows + len(request.queries) > self._max_batch_rows:
                break
            rows += len(request.queries)
            taken += 1
        batch, self._queue = self._queue[:taken], self._queue[taken:]
        return batch

    def _run_one_batch(self) -> None:
        with self._lock:
            batch = self._take_batch()
        try:
            self._answer(batch)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    _wake(successor)
                else:
                    self._busy = False

    def _answer(self, batch: list[_Request]) -> None:
        try:
            queries = (
                batch[0].queries if len(batch) == 1 else np.concatenate([r.queries for r in batch])
            )
            k = max(r.k for r in batch)
            scores, ids = self._search_fn(queries, k)
        except BaseException as exc:  # every caller in the batch sees the failure
            for request in batch:
                request.error = exc
                _wake(request)
            return
        start = 0
        for request in batch:
            stop = start + len(request.queries)
            request.result = (scores[start:stop, : request.k], ids[start:stop, : request.k])
            start = stop
            _wake(request)
        self.batches += 1
        self.queries += len(batch)


def _wake(request: _Request) -> None:
    if request.done is not None:
        request.done.set()
