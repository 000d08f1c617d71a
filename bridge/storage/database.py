"""The SQLite file of a data directory: schema, connections and transactions.

One SQLite file (``<data_dir>/store.sqlite``) in WAL mode with ``synchronous=FULL``, so a
committed transaction survives a process kill or a power loss. Tables: ``items`` and
``modality_state`` (bridge/storage/items.py), ``versions`` and the active pointer in ``meta``
(registry.py), ``jobs`` (jobs.py); ``meta`` also holds ``store_id`` (random, created with the
file: a recreated store never matches an old index's fingerprint) and ``schema_version``.

Concurrency: one writer connection guarded by a ``threading.Lock`` (``BEGIN IMMEDIATE`` ...
``COMMIT``); readers use one connection per thread (WAL readers never block the writer nor each
other), and multi-statement reads run inside one read transaction so they see one snapshot.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.errors import ConflictError, InvalidInputError, NotFoundError

SCHEMA_VERSION = 1


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS items (
    rowid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    metadata TEXT NOT NULL,
    encoder TEXT NOT NULL,
    dim INTEGER NOT NULL,
    embedding BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_by_modality ON items (modality, rowid);
CREATE TABLE IF NOT EXISTS modality_state (
    modality TEXT PRIMARY KEY,
    changes INTEGER NOT NULL,
    count INTEGER NOT NULL,
    last_rowid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    version TEXT PRIMARY KEY,
    checkpoint_dir TEXT NOT NULL,
    status TEXT NOT NULL,
    sha256 TEXT,
    metrics TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    progress REAL NOT NULL,
    message TEXT NOT NULL,
    params TEXT NOT NULL,
    result TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


def utc_now() -> str:
    """ISO 8601 UTC timestamp with milliseconds, e.g. ``2025-01-01T12:00:00.000+00:00``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def dump_json(value: Any, what: str) -> str:
    """Compact JSON with sorted keys; InvalidInputError naming `what` for NaN/Inf or a value
    JSON cannot hold."""
    try:
        text = json.dumps(value, allow_nan=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} must be JSON-serialisable without NaN/Inf ({exc})"
        ) from exc
    return text


class Database:
    """Connections and transactions of one store file (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._writer = self._connect()
        with self._write_lock:
            self._writer.executescript(_SCHEMA)
            with self._write_txn() as conn:
                row = conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('store_id', ?)",
                        (secrets.token_hex(8),),
                    )
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
        self.store_id: str = self._read_meta("store_id") or ""

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.DatabaseError as exc:
            raise InvalidInputError(f"cannot open the item store {self.path}: {exc}") from exc
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise ConflictError("the item store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def _write_txn(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction on the writer connection; caller holds ``_write_lock``."""
        conn = self._writer
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise ConflictError("the item store is closed")
        with self._write_lock, self._write_txn() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees the same snapshot."""
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    @contextmanager
    def _autocommit_reader(self) -> Iterator[sqlite3.Connection]:
        """This thread's reader, for a single statement outside an explicit transaction."""
        yield self._reader()

    def close(self) -> None:
        """Close every connection. Further calls raise ConflictError."""
        if self._closed:
            return
        self._closed = True
        with self._write_lock:
            self._writer.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    def _read_meta(self, key: str) -> str | None:
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- shared statements -------------------------------------------------------------------

    def _select_one(
        self, table: str, columns: str, key_column: str, key: str, missing: str
    ) -> tuple[Any, ...]:
        """`columns` of the row whose `key_column` is `key` (table and column names are the
        caller's constants, never user input); NotFoundError(`missing`) when there is none."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {columns} FROM {table} WHERE {key_column}=?", (key,)
            ).fetchone()
        if row is None:
            raise NotFoundError(missing)
        return tuple(row)

    def _update_row(
        self, table: str, key_column: str, key: str, values: dict[str, Any], missing: str
    ) -> None:
        """Set `values` (column -> value; table and column names are the caller's constants,
        never user input) and updated_at on the row whose `key_column` is `key`;
        NotFoundError(`missing`) when there is none."""
        values = {**values, "updated_at": utc_now()}
        assignments = ", ".join(f"{column}=?" for column in values)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE {table} SET {assignments} WHERE {key_column}=?", [*values.values(), key]
            )
            if cursor.rowcount == 0:
                raise NotFoundError(missing)
