"""Milvus vector index: the interface of VectorIndex (bridge/index/vectors.py) over one Milvus
collection, for BRIDGE_BACKEND=milvus.

One index is one collection: ``id`` (INT64 primary key, the store's rowid), ``vector``
(FLOAT_VECTOR of the index's dimension) and ``metadata`` (JSON: the item's metadata pairs that
filters can match, so filtered searches run inside Milvus: bridge/index/milvus_filters.py),
inner product on L2-normalised vectors (= cosine), created with Session consistency so that
a search right after an insert sees it. Kinds map to Milvus index types: flat -> FLAT, hnsw
-> HNSW (M, efConstruction; ef at search is max(ef_search, k)), ivf -> IVF_FLAT (nlist;
nprobe at search). Milvus Lite (a ``.db`` file URI) builds FLAT and IVF_FLAT only, so an
hnsw index there is built FLAT (exact) and its manifest says so.

Collection names are ``mb_<store>_<random>``: every build makes a new collection, so a rebuild
never disturbs the collection searches are running on; the catalog swaps index objects, then
``discard()`` drops the old collection after a grace period (searches that took the old object
finish first). The index directory on disk holds only manifest.json, which names the
collection; ``sweep`` drops a store's collections that no manifest names (left by a crash
between a build and the manifest's save).

With Milvus Lite one process owns a data directory's indexes (the directory lock), so the
live id set is kept in memory (loaded from the collection at ``load``), as VectorIndex keeps
its own: ``contains``/``ids`` answer without a round trip. On a Milvus server several
replicas write the same collections (docs/architecture.md, "Replicas"), so the server is the
authority: ``ids`` asks it, ``add`` upserts (a row another replica added already is
overwritten with the same vector, never duplicated), ``remove`` deletes whatever it is given,
and a search asks for ``k`` rows whatever this process counted; the in-memory set is this
process's estimate, for ``ntotal`` and ``contains``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import BackendUnavailableError, BridgeError, InvalidInputError, NotFoundError
from bridge.index.backends import Metadata
from bridge.index.checks import check_ids, check_queries, check_vectors, search_params_with
from bridge.index.files import MANIFEST_FILE, IndexCorruptError, IndexManifest, now
from bridge.index.milvus_filters import FIELD as METADATA_FIELD
from bridge.index.milvus_filters import filter_expression, row_metadata
from bridge.io import atomic_write_text
from bridge.types import is_milvus_lite_uri

logger = logging.getLogger(__name__)

BACKEND = "milvus"
MILVUS_MAX_TOPK = 16384  # Milvus refuses a search limit above this
INSERT_CHUNK = 4096  # rows per insert: 4096 x 1024-d float32 = 16 MiB, under gRPC's 64 MiB cap
ID_PAGE = 16384
DROP_GRACE_SECONDS = 30.0
# How stale a shared collection's row count may be (another replica's writes since).
COUNT_TTL_SECONDS = 0.5
# On a server shared by replicas, an unnamed collection younger than this may be one that
# another replica is still building (a big HNSW build takes minutes to hours).
SHARED_SWEEP_MIN_AGE_SECONDS = 6 * 3600.0
CONNECT_TIMEOUT_SECONDS = 10.0
# Creating (and indexing) or loading a big collection legitimately takes longer than a query.
SLOW_CALL_TIMEOUT_SECONDS = 300.0
# Building an HNSW index takes Milvus about a second per thousand 512-d rows on two cores
# (1,000,000 rows: over 10 minutes), so the wait for it grows with the rows.
INDEX_WAIT_SECONDS_PER_ROW = 1e-3
# Session: a search sees every write this process made before it (read-your-writes) and
# waits for nothing else; Strong waits for the server's next time tick (~200-400 ms here).
CONSISTENCY = "Session"
_INDEX_TYPES = {"flat": "FLAT", "hnsw": "HNSW", "ivf": "IVF_FLAT"}


is_lite_uri = is_milvus_lite_uri  # the rule's home is bridge/types.py


class MilvusConnection:
    """One MilvusClient for ``uri`` (a Milvus Lite ``.db`` file, or a server such as
    ``http://localhost:19530``), shared by every index of a catalog. ``prefix`` names the
    store's collections (``mb_<prefix>_``)."""

    def __init__(
        self,
        uri: str,
        prefix: str,
        token: str = "",
        db_name: str = "",
        timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9]{1,32}", prefix):
            raise InvalidInputError(f"collection prefix must be 1-32 letters/digits: {prefix!r}")
        self.uri = uri
        self.lite = is_lite_uri(uri)
        self.prefix = f"mb_{prefix}_"
        self._token = token
        self._db_name = db_name
        self._timeout = timeout
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def _connect(self) -> Any:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:  # the optional dependency
            raise InvalidInputError(
                "BRIDGE_BACKEND=milvus needs pymilvus: pip install 'modality-bridge[milvus]'"
            ) from exc
        if self.lite:
            Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"uri": self.uri, "timeout": self._timeout}
        if self._token:
            kwargs["token"] = self._token
        if self._db_name:
            kwargs["db_name"] = self._db_name
        try:
            return MilvusClient(**kwargs)
        except Exception as exc:  # pymilvus raises MilvusException and grpc errors alike
            raise BackendUnavailableError(
                f"cannot reach Milvus at {self.uri}: {_reason(exc)}"
            ) from exc

    def call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """``client.<method>(...)`` bounded by the connection's timeout, a failure turned into
        BackendUnavailableError. pymilvus retries a failed call until a timeout that is an
        int (a float one is ignored, and it retries 75 times: minutes), so it gets an int."""
        kwargs["timeout"] = max(1, math.ceil(kwargs.get("timeout") or self._timeout))
        client = self.client
        try:
            return getattr(client, method)(*args, **kwargs)
        except BridgeError:
            raise
        except Exception as exc:
            self._reset(client)
            raise BackendUnavailableError(f"Milvus {what} failed: {_reason(exc)}") from exc

    def _reset(self, client: Any) -> None:
        """Forget a client whose call failed: the next call connects afresh. (A gRPC channel
        that saw the server go away waits out a reconnect backoff of up to two minutes.)"""
        with self._lock:
            if self._client is not client:
                return  # another thread has reset it already
            self._client = None
        try:
            client.close()
        except Exception:  # the channel is broken anyway
            logger.debug("closing a failed Milvus client", exc_info=True)

    def loaded(self, collection: str) -> bool:
        """Whether Milvus has `collection` loaded (searchable); after a restart it reloads."""
        state = self.call("load state", "get_load_state", collection)
        return str(state.get("state")) == "Loaded"  # LoadState: NotLoad, Loading, Loaded

    def new_collection_name(self) -> str:
        """``<prefix><creation time, hex seconds>_<random>``: ``sweep`` can tell a collection
        another replica is still building from one a crash left."""
        return f"{self.prefix}{int(time.time()):x}_{uuid.uuid4().hex[:12]}"

    def _created_at(self, name: str) -> float | None:
        """The creation time a collection's name records (None: a name from before names
        carried it)."""
        stamp = name[len(self.prefix) :].split("_")[0]
        if "_" not in name[len(self.prefix) :]:
            return None
        try:
            return float(int(stamp, 16))
        except ValueError:
            return None

    def collections(self) -> list[str]:
        """This store's collections."""
        names = self.call("list collections", "list_collections")
        return sorted(n for n in names if n.startswith(self.prefix))

    def drop(self, collection: str) -> None:
        if self.call("has collection", "has_collection", collection):
            self.call("drop collection", "drop_collection", collection)

    def sweep(self, keep: Iterable[str], min_age_seconds: float = 0.0) -> list[str]:
        """Drop this store's collections that are not in ``keep`` and were created at least
        ``min_age_seconds`` ago (replicas: one may be building a collection no manifest
        names yet); returns their names."""
        keep = set(keep)
        cutoff = time.time() - min_age_seconds
        dropped = [
            name
            for name in self.collections()
            if name not in keep and (self._created_at(name) or 0.0) <= cutoff
        ]
        for name in dropped:
            logger.info("dropping Milvus collection %s: no index manifest names it", name)
            self.drop(name)
        return dropped

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                finally:
                    self._client = None


