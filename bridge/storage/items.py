"""The item store: items and their raw encoder embeddings, with bridge versions and jobs.

The store is the source of truth; every FAISS index is derived from it
(see bridge/service/catalog.py). One SQLite file (bridge/storage/database.py); ItemStore joins
the items (here), the bridge registry (registry.py) and the jobs table (jobs.py) on it.

- ``items``: ``rowid`` (INTEGER PRIMARY KEY AUTOINCREMENT: never reused after a delete, so it is
  safe as the FAISS id), ``id`` (uuid4 hex, the public id), ``modality``, ``metadata`` (JSON
  object), ``encoder``, ``dim``, ``embedding`` (float32 BLOB, native byte order), ``created_at``.
  The raw embedding is written in the same transaction as the row: an acknowledged item always
  has its embedding.
- ``modality_state``: per modality a change counter, the live count and the last rowid, updated
  in the same transaction as every add/delete; ``fingerprint()`` reads one row.

Invariants enforced here: all items of one modality come from one encoder with one dimension (the
indexes of a modality are built from one matrix), metadata is a JSON object with string keys
(bridge/storage/metadata.py).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import ConflictError, InvalidInputError, NotFoundError
from bridge.modalities import MODALITIES, check_modality
from bridge.storage.database import utc_now
from bridge.storage.dialects import DEFAULT_BUSY_TIMEOUT, Connection
from bridge.storage.jobs import JobTable
from bridge.storage.metadata import check_metadata, json_equal
from bridge.storage.registry import VersionRegistry

logger = logging.getLogger(__name__)


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


def _no_item(item_id: str) -> str:
    return f"no item with id {item_id!r}"


HIT_CACHE_ITEMS = 100_000  # items kept for search hydration (about 70 MB at most)
SNAPSHOT_BATCH = 1024  # rows copied (and transformed) at a time: 2 MB of 512-d embeddings


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


class ItemStore(VersionRegistry, JobTable):
    """The store of items, raw embeddings, bridge versions and jobs (module docstring), in a
    SQLite file or a PostgreSQL database (bridge/storage/database.py)."""

    def __init__(self, location: Path | str, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        super().__init__(location, busy_timeout)
        self._hits = _HitCache(HIT_CACHE_ITEMS)
        with self._write():
            for modality in MODALITIES:
                self._writer.execute(
                    "INSERT INTO modality_state VALUES (?, 0, 0, 0) ON CONFLICT DO NOTHING",
                    (modality,),
                )

    # -- items -------------------------------------------------------------------------------

    @staticmethod
    def _item(row: tuple[Any, ...]) -> StoredItem:
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
            check_modality(item.modality)
            if not isinstance(item.encoder, str) or not item.encoder:
                raise InvalidInputError(f"item {i}: encoder must be a non-empty string")
            metadata_json = check_metadata(item.metadata, i)
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
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING rowid",
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
                rowid = int(cursor.fetchone()[0])
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
        row = self._select_one("items", self._ITEM_COLUMNS, "id", item_id, _no_item(item_id))
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

    def metadata_for(self, rowids: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Each rowid's metadata, in the order given ({} for one that no longer exists)."""
        found = self.get_by_rowids(rowids)
        order = rowids.tolist() if isinstance(rowids, np.ndarray) else list(rowids)
        return [found[r].metadata if r in found else {} for r in order]

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
                raise NotFoundError(_no_item(item_id))
            item = self._item(row)
            conn.execute("DELETE FROM items WHERE rowid=?", (item.rowid,))
            conn.execute(
                "UPDATE modality_state SET changes=changes+1, count=count-1 WHERE modality=?",
                (item.modality,),
            )
        self._hits.forget(item.rowid)  # after the commit (_HitCache)
        return item

    def snapshot(
        self,
        modality: str,
        with_embeddings: bool = True,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> ModalitySnapshot:
        """Fingerprint, rowids (ascending) and optionally the raw embeddings, read consistently.
        With ``transform`` (N, D) -> (N, D'), the snapshot holds its output instead, applied
        batch by batch as rows are read: a projection into a shared space without the raw
        matrix ever being whole.

        Rows are copied batch by batch into one preallocated matrix: reading every row first
        and joining their bytes held three copies of the matrix at once.
        """
        check_modality(modality)
        with self._read() as conn:
            fingerprint = self._fingerprint(conn, modality)
            (count,) = conn.execute(
                "SELECT count(*) FROM items WHERE modality=?", (modality,)
            ).fetchone()
            first = conn.execute(
                "SELECT encoder FROM items WHERE modality=? LIMIT 1", (modality,)
            ).fetchone()
            rowids = np.empty(int(count), dtype=np.int64)
            embeddings: np.ndarray | None = None
            columns = "rowid, embedding" if with_embeddings else "rowid"
            cursor = conn.execute(
                f"SELECT {columns} FROM items WHERE modality=? ORDER BY rowid", (modality,)
            )
            filled = 0
            while batch := cursor.fetchmany(SNAPSHOT_BATCH):
                end = filled + len(batch)  # the same read transaction: never more than count
                rowids[filled:end] = [r[0] for r in batch]
                if with_embeddings:
                    blob = b"".join(r[1] for r in batch)
                    rows = np.frombuffer(blob, dtype=np.float32).reshape(len(batch), -1)
                    if transform is not None:
                        rows = transform(rows)
                    if embeddings is None:
                        embeddings = np.empty((int(count), rows.shape[1]), dtype=np.float32)
                    embeddings[filled:end] = rows
                filled = end
        encoder = None if first is None else str(first[0])
        if with_embeddings and embeddings is None:
            embeddings = np.zeros((0, 0), dtype=np.float32)
        return ModalitySnapshot(fingerprint, rowids, embeddings, encoder)

    def raw_embeddings(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """(rowids int64 (N,), float32 (N, D)) in rowid order; empty -> shapes (0,), (0, 0)."""
        snap = self.snapshot(modality, with_embeddings=True)
        assert snap.embeddings is not None
        return snap.rowids, snap.embeddings

    def raw_embeddings_for(self, modality: str, rowids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Raw embeddings of the given rowids, in the given order; NotFoundError if one is gone."""
        check_modality(modality)
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
        columns = f"{self._ITEM_COLUMNS}, embedding"
        row = self._select_one("items", columns, "id", item_id, _no_item(item_id))
        return self._item(row[:5]), np.frombuffer(row[5], dtype=np.float32).copy()

    def encoder(self, modality: str) -> str | None:
        """The encoder id every stored item of ``modality`` was embedded with (None if empty)."""
        check_modality(modality)
        with self._read() as conn:
            row = conn.execute(
                "SELECT encoder FROM items WHERE modality=? LIMIT 1", (modality,)
            ).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _fingerprint(conn: Connection, modality: str) -> str:
        store_id, changes, count, last = conn.execute(
            "SELECT m.value, s.changes, s.count, s.last_rowid FROM modality_state s, meta m"
            " WHERE s.modality=? AND m.key='store_id'",
            (modality,),
        ).fetchone()
        return f"{store_id}/{modality}/{changes}/{count}/{last}"

    def fingerprint(self, modality: str) -> str:
        """``store_id/modality/changes/count/last_rowid``: one row read; changes on every add or
        delete of that modality, and differs between two store files (random store_id)."""
        check_modality(modality)
        with self._read() as conn:
            return self._fingerprint(conn, modality)

    def count(self, modality: str | None = None) -> int:
        """Number of items of ``modality`` (all modalities when None)."""
        with self._read() as conn:
            if modality is None:
                row = conn.execute("SELECT COALESCE(SUM(count), 0) FROM modality_state").fetchone()
            else:
                check_modality(modality)
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
            key in item.metadata and json_equal(item.metadata[key], value)
            for key, value in filters.items()
        )
