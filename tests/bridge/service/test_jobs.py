"""JobRunner (one job at a time, state in the real SQLite store) and retrain validation."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import ConflictError, InvalidInputError, NotFoundError
from bridge.model.config import ProjectorConfig
from bridge.service.jobs import (
    JobContext,
    JobRunner,
    holdout_split,
    plan_retrain,
    resolve_data_path,
    split_overrides,
)
from bridge.storage.items import ItemStore
from bridge.types import JobRecord, RetrainRequest


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ItemStore]:
    store = ItemStore(tmp_path / "store.sqlite")
    yield store
    store.close()


def wait_done(runner: JobRunner, job: JobRecord, timeout_s: float = 10.0) -> JobRecord:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = runner.get(job.id)
        if current.status in ("succeeded", "failed"):
            return current
        time.sleep(0.01)
    raise AssertionError("job did not finish")


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


# -- path and request validation ----------------------------------------------------------


def test_resolve_data_path(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "c.txt").write_text("a\nb\n")
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", data / "link.txt")
    assert resolve_data_path(data, "sub/c.txt", "captions") == (data / "sub" / "c.txt").resolve()
    assert resolve_data_path(data, "sub/../sub/c.txt", "captions").name == "c.txt"
    for bad, match in (
        ("../secret.txt", "outside"),
        ("link.txt", "outside"),
        (str(tmp_path / "secret.txt"), "absolute"),
        ("", "relative"),
        ("a\x00b", "NUL"),
    ):
        with pytest.raises(InvalidInputError, match=match):
            resolve_data_path(data, bad, "captions")
    with pytest.raises(NotFoundError):
        resolve_data_path(data, "sub/none.txt", "captions")
    with pytest.raises(NotFoundError):
        resolve_data_path(data, "sub", "captions")  # a folder is not a file
    with pytest.raises(InvalidInputError, match="not a usable path"):
        resolve_data_path(data, "a" * 300, "captions")  # longer than a file name may be


def test_resolve_data_path_refuses_the_services_own_files(tmp_path: Path) -> None:
    """Reading store.sqlite as a captions file dropped the process's SQLite locks (a later
    outside reader then deleted the WAL, and acknowledged items with it)."""
    data = tmp_path / "data"
    for folder in ("blobs/ab", "native", "versions/v1", "uploads/u1", "corpus"):
        (data / folder).mkdir(parents=True)
    for name in (
        "store.sqlite",
        "store.sqlite-wal",
        "blobs/ab/key",
        "native/x.faiss",
        "versions/v1/report.json",
        "uploads/u1/captions.txt",
        "corpus/c.txt",
    ):
        (data / name).write_text("a\nb\n")
    os.symlink(data / "store.sqlite", data / "corpus" / "link.txt")
    for own in (
        "store.sqlite",
        "./store.sqlite-wal",
        "blobs/ab/key",
        "native/x.faiss",
        "versions/v1/report.json",
        "corpus/link.txt",
        "corpus/../store.sqlite",
    ):
        with pytest.raises(InvalidInputError, match="service's own storage"):
            resolve_data_path(data, own, "captions")
    # retrain uploads are saved under uploads/ and passed on by path; corpus folders are fine
    assert resolve_data_path(data, "uploads/u1/captions.txt", "captions").name == "captions.txt"
    assert resolve_data_path(data, "corpus/c.txt", "captions").name == "c.txt"


def test_plan_retrain_merges_captions_and_splits_overrides(tmp_path: Path) -> None:
    (tmp_path / "caps.txt").write_text("one\n\n two \nthree\n")
    base = ProjectorConfig(clip_dim=16, clap_dim=16, hidden_dim=32, shared_dim=8)
    plan = plan_retrain(
        RetrainRequest(
            captions=["zero", "  "],
            captions_path="caps.txt",
            train_overrides={"epochs": 3, "loss": "cwcl", "hidden_dim": 64},
            activate=True,
        ),
        tmp_path,
        "v4",
        base,
        "cpu",
    )
    assert plan.captions == ["zero", "one", "two", "three"]
    assert (plan.train_config.epochs, plan.train_config.loss) == (3, "cwcl")
    assert plan.train_config.device == "cpu" and plan.train_config.progress is False
    assert plan.projector == ProjectorConfig(clip_dim=16, clap_dim=16, hidden_dim=64, shared_dim=8)
    assert plan.params["version"] == "v4" and plan.params["captions"] == 4 and plan.activate


def test_split_overrides_rejects_bad_values() -> None:
    with pytest.raises(InvalidInputError, match="unknown"):
        split_overrides({"lr": 0.1, "nope": 1}, None, "cpu")
    with pytest.raises(InvalidInputError, match="lr"):
        split_overrides({"lr": -1.0}, None, "cpu")
    with pytest.raises(InvalidInputError, match="shared_dim"):
        split_overrides({"shared_dim": 0}, None, "cpu")
    config, projector = split_overrides({}, None, "cpu")
    assert projector is None and config.epochs == 30


def test_holdout_split() -> None:
    train, held = holdout_split(100, seed=0)
    assert len(held) == 10 and len(train) == 90 and not set(train) & set(held)
    assert sorted([*train, *held]) == list(range(100))
    small_train, small_held = holdout_split(10, seed=0)
    assert sorted(small_train) == sorted(small_held) == list(range(10))
