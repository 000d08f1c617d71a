"""Waiting for a background job to end, for tests that drive the engine's job runner."""

from __future__ import annotations

import time
from collections.abc import Callable

from bridge.types import JobRecord


def wait_for_job(
    get: Callable[[str], JobRecord], job: JobRecord, timeout_s: float = 60.0
) -> JobRecord:
    """Poll `get(job.id)` until the job succeeded or failed; AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = get(job.id)
        if current.status in ("succeeded", "failed"):
            return current
        time.sleep(0.01)
    raise AssertionError(f"job {job.id} did not finish in {timeout_s} s")
