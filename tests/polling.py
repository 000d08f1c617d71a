"""Waiting for a background job to end (tests that drive the engine's job runner), or for
any condition to hold."""

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


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll `condition` until it holds; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        time.sleep(0.01)
