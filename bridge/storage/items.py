"""The item store: items, their raw encoder embeddings, bridge versions and jobs, in SQLite.

The store is the source of truth; every FAISS index is derived from it
(see bridge/service/catalog.py).

Layout: one SQLite file (``<data_dir>/store.sqlite``) in WAL mode with ``synchronous=FULL``, so a
committed transaction survives a process kill or a power loss. Tables:

- ``items``: ``rowid`` (INTEGER PRIMARY KEY AUTOINCREMENT: never reused after a delete, so it is
  safe as the FAISS id), ``id`` (uuid4 hex, the public id), ``modality``, ``metadata`` (JSON
  object), ``encoder``, ``dim``, ``embedding`` (float32 BLOB, native byte order), ``created_at``.
  The raw embedding is written in the same transaction as the row: an acknowledged item always
  has its embedding.
- ``modality_state``: per modality a change counter, the live count and the last rowid, updated
  in the same transaction as every add/delete; ``fingerprint()`` reads one row.
- ``meta``: ``store_id`` (random, created with the file: a recreated store never matches an old
  index's fingerprint), ``active``/``previous`` bridge versions, ``schema_version``.
- ``versions`` and ``jobs``.

Concurrency: one writer connection guarded by a ``threading.Lock`` (``BEGIN IMMEDIATE`` ...
``COMMIT``); readers use one connection per thread (WAL readers never block the writer nor each
other), and multi-statement reads run inside one read transaction so they see one snapshot.

Invariants enforced here: all items of one modality come from one encoder with one dimension (the
indexes of a modality are built from one matrix), metadata is a JSON object with string keys.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import ConflictError, InvalidInputError, NotFoundError
from bridge.modalities import MODALITIES

logger = logging.getLogger(__name__)

MAX_METADATA_BYTES = 64 * 1024
# Deeper metadata was stored and then could not be serialised back (GET and every search
# that ranked the item answered 500); real metadata is a few levels deep.
MAX_METADATA_DEPTH = 32
SCHEMA_VERSION = 1
JOB_ACTIVE_STATUSES = ("queued", "running")

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

_VERSION_FIELDS = ("checkpoint_dir", "status", "sha256", "metrics")
_JOB_FIELDS = ("status", "progress", "message", "result", "error", "params")


def utc_now() -> str:
    """ISO 8601 UTC timestamp with milliseconds, e.g. ``2025-01-01T12:00:00.000+00:00``."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class NewItem:
    """An item to store: its modality ("image" | "audio"), metadata and raw encoder embedding."""

    modality: str
    metadata: dict[str, Any]
    embedding: np.ndarray
    encoder: str


@dataclass(frozen=True)
class StoredItem:
    """A stored item. ``id`` is public (uuid4 hex); ``rowid`` is the FAISS id of every index."""

    id: str
    rowid: int
    modality: str
    metadata: dict[str, Any]
    created_at: str


@dataclass(frozen=True)
class ModalitySnapshot:
    """One consistent read of a modality: fingerprint, rowids, and optionally the embeddings."""

    fingerprint: str
    rowids: np.ndarray  # (N,) int64, ascending
    embeddings: np.ndarray | None  # (N, D) float32, or None when not requested
    encoder: str | None  # the encoder of every item of the modality (None when empty)


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise InvalidInputError(f"modality must be one of {MODALITIES}, got {modality!r}")


def _dump_json(value: Any, what: str) -> str:
    try:
        text = json.dumps(value, allow_nan=False, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"{what} must be JSON-serialisable without NaN/Inf ({exc})"
        ) from exc
    return text


