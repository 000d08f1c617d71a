"""Coalesce concurrent JSON searches on the event loop into one engine call per batch.

With one engine thread per request, 32 concurrent searches meant 32 threads taking turns on
the GIL with the event loop, and server CPU per request rose with concurrency instead of
falling (scripts/bench/server_cpu.py shows the split per thread). Here requests that arrive
while a batch runs wait on the event loop, and the next batch takes all of them into one
executor call (`BridgeService.search_each`), so at most one engine thread runs Python at a
time. A lone request is dispatched at once. Each query gets its own answer or error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

MAX_BATCH = 64

RunBatch = Callable[[list[Any]], list[Any]]  # queries -> responses or exceptions, in order


class SearchBatcher:
    def __init__(self, executor: Executor, max_batch: int = MAX_BATCH) -> None:
        self._executor = executor
        self._max_batch = max_batch
        self._pending: list[tuple[RunBatch, Any, asyncio.Future[Any]]] = []
        self._draining = False

    async def submit(self, run_batch: RunBatch, query: Any) -> Any:
        """Answer ``query`` with ``run_batch`` (batched with concurrent submits of the same
        ``run_batch``, compared with ==, as bound methods are); raises the query's own error.

        The first caller while nothing runs dispatches at once from its own coroutine (no
        extra task hop); once its answer is in, any queued batches go on in a task.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((run_batch, query, future))
        if not self._draining:
            self._draining = True
            try:
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

    async def _run_one_batch(self) -> None:
        run_batch = self._pending[0][0]
        batch = [p for p in self._pending if p[0] == run_batch][: self._max_batch]
        taken = {id(p) for p in batch}
        self._pending = [p for p in self._pending if id(p) not in taken]
        queries = [query for _, query, _ in batch]
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, run_batch, queries)
        except BaseException as exc:  # the whole call failed: every caller sees it
            results = [exc] * len(batch)
        for (_, _, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away (cancelled)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
