"""IndexRepair: after a backend failure, reconcile in the background until it works."""

from __future__ import annotations

import threading
import time

import pytest
from polling import wait_until

from bridge.errors import BackendUnavailableError
from bridge.service.repair import IndexRepair


def test_retries_until_the_backend_answers_then_clears() -> None:
    calls: list[float] = []

    def repair() -> None:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise BackendUnavailableError("Milvus search failed: connection refused")

    repairer = IndexRepair(repair, retry_seconds=0.05)
    assert not repairer.pending
    repairer.check()  # nothing owed: searches and changes go ahead
    try:
        repairer.request(BackendUnavailableError("first failure"))
        assert repairer.pending  # owed or running: searches and writes answer 503 meanwhile
        with pytest.raises(BackendUnavailableError, match="catching up"):
            repairer.check()
        wait_until(lambda: not repairer.pending, timeout=10)
        assert len(calls) == 3 and repairer.last_error is None
    finally:
        repairer.close()


def test_a_failure_during_a_repair_asks_for_another_round() -> None:
    """A change that misses an index while a repair runs is not lost with that repair."""
    started, release = threading.Event(), threading.Event()
    calls = 0

    def repair() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            release.wait(10)

    repairer = IndexRepair(repair, retry_seconds=0.05)
    try:
        repairer.request(BackendUnavailableError("down"))
        assert started.wait(10)
        assert repairer.pending  # still owed while the repair runs
        repairer.request(BackendUnavailableError("down again"))  # during the first repair
        release.set()
        wait_until(lambda: calls == 2 and not repairer.pending, timeout=10)
    finally:
        release.set()
        repairer.close()


def test_other_errors_are_retried_and_close_stops_the_thread() -> None:
    def repair() -> None:
        raise RuntimeError("disk trouble")

    repairer = IndexRepair(repair, retry_seconds=0.05)
    repairer.request(BackendUnavailableError("down"))
    wait_until(lambda: repairer.last_error == "disk trouble", timeout=10)
    assert repairer.pending
    repairer.close()
    assert not any(t.name == "index-repair" and t.is_alive() for t in threading.enumerate())
