"""The process's heap: fewer malloc arenas, and freed memory handed back to the system.

A server's RSS should follow what it holds. With glibc's defaults it does not:

- each thread that allocates may get its own arena (up to 8 per core), and freed chunks stay
  in the arena that served them. Under the soak's mix (uvicorn's loop, the offload pool, the
  batcher, the job thread), six minutes with glibc's default: 653 -> 681 MB; capped at 4
  arenas: 615 -> 627 MB, at the same throughput (docs/benchmarks.md, "Soak").
- a retrain frees its training tensors, memories and projections, but the heap keeps the
  pages (about 100 MB on the soak's 20,000 items) until ``malloc_trim`` returns them.

Both are glibc calls through ctypes; on another C library (musl, macOS) they do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
# A server's arena cap (BRIDGE_MALLOC_ARENAS' default): measured in docs/benchmarks.md (Soak).
DEFAULT_ARENAS = 4
ARENA_ENV = "MALLOC_ARENA_MAX"  # glibc reads it at start; child processes inherit it


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both exist only in glibc
    except (OSError, AttributeError, TypeError):
        return None
    return libc


def limit_arenas(arenas: int) -> bool:
    """Cap this process's malloc arenas at ``arenas`` and set MALLOC_ARENA_MAX for the
    processes it starts (uvicorn's workers). Call it before threads start allocating. 0, or
    MALLOC_ARENA_MAX already in the environment (the operator's choice wins), leaves the
    C library's default; True when the cap was set."""
    if arenas <= 0 or ARENA_ENV in os.environ:
        return False
    libc = _glibc()
    if libc is None or libc.mallopt(M_ARENA_MAX, arenas) != 1:
        return False
    os.environ[ARENA_ENV] = str(arenas)
    return True


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (after a retrain or an unload)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
