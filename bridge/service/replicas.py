"""Replicas: processes that serve one data directory together, their vectors on a Milvus server.

What they share, and where (docs/architecture.md, "Replicas"):
- items, versions, the active pointer and jobs: the store (bridge/storage/);
- blobs, checkpoints and index manifests: the data directory (on a shared volume);
- vectors: the Milvus server's collections.

No replica keeps state another needs; each one keeps in step with what the others changed
through `ReplicaFollower`, a thread that every FOLLOW_INTERVAL_SECONDS loads indexes another
replica built (their manifests changed), serves the version the store names active, and
takes over (or fails) a job whose replica stopped beating. So a write through one replica
is searchable through another as soon as Milvus has it, and an activation reaches every
replica within an interval plus the time to load the version.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

FOLLOW_INTERVAL_SECONDS = 0.5
# Taking over the jobs of dead replicas is a store write: every few intervals is soon enough
# against a lease of JOB_LEASE_SECONDS.
JOB_CHECK_EVERY = 10


class ReplicaFollower:
    """Calls ``follow(check_jobs)`` every ``interval`` seconds in a daemon thread (module
    docstring) until ``close``; ``check_jobs`` is true every JOB_CHECK_EVERY-th call. A
    failing call is logged (once per kind of failure in a row) and retried next time."""

    def __init__(
        self, follow: Callable[[bool], None], interval: float = FOLLOW_INTERVAL_SECONDS
    ) -> None:
        self._follow = follow
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self.last_ok: float | None = None  # monotonic time of the last complete pass

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="replica-follower", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        calls = 0
        while not self._stop.wait(self._interval):
            calls += 1
            try:
                self._follow(calls % JOB_CHECK_EVERY == 0)
            except Exception as exc:  # the backend or the store away: next interval retries
                error = f"{type(exc).__name__}: {exc}"
                if error != self._last_error:
                    logger.warning("could not follow the other replicas (will retry): %s", error)
                self._last_error = error
            else:
                self._last_error = None
                self.last_ok = time.monotonic()

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
