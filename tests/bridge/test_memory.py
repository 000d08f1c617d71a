"""bridge/memory.py: the malloc arena cap and the heap trim, on this machine's glibc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bridge import memory


def test_the_cap_is_set_for_this_process_and_its_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(memory.ARENA_ENV, raising=False)
    if memory._glibc() is None:
        pytest.skip("not glibc: the cap is a no-op here")
    assert memory.limit_arenas(4) is True
    assert os.environ[memory.ARENA_ENV] == "4"
    child = subprocess.run(
        [sys.executable, "-c", f"import os; print(os.environ[{memory.ARENA_ENV!r}])"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == "4"


def test_the_operators_variable_and_zero_leave_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(memory.ARENA_ENV, "16")
    assert memory.limit_arenas(4) is False
    assert os.environ[memory.ARENA_ENV] == "16"
    monkeypatch.delenv(memory.ARENA_ENV)
    assert memory.limit_arenas(0) is False
    assert memory.ARENA_ENV not in os.environ


def test_a_trim_returns_freed_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 MB in many 64 KiB blocks (under mmap's threshold, so on the heap), freed but
    the last: without a trim the heap keeps the pages; after it, RSS falls."""
    if memory._glibc() is None:
        pytest.skip("not glibc")

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    blocks = [bytearray(64 * 1024) for _ in range(3200)]
    keep = blocks[-1]
    held = rss_mb()
    del blocks
    memory.release_free_memory()
    assert rss_mb() < held - 100
    assert len(keep) == 64 * 1024
