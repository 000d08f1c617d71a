"""JobRunner: one job at a time, its state in the real SQLite store."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from polling import wait_for_job

from bridge.errors import ConflictError, InvalidInputError
from bridge.service.jobs import JobContext, JobRunner
from bridge.storage.items import ItemStore
from bridge.types import JobRecord


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ItemStore]:
    store = ItemStore(tmp_path / "store.sqlite")
    yield store
    store.close()


def wait_done(runner: JobRunner, job: JobRecord) -> JobRecord:
    return wait_for_job(runner.get, job, timeout_s=10.0)


def test_job_reports_progress_and_result(store: ItemStore) -> None:
    runner = JobRunner(store)
    release = threading.Event()
    reached = threading.Event()

    def work(ctx: JobContext) -> dict[str, Any]:
        ctx.progress(0.5, "half way", force=True)
        reached.set()
        release.wait(5)
        return {"version": "v7", "metrics": {"r_at_1": 0.5}}

    job = runner.submit("retrain", {"version": "v7"}, work)
    assert job.status == "queued" and job.version == "v7" and job.kind == "retrain"
    assert reached.wait(5)
    running = runner.get(job.id)
    assert (running.status, running.progress, running.message) == ("running", 0.5, "half way")
    assert runner.busy()
    with pytest.raises(ConflictError, match="already running"):
        runner.submit("retrain", {}, work)
    release.set()
    done = wait_done(runner, job)
    assert (done.status, done.progress, done.metrics, done.error) == (
        "succeeded",
        1.0,
        {"r_at_1": 0.5},
        None,
    )
    assert not runner.busy()
    runner.close()


def test_failure_is_recorded_and_cleanup_runs(store: ItemStore) -> None:
    runner = JobRunner(store)
    cleaned: list[BaseException] = []

    def work(ctx: JobContext) -> dict[str, Any]:
        raise InvalidInputError("image memory: expected dimension 16, got 19")

    job = runner.submit("retrain", {"version": "v2"}, work, on_failure=cleaned.append)
    done = wait_done(runner, job)
    assert done.status == "failed"
    assert done.error == "image memory: expected dimension 16, got 19"
    assert len(cleaned) == 1 and isinstance(cleaned[0], InvalidInputError)

    def crash(ctx: JobContext) -> dict[str, Any]:
        return {"x": 1 / 0}

    done = wait_done(runner, runner.submit("retrain", {}, crash))
    assert done.status == "failed" and done.error == "ZeroDivisionError: division by zero"
    runner.close()


def test_close_cancels_at_the_next_progress_report(store: ItemStore) -> None:
    runner = JobRunner(store)
    started = threading.Event()

    def work(ctx: JobContext) -> dict[str, Any]:
        started.set()
        while True:
            ctx.progress(0.1, "looping")
            time.sleep(0.01)

    job = runner.submit("retrain", {}, work)
    assert started.wait(5)
    runner.close(timeout_s=5)
    assert not runner.busy()
    done = runner.get(job.id)
    assert done.status == "failed" and "shutting down" in (done.error or "")
    with pytest.raises(ConflictError, match="shutting down"):
        runner.submit("retrain", {}, work)


def test_interrupted_jobs_fail_on_restart(tmp_path: Path) -> None:
    store = ItemStore(tmp_path / "s.sqlite")
    job = store.create_job("retrain", {"version": "v2"})
    store.update_job(job["id"], status="running", progress=0.3)
    store.close()
    store = ItemStore(tmp_path / "s.sqlite")
    assert store.fail_interrupted_jobs() == 1
    record = JobRunner(store).get(job["id"])
    assert record.status == "failed" and "interrupted" in (record.error or "")
    store.close()
