"""Background jobs: a runner that runs at most one job at a time, in a daemon thread.

Policy: one job at a time. Starting a job while another is queued or running raises
ConflictError (HTTP 409) instead of queueing: a retrain re-projects every stored item and
builds new indexes, so two at once only compete for the same cores, and a client that wants a
second one can poll the first job and retry. Job records live in the item store, so their
status survives a restart; a job a crash interrupted is marked failed on the next start
(ItemStore.fail_interrupted_jobs). What a retrain job does: bridge/service/retrain.py.

The rule holds across replicas sharing a store: the store refuses a new job while another
one's row is fresh, and the runner touches its job's row every JOB_HEARTBEAT_SECONDS so that
a job whose process died is told apart from a slow one (bridge/storage/jobs.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.errors import BridgeError, ConflictError
from bridge.storage.jobs import JOB_HEARTBEAT_SECONDS
from bridge.telemetry import JOBS, JOBS_RUNNING
from bridge.types import JobRecord

logger = logging.getLogger(__name__)


class JobCancelledError(BridgeError):
    """Raised inside a job when the service is closing."""


class JobStore(Protocol):
    def create_job(self, kind: str, params: dict[str, Any]) -> dict[str, Any]: ...
    def update_job(self, job_id: str, **fields: Any) -> None: ...
    def get_job(self, job_id: str) -> dict[str, Any]: ...
    def touch_job(self, job_id: str) -> None: ...


def job_record(row: dict[str, Any]) -> JobRecord:
    """A store job row -> JobRecord. The version is in params; metrics in result."""
    result = row.get("result") or {}
    params = row.get("params") or {}
    return JobRecord(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        progress=float(row["progress"]),
        message=row["message"],
        version=result.get("version", params.get("version")),
        metrics=dict(result.get("metrics") or {}),
        error=row.get("error"),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


@dataclass
class JobContext:
    """Handed to a running job: report progress, see whether the service is closing."""

    job_id: str
    store: JobStore
    cancelled: threading.Event
    min_interval_s: float = 0.25
    _last_write: float = 0.0

    def progress(self, fraction: float, message: str, force: bool = False) -> None:
        """Record progress (0..1) and a message; raises JobCancelledError when closing.

        Writes are throttled to one per `min_interval_s` (a training loop may call this
        every epoch), except with `force`.
        """
        if self.cancelled.is_set():
            raise JobCancelledError("the service is shutting down; job cancelled")
        now = time.monotonic()
        if force or now - self._last_write >= self.min_interval_s:
            self._last_write = now
            fraction = min(1.0, max(0.0, float(fraction)))
            self.store.update_job(self.job_id, status="running", progress=fraction, message=message)


JobWork = Callable[[JobContext], dict[str, Any]]


class JobRunner:
    """Runs at most one background job at a time in a daemon thread (module docstring)."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._cancelled = threading.Event()

    def busy(self) -> bool:
        with self._lock:
            return self._thread is not None and self._thread.is_alive()

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        work: JobWork,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> JobRecord:
        """Create the job record and start `work` in a thread; ConflictError when busy.

        `work` returns the job result ({"version": ..., "metrics": ...}); an exception marks
        the job failed with its message, after `on_failure` had a chance to clean up.
        """
        with self._lock:
            self._check_free()
            row = self._store.create_job(kind, params)
            self._start(row["id"], kind, work, on_failure)
        return job_record(row)

    def resume(self, job_id: str, kind: str, work: JobWork) -> None:
        """Run `work` as the existing job `job_id`, which this replica has taken over from
        one that stopped (ItemStore.claim_stale_job); ConflictError when busy."""
        with self._lock:
            self._check_free()
            self._start(job_id, kind, work, None)

    def _check_free(self) -> None:
        if self._cancelled.is_set():
            raise ConflictError("the service is shutting down; no new jobs")
        if self._thread is not None and self._thread.is_alive():
            raise ConflictError(
                "a job is already running (one at a time); poll it and retry when it ends"
            )

    def _start(
        self,
        job_id: str,
        kind: str,
        work: JobWork,
        on_failure: Callable[[BaseException], None] | None,
    ) -> None:
        ctx = JobContext(job_id, self._store, self._cancelled)
        self._thread = threading.Thread(
            target=self._run,
            args=(kind, ctx, work, on_failure),
            name=f"job-{kind}-{job_id[:8]}",
            daemon=True,
        )
        self._thread.start()

    def _run(
        self,
        kind: str,
        ctx: JobContext,
        work: JobWork,
        on_failure: Callable[[BaseException], None] | None,
    ) -> None:
        JOBS_RUNNING.inc()
        done = threading.Event()
        heartbeat = threading.Thread(
            target=self._heartbeat, args=(ctx.job_id, done), name="job-heartbeat", daemon=True
        )
        heartbeat.start()
        try:
            self._store.update_job(ctx.job_id, status="running", message="started")
            result = work(ctx)
        except BaseException as exc:  # the thread must record every failure
            logger.exception("job %s (%s) failed", ctx.job_id, kind)
            message = str(exc) or type(exc).__name__
            if not isinstance(exc, BridgeError):
                message = f"{type(exc).__name__}: {message}"
            if on_failure is not None:
                try:
                    on_failure(exc)
                except Exception:  # cleanup must not hide the original failure
                    logger.exception("cleanup after job %s failed", ctx.job_id)
            self._finish(ctx.job_id, kind, status="failed", message="failed", error=message)
        else:
            self._finish(
                ctx.job_id, kind, status="succeeded", message="done", progress=1.0, result=result
            )
        finally:
            done.set()
            JOBS_RUNNING.dec()

    def _heartbeat(self, job_id: str, done: threading.Event) -> None:
        while not done.wait(JOB_HEARTBEAT_SECONDS):
            try:
                self._store.touch_job(job_id)
            except Exception:  # the store closing under a finishing job; the next beat retries
                logger.debug("heartbeat of job %s failed", job_id, exc_info=True)

    def _finish(self, job_id: str, kind: str, **fields: Any) -> None:
        JOBS.labels(kind=kind, status=fields["status"]).inc()
        try:
            self._store.update_job(job_id, **fields)
        except Exception:  # e.g. the store closed under us during shutdown
            logger.exception("could not record the end of job %s", job_id)

    def get(self, job_id: str) -> JobRecord:
        return job_record(self._store.get_job(job_id))

    def close(self, timeout_s: float = 30.0) -> None:
        """Ask a running job to stop (at its next progress report) and wait for it."""
        with self._lock:
            self._cancelled.set()
            thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout_s)
            if thread.is_alive():
                logger.warning("job thread %s still running after %.0f s", thread.name, timeout_s)
