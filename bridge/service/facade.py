"""The engine facade that app/ (and the CLI) call: ingest, search, versions, retrain jobs.

The work is done by small modules this facade wires together:
  bridge/encode/pair.py    decode uploads, encode media and text (bounded encode slots)
  bridge/storage/blobs.py     original upload bytes (BlobStore) and the item's content reference
  bridge/service/records.py   store rows -> ItemRecord / VersionRecord (content reference hidden)
  bridge/service/search.py    query checks, query vectors, routing, ranked and hydrated hits
  bridge/service/versions.py  checkpoints, live shared indexes, activate / rollback, registration,
                      evaluation of a freshly trained version
  bridge/service/jobs.py      retrain planning and the one-at-a-time job runner

Data flow (architecture.md):
  ingest: sniff + decode -> encode (CLIP image / CLAP audio tower) -> original bytes written to
          data_dir/blobs/ -> ONE store transaction commits items + raw embeddings (this is the
          acknowledgement) -> native index updated, and each loaded bridge version's shared
          index updated with the projected rows.
  search: decode/encode the query (or take a raw vector / a stored item's raw embedding) ->
          route (bridge/service/routing.py) -> project with the active bridge when the route is
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

import logging
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.encode.pair import Decoded, Towers
from bridge.errors import ConflictError, InvalidInputError, NotFoundError
from bridge.index.vectors import faiss_summary
from bridge.modalities import MODALITIES, MODALITY_SPACE
from bridge.service.jobs import UPLOADS_DIR, JobContext, JobRunner, plan_retrain, run_retrain
from bridge.service.records import check_item_id, item_record
from bridge.service.search import OVERFETCH_FACTOR, OVERFETCH_MIN, Searcher
from bridge.service.versions import (
    EVAL_LABEL_KEY,
    INITIAL_VERSION,
    ActiveBridge,
    Versions,
    evaluate_checkpoint,
    projector,
    shared_index,
)
from bridge.storage.blobs import CONTENT_KEY, BlobStore, content_ref
from bridge.telemetry import ITEMS_DELETED, ITEMS_INGESTED, StageTimer
from bridge.types import (
    ItemRecord,
    JobRecord,
    RetrainRequest,
    SearchQuery,
    SearchResponse,
    ServiceConfig,
    Upload,
    VersionRecord,
)

if TYPE_CHECKING:
    from bridge.encode.encoders import Encoder
    from bridge.service.catalog import IndexCatalog
    from bridge.storage.items import ItemStore, StoredItem

# Names other code may import from here (the split kept them reachable).
__all__ = [
    "CONTENT_KEY",
    "EVAL_LABEL_KEY",
    "INITIAL_VERSION",
    "MODALITIES",
    "OVERFETCH_FACTOR",
    "OVERFETCH_MIN",
    "ActiveBridge",
    "BlobStore",
    "BridgeService",
]

logger = logging.getLogger(__name__)


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
        from bridge.model.devices import resolve_device

        self.config = config
        self.data_dir = Path(config.data_dir)
        self.store = store
        self.catalog = catalog
        self.clip = clip
        self.clap = clap
        self.device = resolve_device(config.device)
        self.blobs = BlobStore(self.data_dir / "blobs")
        self._write_lock = threading.RLock()
        self._towers = Towers(clip, clap, config.encode_threads, config.max_audio_seconds)
        self._versions = Versions(
            self.data_dir, store, catalog, self.device, self._towers.dims(), self._write_lock
        )
        self._searcher = Searcher(store, catalog, self._towers, config.max_k)
        self._jobs = JobRunner(store)
        self._closed = False
        self._ready = False

    @property
    def _active(self) -> ActiveBridge | None:
        """The current ActiveBridge (one attribute read: take it once per request)."""
        return self._versions.active

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
        from bridge.encode.encoders import load_encoder
        from bridge.service.catalog import IndexCatalog
        from bridge.storage.items import ItemStore

        data_dir = Path(config.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        from bridge.index.vectors import configure_search_threads, configure_threads

        configure_threads(config.faiss_threads or None)
        configure_search_threads(config.search_threads or None)
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
        logger.info("%s", faiss_summary())
        self.store.fail_interrupted_jobs()
        self._remove_spent_uploads()
        self._versions.fail_interrupted()
        self._versions.register_initial(self.config.initial_bridge)
        rebuilt = self.catalog.reconcile_native(self.encoder_ids())
        if rebuilt:
            logger.info("rebuilt native indexes: %s", rebuilt)
        active, _ = self.store.get_active()
        if active is not None:
            with self._write_lock:
                self._versions.publish(active, self._versions.ensure_loaded(active))
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
            shared = shared_index(self.catalog, active, modality) if active else None
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

    def _decode(self, upload: Upload, label: str) -> Decoded:
        return self._towers.decode(upload, label)

    def _encode(self, modality: str, media: Sequence[Any]) -> np.ndarray:
        """(N, D) raw embeddings with the modality's tower (bounded concurrency)."""
        return self._towers.encode(modality, media)

    def add_items(self, uploads: list[Upload], metadata: list[dict[str, Any]]) -> list[ItemRecord]:
        """Decode, encode and commit the uploads in one transaction (all or nothing)."""
        from bridge.storage.items import NewItem

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
                self._towers.decode(upload, f"file {i} ({upload.filename or 'upload'})")
                for i, upload in enumerate(uploads)
            ]
        embeddings: dict[int, np.ndarray] = {}
        with timer.stage("encode"):
            for modality in MODALITIES:
                positions = [i for i, d in enumerate(decoded) if d.modality == modality]
                if positions:
                    raw = self._towers.encode(modality, [decoded[i].media for i in positions])
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
        return [item_record(item) for item in stored]

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
                shared = {v: ckpt.project(space, raw) for v, ckpt in self._versions.loaded.items()}
            self.catalog.on_items_added(modality, rowids, raw, shared)

    def _repair_indexes(self) -> None:
        """Caller holds the writer lock: rebuild whatever index disagrees with the store."""
        self.catalog.reconcile_native(self.encoder_ids())
        for version, checkpoint in self._versions.loaded.items():
            self.catalog.reconcile_shared(version, projector(checkpoint), checkpoint.sha256)

    def get_item(self, item_id: str) -> ItemRecord:
        return item_record(self.store.get(check_item_id(item_id)))

    def get_item_content(self, item_id: str) -> tuple[bytes, str]:
        item = self.store.get(check_item_id(item_id))
        content = content_ref(item.metadata)
        if content is None:
            raise NotFoundError(f"item {item_id!r} has no stored original content")
        return self.blobs.read(content["blob"]), str(content.get("type") or "")

    def delete_item(self, item_id: str) -> None:
        with self._write_lock:
            item = self.store.delete(check_item_id(item_id))
            self.catalog.on_item_deleted(item.modality, item.rowid)
        content = content_ref(item.metadata)
        if content is not None:
            self.blobs.remove(content["blob"])
        ITEMS_DELETED.labels(modality=item.modality).inc()

    def seed_samples(self, samples_dir: Path) -> list[ItemRecord]:
        """Add every sample of samples_dir/manifest.jsonl in one add_items batch."""
        from bridge.encode.media import sniff_modality
        from bridge.service.samples import load_samples

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

    def _remove_spent_uploads(self) -> None:
        """Retrain uploads whose job a crash interrupted (failed just above), or that a crash
        left before their job existed: no job can run yet, so none is still needed."""
        folders = sorted((self.data_dir / UPLOADS_DIR).glob("*"))
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        if folders:
            logger.warning("removed %d retrain upload folder(s) left by a crash", len(folders))

    def _remove_orphan_blobs(self) -> None:
        if not self.blobs.keys():
            return
        referenced: set[str] = set()
        for modality in MODALITIES:
            rowids = self.store.snapshot(modality, with_embeddings=False).rowids
            for item in self.store.get_by_rowids(rowids).values():
                content = content_ref(item.metadata)
                if content is not None:
                    referenced.add(content["blob"])
        removed = self.blobs.remove_orphans(referenced)
        if removed:
            logger.warning("removed %d orphan blob(s) left by an interrupted upload", removed)

    # -- search (bridge/service/search.py) -------------------------------------------------------

    def search_many(self, queries: list[SearchQuery]) -> list[SearchResponse]:
        """All answers, or the first query's error (the batch endpoint's all-or-nothing)."""
        answers = self.search_each(queries)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers  # type: ignore[return-value]

    def search_each(self, queries: list[SearchQuery]) -> list[SearchResponse | Exception]:
        """Answer independent queries in one call: those on the same index share one FAISS
        search; a query's error is returned in its slot, not raised (app/batcher.py). All
        use one snapshot of the active bridge."""
        return self._searcher.search_each(queries, self._active)

    def search(self, query: SearchQuery) -> SearchResponse:
        return self._searcher.search(query, self._active)  # one snapshot for the whole request

    def is_quick(self, query: SearchQuery) -> bool:
        """Whether answering ``query`` is short and needs no encoder: a vector or stored-item
        query whose exact scans stay small (bridge/service/search.py, QUICK_FLAT_ITEMS)."""
        return self._searcher.is_quick(query, self._active)

    # -- versions (bridge/service/versions.py) ---------------------------------------------------

    def list_versions(self) -> list[VersionRecord]:
        return self._versions.records()

    def activate(self, version: str) -> VersionRecord:
        """Make a ready version active (ConflictError otherwise); persisted, then swapped."""
        return self._versions.activate(version)

    def rollback(self) -> VersionRecord:
        """Back to the previously active version; ConflictError if there is none."""
        return self._versions.rollback()

    # -- retrain -------------------------------------------------------------------------

    def start_retrain(self, request: RetrainRequest) -> JobRecord:
        """Validate, then train in the background (ConflictError while a job runs)."""
        if self._jobs.busy():
            raise ConflictError("a job is already running (one at a time); retry when it ends")
        active = self._active
        version = self._versions.next_version()
        plan = plan_retrain(
            request,
            self.data_dir,
            version,
            active.checkpoint.projector_config if active else None,
            self.device,
            self.memory_dims(),
        )

        def work(ctx: JobContext) -> dict[str, Any]:
            self.store.add_version(
                version, str(Path("versions") / version / "checkpoint"), "training", None, {}
            )
            try:
                return run_retrain(ctx, plan, self)
            finally:  # uploaded inputs are spent (their captions stay in the checkpoint)
                if plan.inputs_dir is not None:
                    shutil.rmtree(plan.inputs_dir, ignore_errors=True)

        def on_failure(exc: BaseException) -> None:
            self._versions.fail_training(version, exc)

        return self._jobs.submit("retrain", plan.params, work, on_failure)

    def get_job(self, job_id: str) -> JobRecord:
        if not isinstance(job_id, str) or not job_id:
            raise NotFoundError(f"no job with id {job_id!r}")
        return self._jobs.get(job_id)

    # RetrainEnv (bridge/service/jobs.py) --------------------------------------------------------

    def encode_captions(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self._towers.encode_captions(captions)

    def stored_memory(self, modality: str) -> np.ndarray | None:
        _, raw = self.store.raw_embeddings(modality)
        return raw if len(raw) else None

    def memory_dims(self) -> tuple[int, int]:
        return self._towers.dims()

    def checkpoint_dir(self, version: str) -> Path:
        return self.catalog.version_dir(version) / "checkpoint"

    def install_version(self, version: str, checkpoint_dir: Path, ctx: JobContext) -> Any:
        """Re-project every stored item into new shared indexes, then make them live."""
        return self._versions.install(version, checkpoint_dir, ctx)

    def evaluate_version(
        self, checkpoint: Any, held_out: tuple[np.ndarray, np.ndarray]
    ) -> dict[str, Any]:
        """Caption-pair retrieval on the held-out captions; class-level audio<->image on
        stored items when both modalities carry a `label` metadata key."""
        return evaluate_checkpoint(self.store, checkpoint, held_out)

    def mark_ready(self, version: str, sha256: str, metrics: dict[str, Any]) -> None:
        self.store.update_version(version, status="ready", sha256=sha256, metrics=metrics)