def _check_json_values(value: Any, what: str) -> None:
    """InvalidInputError for nesting deeper than MAX_METADATA_DEPTH or a string (key or value)
    that is not valid Unicode (a lone surrogate such as "\\ud800" in the JSON): both were
    accepted, then failed every response that carried the item. Iterative, so any depth is
    safe to check."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(
                    f"{what} contains a string that is not valid Unicode ({exc.reason} at "
                    f"character {exc.start}: a lone surrogate escape such as \\ud800?)"
                ) from exc
        elif isinstance(node, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(
                    f"{what} is nested more than {MAX_METADATA_DEPTH} levels deep"
                )
            if isinstance(node, dict):
                stack.extend((key, depth) for key in node)
                stack.extend((item, depth + 1) for item in node.values())
            else:
                stack.extend((item, depth + 1) for item in node)


def _check_metadata(metadata: Any, index: int) -> str:
    if not isinstance(metadata, dict):
        raise InvalidInputError(
            f"item {index}: metadata must be a JSON object, got {type(metadata).__name__}"
        )
    for key in metadata:
        if not isinstance(key, str):
            raise InvalidInputError(f"item {index}: metadata keys must be strings, got {key!r}")
    _check_json_values(metadata, f"item {index}: metadata")
    text = _dump_json(metadata, f"item {index}: metadata")
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"item {index}: metadata is {len(text.encode())} bytes as JSON, "
            f"the limit is {MAX_METADATA_BYTES}"
        )
    return text


def _check_embedding(embedding: Any, index: int) -> np.ndarray:
    array = np.asarray(embedding)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1 or array.shape[0] == 0:
        raise InvalidInputError(
            f"item {index}: embedding must be a vector (D,) or (1, D), got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidInputError(f"item {index}: embedding must be float, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"item {index}: embedding contains NaN or Inf")
    return np.ascontiguousarray(array, dtype=np.float32)


def _json_equal(a: Any, b: Any) -> bool:
    """JSON value equality that keeps booleans apart from numbers (``True != 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


HIT_CACHE_ITEMS = 100_000  # items kept for search hydration (about 70 MB at most)


class _HitCache:
    """Stored items by rowid for the search path, which hydrates the same few hits over and
    over: an SQL statement and a JSON parse per hit were a visible share of a search.

    Items never change and rowids are never reused (AUTOINCREMENT), so only deletes can make
    an entry wrong. A delete bumps `generation` and drops the entry after its commit; a reader
    keeps what it read only if no delete happened since it started reading, so an item read
    just before its delete committed is never cached. When full, the cache starts over.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.items: dict[int, StoredItem] = {}
        self.generation = 0
        self._lock = threading.Lock()

    def keep(self, fetched: dict[int, StoredItem], generation: int) -> None:
        with self._lock:
            if generation != self.generation:
                return
            if len(self.items) + len(fetched) > self.capacity:
                self.items.clear()
            self.items.update(fetched)

    def forget(self, rowid: int) -> None:
        with self._lock:
            self.generation += 1
            self.items.pop(rowid, None)


class ItemStore:
    """SQLite-backed store of items, raw embeddings, bridge versions and jobs (module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self._hits = _HitCache(HIT_CACHE_ITEMS)
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
                for modality in MODALITIES:
                    conn.execute(
                        "INSERT OR IGNORE INTO modality_state VALUES (?, 0, 0, 0)", (modality,)
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

    # -- items -------------------------------------------------------------------------------

    @staticmethod
    def _item(row: sqlite3.Row | tuple[Any, ...]) -> StoredItem:
        item_id, rowid, modality, metadata, created_at = row
        return StoredItem(
            id=item_id,
            rowid=int(rowid),
            modality=modality,
            metadata=json.loads(metadata),
            created_at=created_at,
        )

    _ITEM_COLUMNS = "id, rowid, modality, metadata, created_at"

    def add_items(self, items: Sequence[NewItem]) -> list[StoredItem]:
        """Store ``items`` in one transaction: all are stored or none (InvalidInputError,
        ConflictError). Every item of a modality must share the modality's encoder and dimension.
        """
        if len(items) == 0:
            return []
        prepared = []
        for i, item in enumerate(items):
            _check_modality(item.modality)
            if not isinstance(item.encoder, str) or not item.encoder:
                raise InvalidInputError(f"item {i}: encoder must be a non-empty string")
            metadata_json = _check_metadata(item.metadata, i)
            embedding = _check_embedding(item.embedding, i)
            prepared.append((item, metadata_json, embedding))
        now = utc_now()
        stored: list[StoredItem] = []
        with self._write() as conn:
            known: dict[str, tuple[str, int] | None] = {}
            for i, (item, metadata_json, embedding) in enumerate(prepared):
                if item.modality not in known:
                    row = conn.execute(
                        "SELECT encoder, dim FROM items WHERE modality=? LIMIT 1", (item.modality,)
                    ).fetchone()
                    known[item.modality] = None if row is None else (row[0], int(row[1]))
                expected = known[item.modality]
                if expected is None:
                    known[item.modality] = (item.encoder, embedding.shape[0])
                elif (item.encoder, embedding.shape[0]) != expected:
                    raise ConflictError(
                        f"item {i}: the store holds {item.modality} items embedded by "
                        f"{expected[0]!r} ({expected[1]}-d); this item comes from "
                        f"{item.encoder!r} ({embedding.shape[0]}-d). One data directory holds "
                        "one encoder per modality: use a fresh data directory for another encoder"
                    )
                item_id = uuid.uuid4().hex
                cursor = conn.execute(
                    "INSERT INTO items (id, modality, metadata, encoder, dim, embedding,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        item_id,
                        item.modality,
                        metadata_json,
                        item.encoder,
                        embedding.shape[0],
                        embedding.tobytes(),
                        now,
                    ),
                )
                rowid = int(cursor.lastrowid or 0)
                conn.execute(
                    "UPDATE modality_state SET changes=changes+1, count=count+1, last_rowid=?"
                    " WHERE modality=?",
                    (rowid, item.modality),
                )
                stored.append(
                    StoredItem(
                        id=item_id,
                        rowid=rowid,
                        modality=item.modality,
                        metadata=json.loads(metadata_json),
                        created_at=now,
                    )
                )
        return stored

    def get(self, item_id: str) -> StoredItem:
        """The item with public id ``item_id``; NotFoundError if there is none."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {self._ITEM_COLUMNS} FROM items WHERE id=?", (item_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no item with id {item_id!r}")
        return self._item(row)

    def hits(self, rowids: Sequence[int] | np.ndarray) -> dict[int, StoredItem]:
        """`get_by_rowids` for search hits, through the hit cache (_HitCache)."""
        cached = self._hits.items
        out: dict[int, StoredItem] = {}
        missing: list[int] = []
        for rowid in rowids.tolist() if isinstance(rowids, np.ndarray) else rowids:
            item = cached.get(rowid)
            if item is not None:
                out[rowid] = item
            elif rowid >= 0:
                missing.append(rowid)
        if missing:
            generation = self._hits.generation
            fetched = self.get_by_rowids(missing)
            self._hits.keep(fetched, generation)
            out.update(fetched)
        return out

    def get_by_rowids(self, rowids: Sequence[int] | np.ndarray) -> dict[int, StoredItem]:
        """Hydrate FAISS ids: rowid -> item for those that exist (deleted ones are left out)."""
        wanted = sorted({int(r) for r in rowids if int(r) >= 0})
        if not wanted:
            return {}
        out: dict[int, StoredItem] = {}
        chunks = [wanted[start : start + 500] for start in range(0, len(wanted), 500)]
        # One statement is its own snapshot; several need a read transaction (the search hot
        # path hydrates <= 500 ids and saves the BEGIN/COMMIT round trips).
        with self._read() if len(chunks) > 1 else self._autocommit_reader() as conn:
            for chunk in chunks:
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT {self._ITEM_COLUMNS} FROM items WHERE rowid IN ({marks})", chunk
                ):
                    item = self._item(row)
                    out[item.rowid] = item
        return out

    def delete(self, item_id: str) -> StoredItem:
        """Delete the item and its embedding; returns it. NotFoundError if there is none."""
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {self._ITEM_COLUMNS} FROM items WHERE id=?", (item_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no item with id {item_id!r}")
            item = self._item(row)
            conn.execute("DELETE FROM items WHERE rowid=?", (item.rowid,))
            conn.execute(
                "UPDATE modality_state SET changes=changes+1, count=count-1 WHERE modality=?",
                (item.modality,),
            )
        self._hits.forget(item.rowid)  # after the commit (_HitCache)
        return item

    def snapshot(self, modality: str, with_embeddings: bool = True) -> ModalitySnapshot:
        """Fingerprint, rowids (ascending) and optionally the raw embeddings, read consistently."""
        _check_modality(modality)
        with self._read() as conn:
            fingerprint = self._fingerprint(conn, modality)
            columns = "rowid, embedding, dim, encoder" if with_embeddings else "rowid"
            rows = conn.execute(
                f"SELECT {columns} FROM items WHERE modality=? ORDER BY rowid", (modality,)
            ).fetchall()
            first = conn.execute(
                "SELECT encoder FROM items WHERE modality=? LIMIT 1", (modality,)
            ).fetchone()
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        encoder = None if first is None else str(first[0])
        embeddings = None
        if with_embeddings:
            if rows:
                dim = int(rows[0][2])
                blob = b"".join(r[1] for r in rows)
                embeddings = np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dim).copy()
            else:
                embeddings = np.zeros((0, 0), dtype=np.float32)
        return ModalitySnapshot(fingerprint, rowids, embeddings, encoder)

    def raw_embeddings(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """(rowids int64 (N,), float32 (N, D)) in rowid order; empty -> shapes (0,), (0, 0)."""
        snap = self.snapshot(modality, with_embeddings=True)
        assert snap.embeddings is not None
        return snap.rowids, snap.embeddings

    def raw_embeddings_for(self, modality: str, rowids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Raw embeddings of the given rowids, in the given order; NotFoundError if one is gone."""
        _check_modality(modality)
        wanted = [int(r) for r in rowids]
        found: dict[int, np.ndarray] = {}
        with self._read() as conn:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for rowid, blob in conn.execute(
                    f"SELECT rowid, embedding FROM items WHERE modality=? AND rowid IN ({marks})",
                    [modality, *chunk],
                ):
                    found[int(rowid)] = np.frombuffer(blob, dtype=np.float32)
        missing = [r for r in wanted if r not in found]
        if missing:
            raise NotFoundError(f"no {modality} item with rowid(s) {missing[:10]}")
        if not wanted:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[r] for r in wanted]).astype(np.float32, copy=False)

    def raw_embedding(self, item_id: str) -> tuple[StoredItem, np.ndarray]:
        """The item and its raw embedding (float32 (D,)); NotFoundError if there is none."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {self._ITEM_COLUMNS}, embedding FROM items WHERE id=?", (item_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no item with id {item_id!r}")
        return self._item(row[:5]), np.frombuffer(row[5], dtype=np.float32).copy()

    def encoder(self, modality: str) -> str | None:
        """The encoder id every stored item of ``modality`` was embedded with (None if empty)."""
        _check_modality(modality)
        with self._read() as conn:
            row = conn.execute(
                "SELECT encoder FROM items WHERE modality=? LIMIT 1", (modality,)
            ).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _fingerprint(conn: sqlite3.Connection, modality: str) -> str:
        store_id, changes, count, last = conn.execute(
            "SELECT m.value, s.changes, s.count, s.last_rowid FROM modality_state s, meta m"
            " WHERE s.modality=? AND m.key='store_id'",
            (modality,),
        ).fetchone()
        return f"{store_id}/{modality}/{changes}/{count}/{last}"

    def fingerprint(self, modality: str) -> str:
        """``store_id/modality/changes/count/last_rowid``: one row read; changes on every add or
        delete of that modality, and differs between two store files (random store_id)."""
        _check_modality(modality)
        with self._read() as conn:
            return self._fingerprint(conn, modality)

    def count(self, modality: str | None = None) -> int:
        """Number of items of ``modality`` (all modalities when None)."""
        with self._read() as conn:
            if modality is None:
                row = conn.execute("SELECT COALESCE(SUM(count), 0) FROM modality_state").fetchone()
            else:
                _check_modality(modality)
                row = conn.execute(
                    "SELECT count FROM modality_state WHERE modality=?", (modality,)
                ).fetchone()
        return int(row[0])

    @staticmethod
    def check_filters(filters: Any) -> dict[str, Any]:
        """Validate a metadata filter: a JSON object with string keys (InvalidInputError)."""
        if filters is None:
            return {}
        if not isinstance(filters, dict) or not all(isinstance(k, str) for k in filters):
            raise InvalidInputError("filters must be a JSON object with string keys")
        return filters

    def matches(self, item: StoredItem, filters: dict[str, Any]) -> bool:
        """True when every filter key is in the item's metadata with an equal JSON value."""
        return all(
            key in item.metadata and _json_equal(item.metadata[key], value)
            for key, value in filters.items()
        )

    # -- bridge versions ---------------------------------------------------------------------

    @staticmethod
    def _version_dict(row: tuple[Any, ...]) -> dict[str, Any]:
        version, checkpoint_dir, status, sha256, metrics, created_at, updated_at = row
        return {
            "version": version,
            "checkpoint_dir": checkpoint_dir,
            "status": status,
            "sha256": sha256,
            "metrics": json.loads(metrics),
            "created_at": created_at,
            "updated_at": updated_at,
        }

    _VERSION_COLUMNS = "version, checkpoint_dir, status, sha256, metrics, created_at, updated_at"

    def add_version(
        self,
        version: str,
        checkpoint_dir: str,
        status: str,
        sha256: str | None,
        metrics: dict[str, Any],
    ) -> None:
        """Record a bridge version; ConflictError if the name exists."""
        metrics_json = _dump_json(metrics, "version metrics")
        now = utc_now()
        with self._write() as conn:
            try:
                conn.execute(
                    f"INSERT INTO versions ({self._VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (version, str(checkpoint_dir), status, sha256, metrics_json, now, now),
                )
            except sqlite3.IntegrityError as exc:
                raise ConflictError(f"bridge version {version!r} already exists") from exc

    def update_version(self, version: str, **fields: Any) -> None:
        """Update checkpoint_dir, status, sha256 or metrics (NotFoundError, InvalidInputError)."""
        unknown = set(fields) - set(_VERSION_FIELDS)
        if unknown:
            raise InvalidInputError(
                f"unknown version field(s) {sorted(unknown)}; allowed: {list(_VERSION_FIELDS)}"
            )
        if not fields:
            return
        values = {
            k: (_dump_json(v, "version metrics") if k == "metrics" else v)
            for k, v in fields.items()
        }
        values["updated_at"] = utc_now()
        assignments = ", ".join(f"{k}=?" for k in values)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE versions SET {assignments} WHERE version=?", [*values.values(), version]
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no bridge version {version!r}")

    def list_versions(self) -> list[dict[str, Any]]:
        """Every version, oldest first, each with an ``active`` flag."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {self._VERSION_COLUMNS} FROM versions ORDER BY created_at, rowid"
            ).fetchall()
            active = conn.execute("SELECT value FROM meta WHERE key='active'").fetchone()
        out = [self._version_dict(r) for r in rows]
        for entry in out:
            entry["active"] = active is not None and entry["version"] == active[0]
        return out

    def get_version(self, version: str) -> dict[str, Any]:
        """One version as a dict; NotFoundError if unknown."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {self._VERSION_COLUMNS} FROM versions WHERE version=?", (version,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no bridge version {version!r}")
        return self._version_dict(row)

    def get_active(self) -> tuple[str | None, str | None]:
        """(active version, previous version); None where unset."""
        with self._read() as conn:
            rows = dict(
                conn.execute(
                    "SELECT key, value FROM meta WHERE key IN ('active', 'previous')"
                ).fetchall()
            )
        return rows.get("active"), rows.get("previous")

    def set_active(self, version: str, allowed_statuses: Collection[str] | None = None) -> None:
        """Make ``version`` active and the old active one ``previous``, in one transaction.

        NotFoundError for an unknown version; ConflictError when ``allowed_statuses`` is given and
        the version's status is not in it. Activating the active version changes nothing.
        """
        with self._write() as conn:
            row = conn.execute("SELECT status FROM versions WHERE version=?", (version,)).fetchone()
            if row is None:
                raise NotFoundError(f"no bridge version {version!r}")
            if allowed_statuses is not None and row[0] not in allowed_statuses:
                raise ConflictError(
                    f"bridge version {version!r} is {row[0]!r}; only a version that is "
                    f"{sorted(allowed_statuses)} can be activated"
                )
            current = conn.execute("SELECT value FROM meta WHERE key='active'").fetchone()
            if current is not None and current[0] == version:
                return
            if current is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('previous', ?)", (current[0],)
                )
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('active', ?)", (version,)
            )

    # -- jobs --------------------------------------------------------------------------------

    @staticmethod
    def _job_dict(row: tuple[Any, ...]) -> dict[str, Any]:
        (job_id, kind, status, progress, message, params, result, error, created, updated) = row
        return {
            "id": job_id,
            "kind": kind,
            "status": status,
            "progress": float(progress),
            "message": message,
            "params": json.loads(params),
            "result": None if result is None else json.loads(result),
            "error": error,
            "created_at": created,
            "updated_at": updated,
        }

    _JOB_COLUMNS = (
        "id, kind, status, progress, message, params, result, error, created_at, updated_at"
    )

    def create_job(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """A new job in status "queued" with progress 0; returns it as a dict."""
        params_json = _dump_json(params, "job params")
        job_id = uuid.uuid4().hex
        now = utc_now()
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO jobs ({self._JOB_COLUMNS}) VALUES (?, ?, 'queued', 0, '', ?, NULL,"
                " NULL, ?, ?)",
                (job_id, kind, params_json, now, now),
            )
        return self.get_job(job_id)

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Update some of status, progress, message, result (JSON), error, params (JSON)."""
        unknown = set(fields) - set(_JOB_FIELDS)
        if unknown:
            raise InvalidInputError(
                f"unknown job field(s) {sorted(unknown)}; allowed: {list(_JOB_FIELDS)}"
            )
        if "progress" in fields and not (
            isinstance(fields["progress"], int | float) and math.isfinite(fields["progress"])
        ):
            raise InvalidInputError(f"job progress must be a number, got {fields['progress']!r}")
        values = {
            k: (_dump_json(v, f"job {k}") if k in ("result", "params") and v is not None else v)
            for k, v in fields.items()
        }
        values["updated_at"] = utc_now()
        assignments = ", ".join(f"{k}=?" for k in values)
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE jobs SET {assignments} WHERE id=?", [*values.values(), job_id]
            )
            if cursor.rowcount == 0:
                raise NotFoundError(f"no job with id {job_id!r}")

    def get_job(self, job_id: str) -> dict[str, Any]:
        """One job as a dict; NotFoundError if unknown."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {self._JOB_COLUMNS} FROM jobs WHERE id=?", (job_id,)
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no job with id {job_id!r}")
        return self._job_dict(row)

    def list_jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent jobs, newest first."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {self._JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, rowid DESC"
                " LIMIT ?",
                (int(limit),),
            ).fetchall()
        return [self._job_dict(r) for r in rows]

    def fail_interrupted_jobs(self) -> int:
        """On start: jobs a crash left queued/running become "failed"; returns how many."""
        marks = ",".join("?" * len(JOB_ACTIVE_STATUSES))
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE jobs SET status='failed', error=?, message=?, updated_at=?"
                f" WHERE status IN ({marks})",
                (
                    "interrupted: the service stopped before the job finished",
                    "interrupted",
                    utc_now(),
                    *JOB_ACTIVE_STATUSES,
                ),
            )
            count = int(cursor.rowcount)
        if count:
            logger.warning("marked %d interrupted job(s) as failed", count)
        return count
