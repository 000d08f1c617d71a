"""Locks that replicas share: re-entrant within a process, exclusive across processes.

`CrossProcessRLock` is a ``threading.RLock`` around a lock of another kind (an ``flock`` on a
file, a PostgreSQL advisory lock) that only the outermost holder takes and gives back, so a
thread may nest ``with`` blocks while other processes see one holder. Subclasses say how the
outer lock is taken and given back; whatever holds it dies with its process.
"""

from __future__ import annotations

import fcntl
import threading
from pathlib import Path
from typing import IO, Self


class CrossProcessRLock:
    """Re-entrant for the threads of this process; ``_take``/``_give_back`` the cross-process
    lock around the outermost acquisition (module docstring)."""

    def __init__(self) -> None:
        self._thread_lock = threading.RLock()
        self._depth = 0

    def _take(self) -> None:
        raise NotImplementedError

    def _give_back(self) -> None:
        raise NotImplementedError

    def acquire(self) -> None:
        self._thread_lock.acquire()
        try:
            if self._depth == 0:
                self._take()
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise

    def release(self) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                self._give_back()
        finally:
            self._thread_lock.release()

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ProcessRLock(CrossProcessRLock):
    """An exclusive ``flock`` on a file: the processes of one machine (or of a shared file
    system that supports locks). The kernel drops it when its holder dies."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._file: IO[str] | None = None

    def _take(self) -> None:
        handle = self._path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        self._file = handle

    def _give_back(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None
