"""The engine facade that app/ (and the CLI) call: ingest, search, versions, retrain jobs.

Data flow (architecture.md):
  ingest: sniff + decode -> encode (CLIP image / CLAP audio tower) -> original bytes written to
          data_dir/blobs/ -> ONE store transaction commits items + raw embeddings (this is the
          acknowledgement) -> native index updated, and each loaded bridge version's shared
          index updated with the projected rows.
  search: decode/encode the query (or take a raw vector / a stored item's raw embedding) ->
          route (bridge/routing.py) -> project with the active bridge when the route is
          bridged -> FAISS -> hydrate ids from the store, filter, page.

Concurrency:
- Readers (search, get) take no service lock. A request reads `self._active` (an immutable
  ActiveBridge: version, checkpoint, shared indexes) once and uses it to the end, so a swap
  never mixes versions inside one answer. activate() builds the new ActiveBridge fully, then
  publishes it with one attribute assignment (atomic under the GIL).
- Writers (add_items, delete_item, activate, registering a freshly built version) hold one
  re-entrant writer lock, so the set of loaded versions and their shared indexes always see
  every committed item. Searches run concurrently with all of them (VectorIndex has its own
  readers-writer lock; SQLite readers use WAL).
- Encoding is bounded by a semaphore of `encode_threads` permits so concurrent uploads do not
  oversubscribe the cores; FAISS and torch release the GIL while they compute.

Every search answer carries `bridge_version`: the version that was active when the request
took its snapshot (native-space answers do not depend on it, but report it so that a client
can tell which state of the service answered).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import (
    CheckpointError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from bridge.jobs import (
    JobContext,
    JobRunner,
    plan_retrain,
    remove_version_dir,
    run_retrain,
)
from bridge.metrics import ITEMS_DELETED, ITEMS_INGESTED, SEARCHES, StageTimer
from bridge.routing import MODALITY_SPACE, Route, route_for_space, route_media, route_text
from bridge.service_types import (
    ItemRecord,
    JobRecord,
    RetrainRequest,
    SearchHit,
    SearchQuery,
    SearchResponse,
    ServiceConfig,
    Upload,
    VersionRecord,
)

if TYPE_CHECKING:
    from bridge.catalog import IndexCatalog
    from bridge.encoders import Encoder
    from bridge.index import VectorIndex
    from bridge.projectors import BridgeCheckpoint
    from bridge.store import ItemStore, StoredItem

logger = logging.getLogger(__name__)

MODALITIES = ("image", "audio")
CONTENT_KEY = "_content"  # reserved metadata key: where the original bytes live
INITIAL_VERSION = "v1"
OVERFETCH_FACTOR = 4
OVERFETCH_MIN = 64
EVAL_LABEL_KEY = "label"


@dataclass(frozen=True)
class ActiveBridge:
    """The active bridge version, swapped as one reference (never mutated)."""

    version: str
    checkpoint: BridgeCheckpoint
    shared: Mapping[str, VectorIndex | None]  # "image" / "audio" -> shared index


@dataclass(frozen=True)
class _Decoded:
    modality: str
    media: Any  # PIL image or mono float32 waveform at the encoder's rate
    content_type: str


def _content_type(data: bytes, modality: str, upload: Upload) -> str:
    """A content type from magic bytes, else the client's claim, else a generic one."""
    head = data[:16]
    signatures = (
        (b"\x89PNG", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF8", "image/gif"),
        (b"BM", "image/bmp"),
        (b"fLaC", "audio/flac"),
        (b"OggS", "audio/ogg"),
        (b"ID3", "audio/mpeg"),
    )
    for magic, kind in signatures:
        if head.startswith(magic):
            return kind
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "image/tiff"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    claimed = (upload.content_type or "").split(";")[0].strip().lower()
    if claimed.startswith(f"{modality}/"):
        return claimed
    return "application/octet-stream"


class BlobStore:
    """Original upload bytes under data_dir/blobs/<key[:2]>/<key> (written before the commit)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{32}", key):
            raise NotFoundError("stored content reference is malformed")
        return self.root / key[:2] / key

    def write(self, data: bytes) -> str:
        key = uuid.uuid4().hex
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def read(self, key: str) -> bytes:
        path = self.path(key)
        if not path.is_file():
            raise NotFoundError("the item's original content is missing from the blob store")
        return path.read_bytes()

    def remove(self, key: str) -> None:
        with contextlib.suppress(NotFoundError):
            self.path(key).unlink(missing_ok=True)

    def keys(self) -> set[str]:
        return {p.name for p in self.root.glob("??/*") if not p.name.startswith(".")}

    def remove_orphans(self, referenced: set[str]) -> int:
        """Delete blobs no item references (a crash between blob write and commit) and temps."""
        removed = 0
        for path in self.root.glob("??/*"):
            if path.name.startswith(".tmp-") or path.name not in referenced:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _public_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    if CONTENT_KEY not in metadata:
        return metadata
    return {k: v for k, v in metadata.items() if k != CONTENT_KEY}


def _item_record(item: StoredItem) -> ItemRecord:
    return ItemRecord(
        id=item.id,
        modality=item.modality,  # type: ignore[arg-type]
        metadata=_public_metadata(item.metadata),
        created_at=item.created_at,
    )


def _version_record(row: dict[str, Any], active: str | None) -> VersionRecord:
    return VersionRecord(
        version=row["version"],
        status=row["status"],
        active=row["version"] == active,
        checkpoint_sha256=row.get("sha256"),
        created_at=row["created_at"],
        metrics=dict(row.get("metrics") or {}),
    )


class BridgeService:
    """The facade (module docstring). Build with BridgeService.open(config)."""

    def __init__(
        self,
        config: ServiceConfig,
        store: ItemStore,
        catalog: IndexCatalog,
        clip: Encoder,
        clap: Encoder,
    ) -> None:
        from bridge.devices import resolve_device

        self.config = config
        self.data_dir = Path(config.data_dir)
        self.store = store
        self.catalog = catalog
        self.clip = clip
        self.clap = clap
        self.device = resolve_device(config.device)
        self.blobs = BlobStore(self.data_dir / "blobs")
        self._write_lock = threading.RLock()
        self._encode_slots = threading.BoundedSemaphore(max(1, config.encode_threads))
        self._loaded: dict[str, BridgeCheckpoint] = {}  # versions whose shared indexes are live
        self._active: ActiveBridge | None = None
        self._jobs = JobRunner(store)
        self._closed = False
        self._ready = False

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def open(
        cls, config: ServiceConfig, *, clip: Encoder | None = None, clap: Encoder | None = None
    ) -> BridgeService:
        """Load encoders and the store, fail interrupted jobs, register the initial bridge,
        reconcile native and active shared indexes, remove orphan blobs, seed samples.

        `clip`/`clap`: already loaded encoders to reuse (tests, benchmarks); by default they
        are loaded from config.clip_model / config.clap_model.
        """
        from bridge.catalog import IndexCatalog
        from bridge.encoders import load_encoder
        from bridge.store import ItemStore

        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        from bridge.index import configure_threads

        configure_threads(config.faiss_threads or None)
        clip = clip or load_encoder("clip", config.clip_model, config.device)
        clap = clap or load_encoder("clap", config.clap_model, config.device)
        store = ItemStore(data_dir / "store.sqlite")
        try:
            catalog = IndexCatalog(data_dir, store, config.index_type, config.faiss_gpu)
            service = cls(config, store, catalog, clip, clap)
            service._start()
        except BaseException:
            store.close()
            raise
        return service

    def _start(self) -> None:
        self.store.fail_interrupted_jobs()
        self._fail_interrupted_versions()
        self._register_initial_bridge()
        rebuilt = self.catalog.reconcile_native(self.encoder_ids())
        if rebuilt:
            logger.info("rebuilt native indexes: %s", rebuilt)
        active, _ = self.store.get_active()
        if active is not None:
            with self._write_lock:
                self._publish(active, self._ensure_loaded(active))
        self._remove_orphan_blobs()
        if self.config.samples_dir is not None and self.store.count() == 0:
            self.seed_samples(Path(self.config.samples_dir))
        self._ready = True

    def close(self) -> None:
        """Stop the job thread, save every index, close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ready = False
        self._jobs.close()
        with self._write_lock:
            try:
                self.catalog.save_all()
            finally:
                self.store.close()

    def __enter__(self) -> BridgeService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def readiness(self) -> dict[str, Any]:
        active = self._active
        indexes: dict[str, int | None] = {}
        for modality in MODALITIES:
            native = self.catalog.native(modality)
            indexes[f"{MODALITY_SPACE[modality]}_{modality}"] = native.ntotal if native else 0
            shared = self._shared_index(active, modality) if active else None
            indexes[f"shared_{modality}"] = shared.ntotal if shared is not None else None
        return {
            "ready": self._ready and not self._closed,
            "encoders": {
                enc.kind: {"model": enc.model_id, "dim": enc.dim, "device": enc.device}
                for enc in (self.clip, self.clap)
            },
            "indexes": indexes,
            "items": self.store.count(),
            "active_version": active.version if active else None,
            "job_running": self._jobs.busy(),
        }

    def encoder_ids(self) -> dict[str, str]:
        return {"clip": self.clip.model_id, "clap": self.clap.model_id}

    # -- items ---------------------------------------------------------------------------

    def _decode(self, upload: Upload, label: str) -> _Decoded:
        from bridge.media import decode_audio, decode_image, resample, sniff_modality

        if not isinstance(upload.data, bytes | bytearray):
            raise InvalidInputError(f"{label}: expected file bytes")
        data = bytes(upload.data)
        modality = sniff_modality(data, upload.filename, upload.content_type)
        if modality == "image":
            media: Any = decode_image(data, label)
        else:
            waveform, rate = decode_audio(data, label, self.config.max_audio_seconds)
            target = self.clap.sample_rate or rate
            media = resample(waveform, rate, target) if rate != target else waveform
        return _Decoded(modality, media, _content_type(data, modality, upload))

    def _encode(self, modality: str, media: Sequence[Any]) -> np.ndarray:
        """(N, D) raw embeddings with the modality's tower (bounded concurrency)."""
        with self._encode_slots:
            if modality == "image":
                return self.clip.encode_image(list(media))
            rate = self.clap.sample_rate
            assert rate is not None, "a CLAP encoder has a sample rate"
            return self.clap.encode_audio(list(media), rate)

    def _encode_text(self, space: str, text: str) -> np.ndarray:
        encoder = self.clip if space == "clip" else self.clap
        with self._encode_slots:
            return encoder.encode_text([text])

    def add_items(self, uploads: list[Upload], metadata: list[dict[str, Any]]) -> list[ItemRecord]:
        """Decode, encode and commit the uploads in one transaction (all or nothing)."""
        from bridge.store import NewItem

        if len(uploads) != len(metadata):
            raise InvalidInputError(
                f"got {len(uploads)} file(s) but {len(metadata)} metadata object(s); "
                "give one metadata object per file"
            )
        if not uploads:
            raise InvalidInputError("no files to add")
        for i, meta in enumerate(metadata):
            if not isinstance(meta, dict):
                raise InvalidInputError(f"item {i}: metadata must be a JSON object")
            if CONTENT_KEY in meta:
                raise InvalidInputError(f"item {i}: metadata key {CONTENT_KEY!r} is reserved")
        timer = StageTimer()
        with timer.stage("decode"):
            decoded = [
                self._decode(upload, f"file {i} ({upload.filename or 'upload'})")
                for i, upload in enumerate(uploads)
            ]
        embeddings: dict[int, np.ndarray] = {}
        with timer.stage("encode"):
            for modality in MODALITIES:
                positions = [i for i, d in enumerate(decoded) if d.modality == modality]
                if positions:
                    raw = self._encode(modality, [decoded[i].media for i in positions])
                    for row, i in enumerate(positions):
                        embeddings[i] = raw[row]
        keys = [self.blobs.write(bytes(upload.data)) for upload in uploads]
        encoders = {"image": self.clip.model_id, "audio": self.clap.model_id}
        new_items = []
        for i, (media, meta) in enumerate(zip(decoded, metadata, strict=True)):
            content = {"blob": keys[i], "type": media.content_type, "name": uploads[i].filename}
            new_items.append(
                NewItem(
                    media.modality,
                    {**meta, CONTENT_KEY: content},
                    embeddings[i],
                    encoders[media.modality],
                )
            )
        with self._write_lock:
            try:
                if self._closed:
                    raise ConflictError("the service is shut down")
                stored = self.store.add_items(new_items)
            except BaseException:
                for key in keys:
                    self.blobs.remove(key)
                raise
            try:
                self._index_added(stored, new_items, timer)
            except Exception:  # committed = acknowledged: repair the derived indexes instead
                logger.exception("index update after commit failed; reconciling indexes")
                self._repair_indexes()
        for item in stored:
            ITEMS_INGESTED.labels(modality=item.modality).inc()
        return [_item_record(item) for item in stored]

    def _index_added(self, stored: list[StoredItem], new: list[Any], timer: StageTimer) -> None:
        """Caller holds the writer lock: native + every loaded version's shared index."""
        for modality in MODALITIES:
            rows = [i for i, item in enumerate(stored) if item.modality == modality]
            if not rows:
                continue
            rowids = np.array([stored[i].rowid for i in rows], dtype=np.int64)
            raw = np.stack([np.asarray(new[i].embedding, dtype=np.float32) for i in rows])
            space = MODALITY_SPACE[modality]
            with timer.stage("project"):
                shared = {v: ckpt.project(space, raw) for v, ckpt in self._loaded.items()}
            self.catalog.on_items_added(modality, rowids, raw, shared)

    def _repair_indexes(self) -> None:
        """Caller holds the writer lock: rebuild whatever index disagrees with the store."""
        self.catalog.reconcile_native(self.encoder_ids())
        for version, checkpoint in self._loaded.items():
            self.catalog.reconcile_shared(version, _projector(checkpoint), checkpoint.sha256)

    def get_item(self, item_id: str) -> ItemRecord:
        return _item_record(self.store.get(self._check_id(item_id)))

    def get_item_content(self, item_id: str) -> tuple[bytes, str]:
        item = self.store.get(self._check_id(item_id))
        content = item.metadata.get(CONTENT_KEY)
        if not isinstance(content, dict) or not isinstance(content.get("blob"), str):
            raise NotFoundError(f"item {item_id!r} has no stored original content")
        return self.blobs.read(content["blob"]), str(content.get("type") or "")

    def delete_item(self, item_id: str) -> None:
        with self._write_lock:
            item = self.store.delete(self._check_id(item_id))
            self.catalog.on_item_deleted(item.modality, item.rowid)
        content = item.metadata.get(CONTENT_KEY)
        if isinstance(content, dict) and isinstance(content.get("blob"), str):
            self.blobs.remove(content["blob"])
        ITEMS_DELETED.labels(modality=item.modality).inc()

    @staticmethod
    def _check_id(item_id: str) -> str:
        if not isinstance(item_id, str) or not item_id or len(item_id) > 128:
            raise NotFoundError(f"no item with id {item_id!r}")
        return item_id

    def seed_samples(self, samples_dir: Path) -> list[ItemRecord]:
        """Add every sample of samples_dir/manifest.jsonl in one add_items batch."""
        from bridge.media import sniff_modality
        from bridge.samples import load_samples

        samples = load_samples(samples_dir)
        if not samples:
            return []
        for sample in samples:
            found = sniff_modality(sample.upload.data, sample.upload.filename)
            if found != sample.modality:
                raise InvalidInputError(
                    f"sample {sample.metadata.get('sample_file')}: the manifest says "
                    f"{sample.modality}, the file is {found}"
                )
        records = self.add_items([s.upload for s in samples], [s.metadata for s in samples])
        logger.info("seeded %d sample items from %s", len(records), samples_dir)
        return records

    def _remove_orphan_blobs(self) -> None:
        if not self.blobs.keys():
            return
        referenced: set[str] = set()
        for modality in MODALITIES:
            rowids = self.store.snapshot(modality, with_embeddings=False).rowids
            for item in self.store.get_by_rowids(rowids).values():
                content = item.metadata.get(CONTENT_KEY)
                if isinstance(content, dict) and isinstance(content.get("blob"), str):
                    referenced.add(content["blob"])
        removed = self.blobs.remove_orphans(referenced)
        if removed:
            logger.warning("removed %d orphan blob(s) left by an interrupted upload", removed)

    # -- search --------------------------------------------------------------------------

    def search_many(self, queries: list[SearchQuery]) -> list[SearchResponse]:
        return [self.search(query) for query in queries]

    def search(self, query: SearchQuery) -> SearchResponse:
        active = self._active  # one snapshot for the whole request
        self._check_query(query)
        timer = StageTimer()
        route, vector, exclude, query_modality = self._query_vector(query, active, timer)
        if route.needs_bridge and active is None:
            raise ConflictError(
                f"{query_modality}->{query.target} search needs an active bridge version; "
                "none is active (train one with /v1/admin/retrain and activate it)"
            )
        if route.project:
            assert active is not None
            with timer.stage("project"):
                vector = active.checkpoint.project(route.source_space, vector)  # type: ignore[arg-type]
        index = (
            self._shared_index(active, query.target) if route.needs_bridge and active
            else self.catalog.native(query.target)
        )  # fmt: skip
        hits = self._ranked_hits(index, vector, query, exclude, timer) if index else []
        SEARCHES.labels(query=query_modality, space=route.space).inc()
        return SearchResponse(
            results=hits,
            space=route.space,
            bridge_version=active.version if active else None,
            query_modality=query_modality,
            timings_ms=timer.timings_ms,
        )

    def _shared_index(self, active: ActiveBridge, target: str) -> VectorIndex | None:
        """The snapshot version's shared index: the catalog's current object (it replaces the
        object when the first item of a modality arrives or a rebuild happens), else the one
        the snapshot holds (the version was unloaded by a later swap mid-request)."""
        return self.catalog.shared(active.version, target) or active.shared.get(target)

    def _check_query(self, query: SearchQuery) -> None:
        given = [
            name
            for name, value in (
                ("text", query.text),
                ("vector", query.vector),
                ("item_id", query.item_id),
                ("media", query.media),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise InvalidInputError(
                "give exactly one of text, vector (with space), item_id or a file; "
                f"got {given or 'none'}"
            )
        if query.target not in MODALITIES:
            raise InvalidInputError(f"target must be 'image' or 'audio', got {query.target!r}")
        for name, value, low in (("k", query.k, 1), ("offset", query.offset, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
        if query.k + query.offset > self.config.max_k:
            raise InvalidInputError(
                f"k + offset must be at most {self.config.max_k}, got {query.k + query.offset}"
            )
        if query.min_score is not None and not (
            isinstance(query.min_score, int | float) and np.isfinite(query.min_score)
        ):
            raise InvalidInputError(f"min_score must be a finite number, got {query.min_score!r}")
        if not isinstance(query.filters, dict):
            raise InvalidInputError("filters must be an object of metadata key -> value")
        for key, wanted in query.filters.items():
            if not isinstance(key, str) or not isinstance(wanted, str | int | float | bool):
                raise InvalidInputError(
                    f"filter {key!r}: values must be strings, numbers or booleans"
                )

    def _query_vector(
        self, query: SearchQuery, active: ActiveBridge | None, timer: StageTimer
    ) -> tuple[Route, np.ndarray, int | None, str]:
        """(route, (1, D) query vector in the route's source space, rowid to exclude, kind)."""
        if query.text is not None:
            if not isinstance(query.text, str) or not query.text.strip():
                raise InvalidInputError("text must be a non-empty string")
            route = route_text(query.target)
            with timer.stage("encode"):
                vector = self._encode_text(route.source_space, query.text)
            return route, vector, None, "text"
        if query.vector is not None:
            if query.space is None:
                raise InvalidInputError("a vector query needs `space`: 'clip', 'clap' or 'shared'")
            route = route_for_space(query.space, query.target)
            return route, self._check_vector(query.vector, query.space, active), None, "vector"
        if query.item_id is not None:
            with timer.stage("hydrate"):
                item, raw = self.store.raw_embedding(self._check_id(query.item_id))
            route = route_media(item.modality, query.target)
            return route, raw[None, :], item.rowid, item.modality
        assert query.media is not None
        with timer.stage("decode"):
            decoded = self._decode(query.media, query.media.filename or "query")
        with timer.stage("encode"):
            vector = self._encode(decoded.modality, [decoded.media])
        return route_media(decoded.modality, query.target), vector, None, decoded.modality

    def _check_vector(self, values: Any, space: str, active: ActiveBridge | None) -> np.ndarray:
        if space == "shared":
            if active is None:
                raise ConflictError("a 'shared' vector needs an active bridge version; none is")
            dim = active.checkpoint.projector_config.shared_dim
        else:
            dim = self.clip.dim if space == "clip" else self.clap.dim
        if not isinstance(values, list | tuple | np.ndarray) or len(values) != dim:
            got = len(values) if isinstance(values, list | tuple | np.ndarray) else type(values)
            raise InvalidInputError(f"a {space!r} vector must have {dim} numbers, got {got}")
        try:
            vector = np.asarray(values, dtype=np.float32).reshape(1, dim)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"vector must be a list of {dim} numbers ({exc})") from exc
        if not np.isfinite(vector).all():
            raise InvalidInputError("vector contains NaN or infinite values")
        if not np.any(vector):
            raise InvalidInputError("vector is all zeros; it has no direction to search")
        return vector

    def _ranked_hits(
        self,
        index: VectorIndex,
        vector: np.ndarray,
        query: SearchQuery,
        exclude: int | None,
        timer: StageTimer,
    ) -> list[SearchHit]:
        """Top offset+k hits after exclusion, filters and min_score; over-fetches (x4, at
        least 64 with filters) until enough hits pass or the index is exhausted."""
        want = query.offset + query.k
        total = index.ntotal
        if total == 0:
            return []
        fetch = want + (1 if exclude is not None else 0)
        if query.filters:
            fetch = max(fetch * OVERFETCH_FACTOR, OVERFETCH_MIN)
        fetch = min(fetch, total)
        while True:
            with timer.stage("search"):
                scores, ids = index.search(vector, fetch)
            with timer.stage("hydrate"):
                hits, cut = self._hydrate(scores[0], ids[0], query, exclude)
            if len(hits) >= want or cut or fetch >= total:
                return hits[query.offset : want]
            fetch = min(total, fetch * OVERFETCH_FACTOR)

    def _hydrate(
        self, scores: np.ndarray, ids: np.ndarray, query: SearchQuery, exclude: int | None
    ) -> tuple[list[SearchHit], bool]:
        """Hits in score order and whether min_score cut the list (no point fetching more)."""
        cut = False
        keep = ids >= 0
        if query.min_score is not None:
            above = scores >= query.min_score
            cut = bool((keep & ~above).any())
            keep &= above
        ids, scores = ids[keep], scores[keep]
        items = self.store.get_by_rowids(ids)
        hits: list[SearchHit] = []
        for rowid, score in zip(ids.tolist(), scores.tolist(), strict=True):
            item = items.get(rowid)
            if item is None or rowid == exclude:  # deleted meanwhile, or the query item itself
                continue
            if query.filters and not self.store.matches(item, query.filters):
                continue
            hits.append(
                SearchHit(item.id, float(score), item.modality, _public_metadata(item.metadata))
            )
        return hits, cut

    # -- versions ------------------------------------------------------------------------

    def _checkpoint_path(self, row: dict[str, Any]) -> Path:
        path = Path(row["checkpoint_dir"])
        return path if path.is_absolute() else self.data_dir / path

    def _load_checkpoint(self, path: Path, expected_sha: str | None = None) -> BridgeCheckpoint:
        from bridge.projectors import load_checkpoint

        checkpoint = load_checkpoint(path, self.device)
        config = checkpoint.projector_config
        if (config.clip_dim, config.clap_dim) != (self.clip.dim, self.clap.dim):
            raise CheckpointError(
                f"bridge {path} connects {config.clip_dim}-d CLIP and {config.clap_dim}-d CLAP "
                f"embeddings, but the encoders give {self.clip.dim}-d and {self.clap.dim}-d"
            )
        if expected_sha and checkpoint.sha256 != expected_sha:
            raise CheckpointError(
                f"bridge {path}: weights changed on disk (sha256 {checkpoint.sha256[:12]}..., "
                f"recorded {expected_sha[:12]}...)"
            )
        return checkpoint

    def _ensure_loaded(self, version: str) -> BridgeCheckpoint:
        """Caller holds the writer lock. Load the checkpoint and reconcile its shared indexes,
        unless the version is already live (its indexes follow every write)."""
        checkpoint = self._loaded.get(version)
        if checkpoint is not None:
            return checkpoint  # live: every add/delete since loading reached its indexes
        row = self.store.get_version(version)
        checkpoint = self._load_checkpoint(self._checkpoint_path(row), row.get("sha256"))
        rebuilt = self.catalog.reconcile_shared(version, _projector(checkpoint), checkpoint.sha256)
        if rebuilt:
            logger.info("version %s: rebuilt shared indexes %s", version, rebuilt)
        self._loaded[version] = checkpoint
        return checkpoint

    def _publish(self, version: str, checkpoint: BridgeCheckpoint) -> ActiveBridge:
        """Caller holds the writer lock: build the ActiveBridge of `version` and swap it in."""
        shared = {m: self.catalog.shared(version, m) for m in MODALITIES}
        bridge = ActiveBridge(version, checkpoint, MappingProxyType(shared))
        self._active = bridge  # the atomic swap
        return bridge

    def _keep_loaded(self, *versions: str | None) -> None:
        """Caller holds the writer lock: stop live-updating versions not in `versions`."""
        keep = {v for v in versions if v}
        for version in list(self._loaded):
            if version not in keep:
                del self._loaded[version]
                unload = getattr(self.catalog, "unload_version", None)
                if unload is not None:
                    unload(version)

    def list_versions(self) -> list[VersionRecord]:
        active, _ = self.store.get_active()
        return [_version_record(row, active) for row in self.store.list_versions()]

    def activate(self, version: str) -> VersionRecord:
        """Make a ready version active (ConflictError otherwise); persisted, then swapped."""
        if not isinstance(version, str) or not version:
            raise InvalidInputError("version must be a non-empty string")
        with self._write_lock:
            row = self.store.get_version(version)
            if row["status"] != "ready":
                raise ConflictError(
                    f"bridge version {version!r} is {row['status']!r}; only a ready one can be "
                    "activated"
                )
            old = self._active
            checkpoint = self._ensure_loaded(version)
            self.store.set_active(version, allowed_statuses=("ready",))
            self._publish(version, checkpoint)
            self._keep_loaded(*self.store.get_active())  # active and previous stay live
            logger.info("activated bridge version %s (was %s)", version, old and old.version)
        return _version_record(self.store.get_version(version), version)

    def rollback(self) -> VersionRecord:
        """Back to the previously active version; ConflictError if there is none."""
        with self._write_lock:
            _, previous = self.store.get_active()
            if previous is None:
                raise ConflictError("no previously active bridge version to roll back to")
            return self.activate(previous)

    def _fail_interrupted_versions(self) -> None:
        for row in self.store.list_versions():
            if row["status"] == "training":
                self.store.update_version(
                    row["version"],
                    status="failed",
                    metrics={"error": "interrupted: the service stopped during training"},
                )
                remove_version_dir(self.catalog.version_dir(row["version"]))

    def _register_initial_bridge(self) -> None:
        """Copy config.initial_bridge into versions/v1/checkpoint and activate it, once."""
        if self.config.initial_bridge is None or self.store.list_versions():
            return
        source = Path(self.config.initial_bridge)
        if not source.is_dir():
            raise CheckpointError(f"initial bridge folder not found: {source}")
        self._load_checkpoint(source)  # validates files and dimensions before copying
        dest = self.catalog.version_dir(INITIAL_VERSION) / "checkpoint"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".checkpoint."))
        shutil.rmtree(tmp)
        shutil.copytree(source, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        checkpoint = self._load_checkpoint(dest)
        self.store.add_version(
            INITIAL_VERSION,
            str(dest.relative_to(self.data_dir)),
            "ready",
            checkpoint.sha256,
            {"source": str(source), "report": _report_summary(checkpoint.report)},
        )
        self.store.set_active(INITIAL_VERSION)

    # -- retrain -------------------------------------------------------------------------

    def _next_version(self) -> str:
        numbers = [
            int(m.group(1))
            for row in self.store.list_versions()
            if (m := re.fullmatch(r"v(\d+)", row["version"]))
        ]
        return f"v{max(numbers, default=0) + 1}"

    def start_retrain(self, request: RetrainRequest) -> JobRecord:
        """Validate, then train in the background (ConflictError while a job runs)."""
        if self._jobs.busy():
            raise ConflictError("a job is already running (one at a time); retry when it ends")
        active = self._active
        version = self._next_version()
        plan = plan_retrain(
            request,
            self.data_dir,
            version,
            active.checkpoint.projector_config if active else None,
            self.device,
        )

        def work(ctx: JobContext) -> dict[str, Any]:
            self.store.add_version(
                version, str(Path("versions") / version / "checkpoint"), "training", None, {}
            )
            return run_retrain(ctx, plan, self)

        def on_failure(exc: BaseException) -> None:
            with self._write_lock:
                self._loaded.pop(version, None)
                unload = getattr(self.catalog, "unload_version", None)
                if unload is not None:
                    unload(version)
            try:
                row = self.store.get_version(version)
            except NotFoundError:
                return
            if row["status"] == "training":
                self.store.update_version(version, status="failed", metrics={"error": str(exc)})
                remove_version_dir(self.catalog.version_dir(version))

        return self._jobs.submit("retrain", plan.params, work, on_failure)

    def get_job(self, job_id: str) -> JobRecord:
        if not isinstance(job_id, str) or not job_id:
            raise NotFoundError(f"no job with id {job_id!r}")
        return self._jobs.get(job_id)

    # RetrainEnv (bridge/jobs.py) --------------------------------------------------------

    def encode_captions(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        with self._encode_slots:
            return self.clip.encode_text(captions), self.clap.encode_text(captions)

    def stored_memory(self, modality: str) -> np.ndarray | None:
        _, raw = self.store.raw_embeddings(modality)
        return raw if len(raw) else None

    def memory_dims(self) -> tuple[int, int]:
        return self.clip.dim, self.clap.dim

    def checkpoint_dir(self, version: str) -> Path:
        return self.catalog.version_dir(version) / "checkpoint"

    def install_version(self, version: str, checkpoint_dir: Path, ctx: JobContext) -> Any:
        """Re-project every stored item into new shared indexes, then make them live."""
        checkpoint = self._load_checkpoint(checkpoint_dir)
        self.store.update_version(version, sha256=checkpoint.sha256)
        self.catalog.build_shared(version, _projector(checkpoint), checkpoint.sha256)
        ctx.progress(0.9, "shared indexes built")
        with self._write_lock:  # catch items added or deleted while building
            self.catalog.reconcile_shared(version, _projector(checkpoint), checkpoint.sha256)
            self._loaded[version] = checkpoint
        return checkpoint

    def evaluate_version(
        self, checkpoint: Any, held_out: tuple[np.ndarray, np.ndarray]
    ) -> dict[str, Any]:
        """Caption-pair retrieval on the held-out captions; class-level audio<->image on
        stored items when both modalities carry a `label` metadata key."""
        from bridge.evaluate import cross_modal_metrics, retrieval_metrics

        clip_text, clap_text = held_out
        shared_clip = checkpoint.project("clip", clip_text)
        shared_clap = checkpoint.project("clap", clap_text)
        metrics: dict[str, Any] = {
            "captions": {
                "clap_to_clip": retrieval_metrics(shared_clap, shared_clip),
                "clip_to_clap": retrieval_metrics(shared_clip, shared_clap),
            }
        }
        labelled = {m: self._labelled_sample(m) for m in MODALITIES}
        image, audio = labelled["image"], labelled["audio"]
        if image is not None and audio is not None:
            metrics["stored_items_by_label"] = cross_modal_metrics(
                checkpoint.project("clip", image[0]),
                checkpoint.project("clap", audio[0]),
                image[1],
                audio[1],
            )
        return metrics

    def _labelled_sample(self, modality: str) -> tuple[np.ndarray, list[str]] | None:
        cap = 5000 if modality == "image" else 500
        rowids = self.store.snapshot(modality, with_embeddings=False).rowids
        if len(rowids) > cap:
            rowids = np.sort(np.random.default_rng(0).choice(rowids, cap, replace=False))
        items = self.store.get_by_rowids(rowids)
        chosen = [r for r, item in sorted(items.items()) if EVAL_LABEL_KEY in item.metadata]
        if len(chosen) < 2:
            return None
        raw = self.store.raw_embeddings_for(modality, chosen)
        return raw, [str(items[r].metadata[EVAL_LABEL_KEY]) for r in chosen]

    def mark_ready(self, version: str, sha256: str, metrics: dict[str, Any]) -> None:
        self.store.update_version(version, status="ready", sha256=sha256, metrics=metrics)


def _projector(checkpoint: BridgeCheckpoint) -> Callable[[str, np.ndarray], np.ndarray]:
    """checkpoint.project as the catalog's ProjectFn (space names are checked by the model)."""

    def project(space: str, raw: np.ndarray) -> np.ndarray:
        return checkpoint.project(space, raw)  # type: ignore[arg-type]

    return project


def _report_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The parts of a checkpoint's report.json worth showing in the version list."""
    keys = ("data", "final", "metrics", "wall_seconds", "device")
    return {k: report[k] for k in keys if k in report}
