"""Blocking engine calls from async routes, on the app's own thread pool.

`anyio.to_thread` (what `run_in_threadpool` uses) takes a capacity limiter, cancel scopes and
context lookups on every call; on the search path that was a measurable share of the event
loop's time per request. Searches go through `offload` instead: one `run_in_executor` on a
plain ThreadPoolExecutor that the lifespan creates and shuts down. Its size bounds how many
engine calls run at once; concurrent searches inside it share FAISS calls
(bridge/index/coalesce.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request

T = TypeVar("T")

SEARCH_THREADS = 32


def make_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=SEARCH_THREADS, thread_name_prefix="engine")


async def offload(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` on the app's executor (context variables carried over)."""
    executor: ThreadPoolExecutor = request.app.state.executor
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(executor, call)
