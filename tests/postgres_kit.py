"""A real PostgreSQL server for the store's tests (BRIDGE_DATABASE_URL): initdb and pg_ctl of
the machine's PostgreSQL (`.ci/run` installs Debian's), in a temporary folder, on a free
loopback port. Run as the `postgres` user when the tests run as root (PostgreSQL refuses
root). Without PostgreSQL or psycopg the tests skip, unless BRIDGE_REQUIRE_POSTGRES=1 (CI)."""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_env import free_port

REQUIRED = os.environ.get("BRIDGE_REQUIRE_POSTGRES") == "1"


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def require_postgres() -> None:
    """Skip (or fail under BRIDGE_REQUIRE_POSTGRES=1) without psycopg or PostgreSQL."""
    missing = []
    if importlib.util.find_spec("psycopg") is None:
        missing.append("psycopg (the postgres extra)")
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        missing.append("PostgreSQL's initdb and pg_ctl")
    if not missing:
        return
    reason = f"no {' or '.join(missing)}"
    if REQUIRED:
        pytest.fail(f"BRIDGE_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


class LocalPostgres:
    """One PostgreSQL server in a temporary folder; ``new_database()`` gives each test its
    own database on it."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        self.port = free_port()
        self._names = itertools.count()
        self._user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            account = pwd.getpwnam("postgres")
            os.chmod(self.base, 0o755)
            os.chown(self.base, account.pw_uid, account.pw_gid)
            self._user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._user, *argv], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed ({done.returncode}): {done.stderr or done.stdout}"
            )

    def start(self) -> None:
        """Create the cluster (first time) and start the server."""
        data = self.base / "data"
        if not data.exists():
            self._run(
                str(_binary("initdb")),
                "-D",
                str(data),
                "-U",
                "bridge",
                "--auth=trust",
                "-E",
                "UTF8",
            )
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.base / "log")
        self._run(str(_binary("pg_ctl")), "-D", str(data), "-o", options, "-l", log, "-w", "start")

    def halt(self) -> None:
        """Stop the server, keeping its databases (``start`` brings it back)."""
        data = str(self.base / "data")
        self._run(str(_binary("pg_ctl")), "-D", data, "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://bridge@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"store_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and delete everything."""
        try:
            if (self.base / "data" / "postmaster.pid").exists():
                self.halt()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """The session's PostgreSQL server (registered in tests/conftest.py)."""
    require_postgres()
    server = LocalPostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()
