"""Where the item store's tables live: SQLite (a file in the data directory, the default) or
PostgreSQL (``BRIDGE_DATABASE_URL``, for replicas on several machines).

The store's SQL (bridge/storage/items.py, registry.py, jobs.py) is written once, in the
subset both speak: ``?`` placeholders (translated to ``%s`` for psycopg), ``ON CONFLICT``,
``RETURNING``. A dialect supplies what differs: the schema's types, connections, and how a
transaction begins. Writers are serialised in both: SQLite has one writer by design
(``BEGIN IMMEDIATE``); PostgreSQL writers take one transaction-scoped advisory lock, so a
transaction sees the same rules (counters, the one-job lease) on either.

Failures a dialect names (``translate``): a full disk is StorageFullError (HTTP 507); a
SQLite file whose write lock another process held past the busy timeout is StoreBusyError
(HTTP 503 with Retry-After). A lost PostgreSQL server is StoreUnavailableError (503).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from bridge.errors import (
    BridgeError,
    InvalidInputError,
    StorageFullError,
    StoreBusyError,
    StoreUnavailableError,
)
from bridge.storage.locks import CrossProcessRLock

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS items (
    rowid {serial_key},
    id TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    metadata TEXT NOT NULL,
    encoder TEXT NOT NULL,
    dim INTEGER NOT NULL,
    embedding {blob} NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_modality ON items (modality, rowid);
CREATE TABLE IF NOT EXISTS modality_state (
    modality TEXT PRIMARY KEY,
    changes INTEGER NOT NULL,
    count INTEGER NOT NULL,
    last_rowid BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    {row_order}version TEXT PRIMARY KEY,
    checkpoint_dir TEXT NOT NULL,
    status TEXT NOT NULL,
    sha256 TEXT,
    metrics TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    {row_order}id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    progress {real} NOT NULL,
    message TEXT NOT NULL,
    params TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""
# One key for every writer's advisory lock (PostgreSQL): any constant, shared by replicas.
_WRITE_LOCK_KEY = 0x6D627269  # "mbri"
# The catalog's lock across replicas (bridge/service/catalog.py), a session advisory lock.
CATALOG_LOCK_KEY = 0x6D626361  # "mbca"
# Seconds a SQLite write waits for another process's write lock (SQLite's busy handler
# retries within it) before it fails with StoreBusyError.
DEFAULT_BUSY_TIMEOUT = 10.0


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...
    def close(self) -> None: ...


def is_broken(conn: Connection) -> bool:
    """A connection a server failure left unusable (the next use reconnects)."""
    return bool(getattr(conn, "broken", False))


class Dialect(Protocol):
    name: str
    integrity_errors: tuple[type[BaseException], ...]

    def describe(self) -> str: ...
    def connect(self) -> Connection: ...
    def create_schema(self, conn: Connection) -> None: ...
    def begin_write(self, conn: Connection) -> None: ...
    def begin_read(self, conn: Connection) -> None: ...
    def translate(self, exc: BaseException) -> BridgeError | None: ...


class SQLiteDialect:
    """One file in WAL mode with ``synchronous=FULL``: a committed transaction survives a
    process kill or a power loss. Processes on one machine share it; a network file system
    does not lock it reliably.

    ``busy_timeout``: seconds a write waits while another process holds the write lock
    (SQLite's busy handler retries with short sleeps), then StoreBusyError."""

    name = "sqlite"
    integrity_errors: tuple[type[BaseException], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: Path, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        if not busy_timeout > 0:
            raise InvalidInputError(f"busy_timeout must be > 0 seconds, got {busy_timeout!r}")
        self.path = Path(path)
        self.busy_timeout = float(busy_timeout)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def describe(self) -> str:
        return str(self.path)

    def connect(self) -> Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self.busy_timeout,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            raise InvalidInputError(f"cannot open the item store {self.path}: {exc}") from exc
        return conn

    def create_schema(self, conn: Connection) -> None:
        schema = _TABLES.format(
            serial_key="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB", real="REAL", row_order=""
        )
        conn.executescript(schema)  # type: ignore[attr-defined]

    def begin_write(self, conn: Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def begin_read(self, conn: Connection) -> None:
        conn.execute("BEGIN")

    def translate(self, exc: BaseException) -> BridgeError | None:
        """The engine's error for a SQLite failure that is not a bug: the disk is full
        (SQLITE_FULL, or the OS's ENOSPC while writing), or the write lock stayed taken past
        the busy timeout (SQLITE_BUSY / SQLITE_LOCKED); None for anything else."""
        if not isinstance(exc, sqlite3.OperationalError):
            return None
        code = exc.sqlite_errorcode & 0xFF  # the primary code of an extended one
        if code == sqlite3.SQLITE_FULL:
            return StorageFullError(
                f"the disk is full: the item store {self.path.name} could not write ({exc}); "
                "nothing of this request was stored (free space on the data directory's "
                "file system, then retry)"
            )
        if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return StoreBusyError(
                f"another process held the write lock of {self.path.name} for over "
                f"{self.busy_timeout:g} s ({exc}); nothing of this request was stored"
            )
        return None


class _PostgresConnection:
    """A psycopg connection that takes the store's ``?`` placeholders; a lost server is
    StoreUnavailableError (HTTP 503) and marks the connection broken."""

    def __init__(self, conn: Any, psycopg: Any, where: str) -> None:
        self.raw = conn
        self.broken = False
        self._operational = psycopg.OperationalError
        self._disk_full = psycopg.errors.DiskFull  # SQLSTATE 53100
        self._where = where

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return self.raw.execute(sql.replace("?", "%s"), params or None)
        except self._disk_full as exc:  # the server's disk: the connection is still good
            raise StorageFullError(
                f"the disk is full: the item store at {self._where} could not write ({exc})"
            ) from exc
        except self._operational as exc:
            self.broken = True
            raise StoreUnavailableError(f"the item store at {self._where}: {exc}") from exc

    def close(self) -> None:
        self.raw.close()


class PostgresDialect:
    """A PostgreSQL database (``postgresql://user:password@host:5432/name``), reached by every
    replica. Needs psycopg (the `postgres` extra)."""

    name = "postgres"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:  # the optional dependency
            raise InvalidInputError(
                "BRIDGE_DATABASE_URL needs psycopg: pip install 'modality-bridge[postgres]'"
            ) from exc
        self.url = url
        self._psycopg = psycopg
        self.integrity_errors: tuple[type[BaseException], ...] = (psycopg.errors.IntegrityError,)

    def describe(self) -> str:
        return re.sub(r"//[^@/]*@", "//***@", self.url)  # never the password

    def connect(self) -> Connection:
        try:
            conn = self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot reach the item store at {self.describe()}: {exc}"
            ) from exc
        return _PostgresConnection(conn, self._psycopg, self.describe())

    def create_schema(self, conn: Connection) -> None:
        schema = _TABLES.format(
            serial_key="BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            blob="BYTEA",
            real="DOUBLE PRECISION",
            # SQLite orders versions and jobs of one millisecond by its implicit rowid.
            row_order="rowid BIGINT GENERATED BY DEFAULT AS IDENTITY,\n    ",
        )
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_WRITE_LOCK_KEY,))
        for statement in schema.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("COMMIT")

    def begin_write(self, conn: Connection) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_WRITE_LOCK_KEY,))

    def begin_read(self, conn: Connection) -> None:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def translate(self, exc: BaseException) -> BridgeError | None:
        """None: _PostgresConnection raises the engine's errors itself."""
        return None


def dialect_for(location: Path | str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> Dialect:
    """PostgreSQL for a ``postgresql://`` (or ``postgres://``) URL, else a SQLite file (whose
    writes wait up to ``busy_timeout`` seconds for another process's write lock)."""
    if isinstance(location, str) and re.match(r"^postgres(ql)?://", location):
        return PostgresDialect(location)
    return SQLiteDialect(Path(location), busy_timeout)


class AdvisoryRLock(CrossProcessRLock):
    """A PostgreSQL session advisory lock, which replicas on every machine respect, taken on
    a connection of its own (the server drops the lock if that connection dies)."""

    def __init__(self, dialect: PostgresDialect, key: int) -> None:
        super().__init__()
        self._dialect = dialect
        self._key = key
        self._conn: Connection | None = None

    def _take(self) -> None:
        if self._conn is None:
            self._conn = self._dialect.connect()
        try:
            self._conn.execute("SELECT pg_advisory_lock(?)", (self._key,))
        except Exception:
            self._conn.close()  # a broken connection: the next acquire reconnects
            self._conn = None
            raise

    def _give_back(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute("SELECT pg_advisory_unlock(?)", (self._key,))
        except Exception:  # the connection is gone, and the lock with it
            self._conn.close()
            self._conn = None
