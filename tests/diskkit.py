"""A real full disk for the fault tests: a small tmpfs mounted on a test's folder, and a filler
file that takes its free space, so that writes fail with the kernel's own ENOSPC.

Mounting needs root (CI runs `.ci/run` as root). Where it cannot mount, the tests skip
with the reason, unless BRIDGE_REQUIRE_TMPFS=1 (CI): then they fail. No stand-in is used:
RLIMIT_FSIZE raises EFBIG (and SIGXFSZ), not the ENOSPC the service must survive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRED = os.environ.get("BRIDGE_REQUIRE_TMPFS") == "1"
PAGE = 4096  # tmpfs allocates whole pages
FILLER = ".filler"


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"BRIDGE_REQUIRE_TMPFS=1 but {reason}")
    pytest.skip(reason)


@contextlib.contextmanager
def small_disk(mount_point: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` on `mount_point` (created) for the block; unmounted after
    (lazily, should a file still be open in it)."""
    if os.geteuid() != 0:
        _unavailable("mounting a small tmpfs for a real ENOSPC needs root")
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if mount is None or umount is None:
        _unavailable("no mount/umount command to mount a small tmpfs")
    assert mount is not None and umount is not None
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        _unavailable(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run([umount, "-l", str(mount_point)], capture_output=True, check=False)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(mount_point: Path, leave: int = 0) -> Path:
    """Take every free page of the file system with a filler file, then give back `leave`
    bytes (rounded up to whole pages). Returns the filler (delete it to free the disk)."""
    filler = mount_point / FILLER
    chunk = b"\0" * (64 * PAGE)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == PAGE:
                    break
                chunk = b"\0" * PAGE
        pages = -(-leave // PAGE)
        if pages:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - pages * PAGE))
    finally:
        os.close(fd)
    assert free_bytes(mount_point) == -(-leave // PAGE) * PAGE, free_bytes(mount_point)
    return filler


def wal_checkpoint(store: Path, mode: str) -> None:
    """Run `PRAGMA wal_checkpoint(<mode>)` on a SQLite store from a connection of its own.
    TRUNCATE empties the -wal file, so the next commit must grow it (it needs free pages);
    RESTART keeps the file, so the next commits overwrite its frames (they need none)."""
    with contextlib.closing(sqlite3.connect(store, timeout=10)) as conn:
        busy, _, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
    assert busy == 0, f"wal_checkpoint({mode}) could not finish"


def grow_wal(store: Path, size_bytes: int) -> None:
    """Leave the store's -wal file `size_bytes` long and restarted, so that later commits of
    up to about that size rewrite pages it already holds instead of taking free ones."""
    with contextlib.closing(sqlite3.connect(store, timeout=10, isolation_level=None)) as conn:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('test-wal-filler', randomblob(?))",
            (size_bytes,),
        )
        conn.execute("DELETE FROM meta WHERE key = 'test-wal-filler'")
    wal_checkpoint(store, "RESTART")