def _reason(exc: BaseException) -> str:
    """A pymilvus error in one short line (its str() embeds a whole gRPC status dump)."""
    text = str(getattr(exc, "message", None) or exc)
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def read_manifest(directory: Path) -> IndexManifest | None:
    """The manifest.json of an index directory (None when absent)."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return IndexManifest.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise IndexCorruptError(f"cannot read {path}: {exc}") from exc


class MilvusIndex:
    """One Milvus collection with its manifest (module docstring). Build with ``build`` or
    ``load``."""

    inline_searches = False  # a search is a call to another process: never on the event loop
    on_gpu = False

    def __init__(
        self,
        connection: MilvusConnection,
        manifest: IndexManifest,
        ids: Iterable[int],
        has_metadata: bool = True,
    ) -> None:
        self._conn = connection
        # False for a collection built before rows carried metadata: it needs a rebuild.
        self.has_metadata = has_metadata
        # Other processes write the collection too unless it lives in Milvus Lite.
        self.shared = not connection.lite
        self._ids: set[int] = {int(i) for i in ids}
        # A shared collection's row count, as Milvus last said (ntotal).
        self._count = len(self._ids)
        self._counted_at = time.monotonic()
        self._lock = threading.Lock()  # guards _ids and the manifest
        self.manifest = dataclasses.replace(manifest, count=len(self._ids))

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        connection: MilvusConnection,
        name: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        kind: str = "flat",
        *,
        fingerprint: str,
        encoder: str | None = None,
        checkpoint_sha256: str | None = None,
        hnsw_m: int = 32,
        ivf_nlist: int | None = None,
        ef_search: int = 64,
        ef_construction: int = 80,
        nprobe: int = 32,
        metadata: Metadata | None = None,
        **_faiss_only: Any,
    ) -> MilvusIndex:
        """A new collection holding ``vectors`` (N, D) under ``ids`` (N,), each row with its
        item's ``metadata`` (for filtered searches)."""
        from pymilvus import DataType, MilvusClient

        if kind not in _INDEX_TYPES:
            raise InvalidInputError(
                f"index kind must be one of {tuple(_INDEX_TYPES)}, got {kind!r}"
            )
        x = check_vectors(vectors, f"{name} vectors", None, allow_empty=True)
        id_array = check_ids(ids, x.shape[0], f"{name} ids")
        n, dim = x.shape
        built_kind = "flat" if kind == "hnsw" and connection.lite else kind
        if built_kind != kind:
            logger.info("%s: Milvus Lite has no HNSW; built FLAT (exact)", name)
        params: dict[str, Any]
        index_params: dict[str, Any]
        if built_kind == "hnsw":
            params = {"hnsw_m": hnsw_m, "ef_construction": ef_construction, "ef_search": ef_search}
            index_params = {"M": hnsw_m, "efConstruction": max(ef_construction, hnsw_m)}
        elif built_kind == "ivf":
            nlist = ivf_nlist or max(1, min(int(4 * np.sqrt(max(n, 1))), 65536))
            params = {"nlist": nlist, "nprobe": min(nprobe, nlist)}
            index_params = {"nlist": nlist}
        else:
            params, index_params = {}, {}
        collection = connection.new_collection_name()
        schema = MilvusClient.create_schema(
            auto_id=False, enable_dynamic_field=False, description=f"modality-bridge {name}"
        )
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field(METADATA_FIELD, DataType.JSON)
        spec = MilvusClient.prepare_index_params()
        spec.add_index(
            "vector", index_type=_INDEX_TYPES[built_kind], metric_type="IP", params=index_params
        )
        connection.call(
            "create collection",
            "create_collection",
            collection,
            schema=schema,
            index_params=spec,
            consistency_level=CONSISTENCY,
            timeout=SLOW_CALL_TIMEOUT_SECONDS,
        )
        manifest = IndexManifest(
            name=name,
            kind=built_kind,
            dim=dim,
            count=0,
            fingerprint=fingerprint,
            encoder=encoder,
            checkpoint_sha256=checkpoint_sha256,
            created_at=now(),
            requested_kind=kind,
            updated_at=now(),
            params=params,
            backend=BACKEND,
            collection=collection,
        )
        index = cls(connection, manifest, ())
        try:
            index._insert(id_array, x, metadata)
            if n and not connection.lite:
                index._seal_and_index(n)
        except BaseException:
            connection.drop(collection)
            raise
        with index._lock:
            index._ids.update(int(i) for i in id_array)
            index._count = len(index._ids)
            index.manifest = dataclasses.replace(index.manifest, count=len(index._ids))
        return index

    @classmethod
    def load(cls, connection: MilvusConnection, directory: Path) -> MilvusIndex:
        """The index a saved manifest names; NotFoundError when there is none (or the
        directory holds another backend's index), IndexCorruptError when its collection is
        gone or disagrees with the manifest."""
        manifest = read_manifest(Path(directory))
        if manifest is None or manifest.backend != BACKEND:
            raise NotFoundError(f"no Milvus index at {directory}")
        collection = manifest.collection
        if not connection.call("has collection", "has_collection", collection):
            raise IndexCorruptError(f"{directory}: Milvus has no collection {collection!r}")
        connection.call(
            "load collection", "load_collection", collection, timeout=SLOW_CALL_TIMEOUT_SECONDS
        )
        ids = _all_ids(connection, collection)
        described = connection.call("describe collection", "describe_collection", collection)
        fields = {field.get("name") for field in described.get("fields", [])}
        return cls(connection, manifest, ids, has_metadata=METADATA_FIELD in fields)

    # -- properties --------------------------------------------------------------------------

    @property
    def collection(self) -> str:
        return self.manifest.collection

    @property
    def ntotal(self) -> int:
        """The rows: this process's count, or for a shared collection Milvus's, asked at
        most every COUNT_TTL_SECONDS (searches size their fetch by it)."""
        if not self.shared:
            return len(self._ids)
        if time.monotonic() - self._counted_at > COUNT_TTL_SECONDS:
            rows = self._conn.call(
                "count", "query", self.collection, filter="", output_fields=["count(*)"]
            )
            with self._lock:
                self._count = int(rows[0]["count(*)"]) if rows else 0
                self._counted_at = time.monotonic()
        return self._count

    def _recount(self) -> None:
        """This process changed the collection: the next ntotal asks Milvus."""
        self._counted_at = -math.inf

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def kind(self) -> str:
        return self.manifest.kind

    def ids(self) -> np.ndarray:
        """The live ids, ascending (int64): the server's when replicas share it."""
        if self.shared:
            live = _all_ids(self._conn, self.collection)
            with self._lock:
                self._ids = set(live)
                self._count, self._counted_at = len(live), time.monotonic()
                self.manifest = dataclasses.replace(self.manifest, count=len(self._ids))
        with self._lock:
            return np.array(sorted(self._ids), dtype=np.int64)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.array([int(i) in self._ids for i in np.asarray(ids).ravel()], dtype=bool)

    def needs_rebuild(self) -> str | None:
        # Milvus compacts deletions and grows its own segments: only the schema can be stale.
        if not self.has_metadata:
            return "collection has no metadata field (built before filters ran in Milvus)"
        return None

    def can_filter(self, filters: Mapping[str, Any]) -> bool:
        """Whether ``search(..., filters=filters)`` returns only rows matching every filter
        (bridge/index/milvus_filters.py says which filters Milvus can match)."""
        return self.has_metadata and filter_expression(filters) is not None

    def set_search_params(self, ef_search: int | None = None, nprobe: int | None = None) -> None:
        params = search_params_with(self.manifest.params, self.kind, ef_search, nprobe)
        with self._lock:
            self.manifest = dataclasses.replace(self.manifest, params=params)

    # -- search and mutation -----------------------------------------------------------------

    def search(
        self, queries: np.ndarray, k: int, filters: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` by cosine per query row: ((Q, k) float32 scores, (Q, k) int64 ids), padded
        with (-inf, -1) where fewer than ``k`` vectors exist (VectorIndex.search's contract).
        ``filters``: only rows whose metadata matches them (``can_filter`` must allow them)."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InvalidInputError(f"k must be a positive integer, got {k!r}")
        expression = ""
        if filters:
            if not self.can_filter(filters):
                raise InvalidInputError(f"{self.collection} cannot apply filters {filters!r}")
            expression = filter_expression(filters) or ""
        q = check_queries(queries, self.dim)
        k = int(k)
        scores = np.full((q.shape[0], k), -np.inf, dtype=np.float32)
        labels = np.full((q.shape[0], k), -1, dtype=np.int64)
        # A shared collection may hold rows other replicas added since this one counted.
        limit = min(k, MILVUS_MAX_TOPK) if self.shared else min(k, self.ntotal, MILVUS_MAX_TOPK)
        if limit == 0:
            return scores, labels
        results = self._conn.call(
            "search",
            "search",
            self.collection,
            data=list(q),
            limit=limit,
            search_params={"metric_type": "IP", "params": self._search_params(limit)},
            filter=expression,
            output_fields=[],
        )
        for row, hits in enumerate(results):
            for col, hit in enumerate(hits[:limit]):
                labels[row, col] = int(hit["id"])
                scores[row, col] = float(hit["distance"])
        return scores, labels

    def _search_params(self, k: int) -> dict[str, Any]:
        params = self.manifest.params
        if self.kind == "hnsw":
            return {"ef": max(int(params.get("ef_search", 64)), k)}
        if self.kind == "ivf":
            return {"nprobe": int(params.get("nprobe", 32))}
        return {}

    def _insert(
        self, ids: np.ndarray, x: np.ndarray, metadata: Metadata | None, upsert: bool = False
    ) -> None:
        if metadata is not None and len(metadata) != ids.shape[0]:
            raise InvalidInputError(f"{len(metadata)} metadata objects for {ids.shape[0]} ids")
        fields = [row_metadata(m) for m in metadata] if metadata is not None else None
        method = "upsert" if upsert else "insert"
        for start in range(0, ids.shape[0], INSERT_CHUNK):
            stop = start + INSERT_CHUNK
            rows = [
                {"id": int(i), "vector": v, METADATA_FIELD: fields[start + j] if fields else "{}"}
                for j, (i, v) in enumerate(zip(ids[start:stop], x[start:stop], strict=True))
            ]
            self._conn.call(method, method, self.collection, rows)

    def _seal_and_index(self, rows: int) -> None:
        """After a bulk build: seal the segments and wait until Milvus has indexed them (a
        growing segment is searched by brute force, and one holds up to 512 MB)."""
        self._conn.call("flush", "flush", self.collection, timeout=SLOW_CALL_TIMEOUT_SECONDS)
        deadline = time.monotonic() + max(
            SLOW_CALL_TIMEOUT_SECONDS, rows * INDEX_WAIT_SECONDS_PER_ROW
        )
        while time.monotonic() < deadline:
            info = self._conn.call("describe index", "describe_index", self.collection, "vector")
            if int(info.get("indexed_rows", 0)) >= rows:
                return
            time.sleep(0.2)
        logger.warning("%s: Milvus has not finished indexing %d rows", self.collection, rows)

    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        fingerprint: str,
        metadata: Metadata | None = None,
    ) -> None:
        """Add vectors under new ids, with their items' metadata (InvalidInputError for an id
        already present; in a shared collection an id another replica added is overwritten:
        ids are rowids, so its vector and metadata are the same)."""
        x = check_vectors(vectors, f"{self.manifest.name} vectors", self.dim, allow_empty=True)
        id_array = check_ids(ids, x.shape[0], f"{self.manifest.name} ids")
        with self._lock:
            clash = [int(i) for i in id_array if int(i) in self._ids]
        if clash and not self.shared:
            raise InvalidInputError(
                f"{self.manifest.name}: id(s) already in the index: {clash[:10]}"
            )
        if id_array.size:
            self._insert(id_array, x, metadata, upsert=self.shared)
            self._recount()
        with self._lock:
            self._ids.update(int(i) for i in id_array)
            self.manifest = dataclasses.replace(
                self.manifest, count=len(self._ids), fingerprint=fingerprint, updated_at=now()
            )

    def set_fingerprint(self, fingerprint: str) -> None:
        with self._lock:
            self.manifest = dataclasses.replace(self.manifest, fingerprint=fingerprint)

    def remove(self, ids: np.ndarray, fingerprint: str) -> None:
        """Remove ids (unknown ones are ignored)."""
        id_array = check_ids(np.unique(np.asarray(ids)), None, f"{self.manifest.name} ids")
        with self._lock:
            present = [int(i) for i in id_array if self.shared or int(i) in self._ids]
        if present:
            self._conn.call("delete", "delete", self.collection, ids=present)
            self._recount()
        with self._lock:
            self._ids.difference_update(present)
            self.manifest = dataclasses.replace(
                self.manifest, count=len(self._ids), fingerprint=fingerprint, updated_at=now()
            )

    # -- persistence -------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write manifest.json (the vectors are Milvus's to keep): a temp file renamed over
        the old one, so a crash leaves the old manifest or the new one."""
        with self._lock:
            payload = json.dumps(self.manifest.to_json(), indent=2) + "\n"
        atomic_write_text(Path(directory) / MANIFEST_FILE, payload, durable=True)

    def discard(self, grace_seconds: float = DROP_GRACE_SECONDS) -> None:
        """Drop the collection once searches that still hold this object are done: after
        ``grace_seconds`` (0: now). A drop that fails is left to the next ``sweep``."""

        def drop() -> None:
            try:
                self._conn.drop(self.collection)
            except BridgeError as exc:
                logger.warning("could not drop %s (the next sweep will): %s", self.collection, exc)

        if grace_seconds <= 0:
            drop()
            return
        timer = threading.Timer(grace_seconds, drop)
        timer.daemon = True
        timer.start()


def _all_ids(connection: MilvusConnection, collection: str) -> list[int]:
    """Every primary key of ``collection``: one plain query when they fit in a page (a few
    ms), else a query iterator (a plain query's limit is capped and its rows come in no set
    order; an iterator costs over a second to set up on a 2.3 server)."""
    rows = connection.call(
        "query ids", "query", collection, filter="id >= 0", output_fields=["id"], limit=ID_PAGE
    )
    if len(rows) < ID_PAGE:
        return [int(row["id"]) for row in rows]
    iterator = connection.call(
        "query ids",
        "query_iterator",
        collection,
        batch_size=ID_PAGE,
        filter="id >= 0",
        output_fields=["id"],
    )
    ids: list[int] = []
    try:
        while True:
            try:
                page = iterator.next()
            except Exception as exc:
                raise BackendUnavailableError(
                    f"Milvus query of ids failed: {_reason(exc)}"
                ) from exc
            if not page:
                return ids
            ids.extend(int(row["id"]) for row in page)
    finally:
        iterator.close()
