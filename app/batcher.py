"""Coalesce concurrent JSON searches on the event loop into one engine call per batch.

With one engine thread per request, 32 concurrent searches meant 32 threads taking turns on
the GIL with the event loop, and server CPU per request rose with concurrency instead of
falling (`mbridge bench server-cpu` shows the split per thread). Here requests that arrive
while a batch runs wait on the event loop, and the next batch takes all of them into one
executor call (`BridgeService.search_each`), so at most one engine thread runs Python at a
time. A lone request is dispatched at once. Each query gets its own answer or error.

Lone cheap queries run inline. When traffic is one request at a time, the two thread hops
(submit to the executor, wake the loop with the answer) were about 0.5 ms of a 10k vector
search's latency (`mbridge bench server-cpu`, docs/benchmarks.md). So a query the
caller marks cheap (`BridgeService.is_quick`: a vector or stored item, so no encoding, and no
exact scan over 200,000 vectors) runs on the event loop itself when it is the only search in
flight and the last few searches were alone too. Under concurrent load batches hold several
queries and everything goes to the executor, so the loop stays free to parse requests; a
burst that meets an inline search waits for that one search (it is parsed afterwards in one
loop iteration, and one `sleep(0)` before deciding lets it join a single batch).
BRIDGE_INLINE_SEARCHES=false turns this off; BATCHES counts where batches ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, NamedTuple

from prometheus_client import Counter

from bridge.telemetry import child

MAX_BATCH = 64
# Inline only after this many searches in a row that each arrived with no other search in
# flight: under 32 clients requests trickle in between big batches, and running those lone
# ones inline (330 of ~470 batches in one run, when only the batch size was checked) cost
# 6-10% of the throughput.
LONE_SUBMITS_BEFORE_INLINE = 3

BATCHES = Counter(
    "bridge_search_batches_total",
    "Engine calls for batched JSON searches, by where they ran (event_loop = inline)",
    ["where"],
)
BATCHED_QUERIES = Counter(
    "bridge_search_batched_queries_total", "JSON search queries answered in batches", ["where"]
)

for _where in ("event_loop", "executor"):  # both series exist from the start, at 0
    child(BATCHES, _where)
    child(BATCHED_QUERIES, _where)

RunBatch = Callable[[list[Any]], list[Any]]  # queries -> responses or exceptions, in order


class _Pending(NamedTuple):
    run_batch: RunBatch
    query: Any
    future: asyncio.Future[Any]
    cheap: bool


class SearchBatcher:
    def __init__(
        self, executor: Executor, max_batch: int = MAX_BATCH, inline_lone: bool = True
    ) -> None:
        self._executor = executor
        self._max_batch = max_batch
        self._inline_lone = inline_lone
        self._pending: list[_Pending] = []
        self._draining = False
        self._in_flight = 0  # submits not yet answered
        self._lone_submits = 0  # submits in a row that found no other search in flight

    async def submit(self, run_batch: RunBatch, query: Any, cheap: bool = False) -> Any:
        """Answer ``query`` with ``run_batch`` (batched with concurrent submits of the same
        ``run_batch``, compared with ==, as bound methods are); raises the query's own error.
        ``cheap``: the query needs no encoding, so it may run inline (module docstring).

        The first caller while nothing runs dispatches at once from its own coroutine (no
        extra task hop); once its answer is in, any queued batches go on in a task.
        """
        self._in_flight += 1
        self._lone_submits = self._lone_submits + 1 if self._in_flight == 1 else 0
        try:
            return await self._submit(run_batch, query, cheap)
        finally:
            self._in_flight -= 1

    async def _submit(self, run_batch: RunBatch, query: Any, cheap: bool) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(_Pending(run_batch, query, future, cheap))
        if not self._draining:
            self._draining = True
            try:
                if self._may_inline(self._pending):
                    await asyncio.sleep(0)  # let requests parsed in this loop iteration join
                while self._pending and not future.done():
                    await self._run_one_batch()
            finally:
                if self._pending:
                    loop.create_task(self._drain())
                else:
                    self._draining = False
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                await self._run_one_batch()
        finally:
            self._draining = False

    def _may_inline(self, batch: list[_Pending]) -> bool:
        """A lone cheap query, the only one in flight, after lone searches (module docstring)."""
        return (
            self._inline_lone
            and self._in_flight == 1
            and self._lone_submits >= LONE_SUBMITS_BEFORE_INLINE
            and len(batch) == 1
            and batch[0].cheap
        )

    async def _run_one_batch(self) -> None:
        run_batch = self._pending[0].run_batch
        batch = [p for p in self._pending if p.run_batch == run_batch][: self._max_batch]
        taken = {id(p) for p in batch}
        self._pending = [p for p in self._pending if id(p) not in taken]
        queries = [p.query for p in batch]
        inline = self._may_inline(batch)
        where = "event_loop" if inline else "executor"
        child(BATCHES, where).inc()
        child(BATCHED_QUERIES, where).inc(len(batch))
        try:
            if inline:
                results = run_batch(queries)
            else:
                loop = asyncio.get_running_loop()
                results = await loop.run_in_executor(self._executor, run_batch, queries)
        except BaseException as exc:  # the whole call failed: every caller sees it
            results = [exc] * len(batch)
        for pending, result in zip(batch, results, strict=True):
            future = pending.future
            if future.done():  # the caller went away (cancelled)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
