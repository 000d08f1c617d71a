"""Catching the indexes up with the store after the vector backend failed.

The item store is the source of truth and commits first; the indexes follow (architecture.md
section 5). When the backend (a Milvus server) is unreachable after an add or a delete has
committed, the change stays acknowledged and `IndexRepair` reconciles every index with the
store in the background, retrying until the backend answers again. Until then searches fail
with BackendUnavailableError (503) rather than answer from indexes that miss the change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from bridge.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


class IndexRepair:
    """A background thread that runs `repair` (reconcile every index with the store) after a
    backend failure until it succeeds; `pending` says whether one is owed."""

    def __init__(self, repair: Callable[[], None], retry_seconds: float = RETRY_SECONDS) -> None:
        self._repair = repair
        self._retry_seconds = retry_seconds
        self._wanted = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._repairing = False
        self.last_error: str | None = None

    @property
    def pending(self) -> bool:
        """A repair is owed or running: the indexes may miss an acknowledged change."""
        return self._wanted.is_set() or self._repairing

    def check(self) -> None:
        """BackendUnavailableError while a repair is pending: the indexes may miss an
        acknowledged change, so searches and further changes wait (nothing is written)."""
        if self.pending:
            raise BackendUnavailableError(
                "the indexes are catching up with acknowledged changes after a vector backend "
                f"failure ({self.last_error})"
            )

    def request(self, error: BaseException) -> None:
        """An index missed a committed change because of `error`: repair in the background."""
        self.last_error = str(error)
        self._wanted.set()
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="index-repair", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wanted.wait(timeout=1.0)
            if not self._wanted.is_set():
                continue
            # Cleared first: a change that fails while this repair runs asks for another.
            self._repairing = True
            self._wanted.clear()
            try:
                self._repair()
            except Exception as exc:
                self._wanted.set()
                self._repairing = False
                self.last_error = str(exc)
                if isinstance(exc, BackendUnavailableError):
                    logger.warning("indexes still behind the store, retrying: %s", exc)
                else:
                    logger.exception("index repair failed; retrying")
                self._stop.wait(self._retry_seconds)
                continue
            self._repairing = False
            self.last_error = None
            logger.info("indexes caught up with the store")

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=30)
