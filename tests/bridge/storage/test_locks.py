"""The locks replicas share (bridge/storage/locks.py): re-entrant in a process, exclusive
across processes, on a file and on a real PostgreSQL server."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from postgres_kit import LocalPostgres

from bridge.storage.dialects import AdvisoryRLock, PostgresDialect
from bridge.storage.locks import ProcessRLock

TRY_FLOCK = "import fcntl, sys; fcntl.flock(open(sys.argv[1], 'a+'), fcntl.LOCK_EX | fcntl.LOCK_NB)"


def _other_process_can_lock(path: Path) -> bool:
    done = subprocess.run([sys.executable, "-c", TRY_FLOCK, str(path)], capture_output=True)
    return done.returncode == 0


def test_process_rlock_nests_in_a_process_and_excludes_another(tmp_path: Path) -> None:
    path = tmp_path / ".catalog.lock"
    lock = ProcessRLock(path)
    with lock:
        with lock:  # re-entrant: the same thread nests
            assert not _other_process_can_lock(path)
        assert not _other_process_can_lock(path)  # still held by the outer block
    assert _other_process_can_lock(path)


def test_advisory_rlock_excludes_another_connection(postgres_server: LocalPostgres) -> None:
    url = postgres_server.new_database()
    first = AdvisoryRLock(PostgresDialect(url), key=7)
    second = AdvisoryRLock(PostgresDialect(url), key=7)  # another replica's
    taken = threading.Event()

    def take_second() -> None:
        with second:
            taken.set()

    with first, first:
        thread = threading.Thread(target=take_second)
        thread.start()
        time.sleep(0.5)
        assert not taken.is_set()  # waits for the first holder
    thread.join(10)
    assert taken.is_set()  # given back by the outermost release
