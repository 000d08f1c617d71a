"""The item store's database: schema, connections and transactions.

By default one SQLite file (``<data_dir>/store.sqlite``) in WAL mode with
``synchronous=FULL``, so a committed transaction survives a process kill or a power loss; or a
PostgreSQL database (``BRIDGE_DATABASE_URL``) that replicas on several machines share
(bridge/storage/dialects.py holds what differs). Tables: ``items`` and
``modality_state`` (bridge/storage/items.py), ``versions`` and the active pointer in ``meta``
(registry.py), ``jobs`` (jobs.py); ``meta`` also holds ``store_id`` (random, created with the
file: a recreated store never matches an old index's fingerprint) and ``schema_version``.

Concurrency: one writer connection guarded by a ``threading.Lock``, and one writing
transaction at a time across processes (SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's advisory
lock); readers use one connection per thread (they never block the writer nor each other), and
multi-statement reads run inside one read transaction so they see one snapshot.

Failures: a write that finds the disk full (StorageFullError) or another process holding the
SQLite write lock past ``busy_timeout`` (StoreBusyError) is rolled back whole; reads go on.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridge.errors import ConflictError, InvalidInputError, NotFoundError
from bridge.storage.dialects import (
    CATALOG_LOCK_KEY,
    DEFAULT_BUSY_TIMEOUT,
    AdvisoryRLock,
    Connection,
    PostgresDialect,
    dialect_for,
    is_broken,
)

SCHEMA_VERSION = 1


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


class _ThreadReader:
    """One thread's reader connection, held in the thread's ``threading.local``. When the
    thread ends, its locals go and the connection is closed: server thread pools replace
    idle threads (anyio's after 10 s), and each new thread's connection used to stay open,
    with its page cache, for the life of the process."""

    def __init__(self, conn: Connection, forget: Callable[[Connection], None]) -> None:
        self.conn = conn
        weakref.finalize(self, forget, conn)


class Database:
    """Connections and transactions of one store file (module docstring)."""

    def __init__(self, location: Path | str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        """``location``: a SQLite file, or a ``postgresql://`` URL. ``busy_timeout``: seconds a
        SQLite write waits for another process's write lock before StoreBusyError."""
        self.dialect = dialect_for(location, busy_timeout)
        self.location = self.dialect.describe()  # for messages: never a password
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._writer = self.dialect.connect()
        with self._write_lock:
            self.dialect.create_schema(self._writer)
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

    def cluster_lock(self) -> AdvisoryRLock | None:
        """A lock replicas on every machine share, for changing the indexes (the catalog's),
        when the store is a server that can hold one (PostgreSQL); None for a SQLite file,
        whose replicas share a machine and lock a file beside it instead."""
        if isinstance(self.dialect, PostgresDialect):
            return AdvisoryRLock(self.dialect, CATALOG_LOCK_KEY)
        return None

    def _reader(self) -> Connection:
        if self._closed:
            raise ConflictError("the item store is closed")
        holder: _ThreadReader | None = getattr(self._local, "reader", None)
        if holder is not None and is_broken(holder.conn):  # the server went away and came back
            self._forget_reader(holder.conn)
            holder = None
        if holder is None:
            conn = self.dialect.connect()
            self._local.reader = _ThreadReader(conn, self._forget_reader)
            with self._readers_lock:
                self._readers.append(conn)
            return conn
        return holder.conn

    def _forget_reader(self, conn: Connection) -> None:
        with self._readers_lock:
            if conn in self._readers:
                self._readers.remove(conn)
        with contextlib.suppress(Exception):  # already broken
            conn.close()

    @contextmanager
    def _write_txn(self) -> Iterator[Connection]:
        """One writing transaction on the writer connection; caller holds ``_write_lock``."""
        if is_broken(self._writer):  # the server went away and came back
            self._writer.close()
            self._writer = self.dialect.connect()
        conn = self._writer
        try:
            self.dialect.begin_write(conn)
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # A lost server has dropped the transaction itself, and SQLite may have
                # rolled back on a full disk; a failed COMMIT (busy, full) leaves it open.
                if not is_broken(conn) and getattr(conn, "in_transaction", True):
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            translated = self.dialect.translate(exc)
            if translated is None:
                raise
            raise translated from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        if self._closed:
            raise ConflictError("the item store is closed")
        with self._write_lock, self._write_txn() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read transaction: every statement inside sees the same snapshot."""
        conn = self._reader()
        self.dialect.begin_read(conn)
        try:
            yield conn
        finally:
            if not is_broken(conn):
                conn.execute("COMMIT")

    @contextmanager
    def _autocommit_reader(self) -> Iterator[Connection]:
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
