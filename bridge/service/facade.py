"""The engine facade that app/ and the CLI call: ingest, search, versions, retrain.

It wires the use cases of this package together and owns their shared state (the store, the
index catalog, the writer lock, the active bridge):
  bridge/service/ingest.py     add / delete items (decode, encode, blobs, store, indexes)
  bridge/service/search.py     query checks, query vectors, routing, ranked and hydrated hits
  bridge/service/versions.py   checkpoints, live shared indexes, activate / rollback
  bridge/service/retrain.py    the retrain pipeline (plan, train, evaluate, install, activate)
  bridge/service/jobs.py       the one-at-a-time background job runner
  bridge/service/catalog.py    native and per-version FAISS indexes, reconciled with the store
Paths under the data directory: bridge/storage/layout.py. The request and retrain paths as
lists of modules: docs/architecture.md.

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

import dataclasses
import logging
import os
import shutil
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.encode.pair import Decoded, EncoderPair
from bridge.errors import BridgeError, ConflictError, NotFoundError
from bridge.index.vectors import faiss_summary
from bridge.modalities import MODALITIES, native_index_name, shared_index_name
from bridge.service.evaluation import EVAL_LABEL_KEY
from bridge.service.ingest import Ingest
from bridge.service.jobs import JobContext, JobRunner
from bridge.service.records import check_item_id, item_record
from bridge.service.repair import IndexRepair
from bridge.service.replicas import ReplicaFollower
from bridge.service.retrain import RetrainPipeline, RetrainProgress
from bridge.service.retrain_plan import RetrainPlan, check_memory_header
from bridge.service.search import OVERFETCH_FACTOR, OVERFETCH_MIN, Searcher
from bridge.service.versions import INITIAL_VERSION, ActiveBridge, Versions, shared_index
from bridge.storage.blobs import CONTENT_KEY, BlobStore, content_ref
from bridge.storage.layout import DataLayout, DirectoryLock
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
    from bridge.index.backends import SearchIndex
    from bridge.service.catalog import IndexCatalog
    from bridge.storage.items import ItemStore

# Names other code may import from here.
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

# Replicas: a blob no item names is an orphan only once no upload can still be committing it.
ORPHAN_BLOB_MIN_AGE_SECONDS = 3600.0
# The job params key that records a retrain's request, so that another replica can rerun it.
RESUMABLE_REQUEST = "request"


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
        self.layout = DataLayout(self.data_dir)
        self.store = store
        self.catalog = catalog
        self.clip = clip
        self.clap = clap
        self.device = resolve_device(config.device)
        self.blobs = BlobStore(self.layout.blobs_dir)
        self._write_lock = threading.RLock()
        self._encoders = EncoderPair(clip, clap, config.encode_threads, config.max_audio_seconds)
        self._versions = Versions(
            self.layout,
            store,
            catalog,
            self.device,
            self._encoders.dims(),
            self._write_lock,
            self._encoders.encoder_ids(),
            config.keep_previous_seconds,
        )
        # After a backend failure the indexes catch up with the store in the background.
        self._repair = IndexRepair(self._repair_indexes)
        self._ingest = Ingest(
            store,
            catalog,
            self.blobs,
            self._encoders,
            self._versions,
            self._write_lock,
            lambda: self._closed,
            self._repair,
        )
        self._searcher = Searcher(store, catalog, self._encoders, config.max_k)
        self._retrain = RetrainPipeline(
            self.layout, store, self._encoders, self._versions, self.device
        )
        self._jobs = JobRunner(store)
        # Replicas sharing the data directory (bridge/service/replicas.py): None when alone.
        self._follower = ReplicaFollower(self._follow_replicas) if catalog.replicated else None
        self._dir_lock: DirectoryLock | None = None
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
        """Take the data directory (ConflictError when another process serves it), load
        encoders and the store, fail interrupted jobs, register the initial bridge, reconcile
        native and active shared indexes, remove orphan blobs, seed samples.

        `clip`/`clap`: already loaded encoders to reuse (tests, benchmarks); by default they
        are loaded from config.clip_model / config.clap_model.
        """
        from bridge.encode.encoders import load_encoder
        from bridge.index.backends import make_backend
        from bridge.index.vectors import configure_search_threads, configure_threads
        from bridge.service.catalog import IndexCatalog
        from bridge.storage.items import ItemStore

        layout = DataLayout(Path(config.data_dir))
        layout.root.mkdir(parents=True, exist_ok=True)
        dir_lock = layout.lock(shared=config.shares_indexes)
        try:
            configure_threads(config.faiss_threads or None)
            configure_search_threads(config.search_threads or None)
            clip = clip or load_encoder("clip", config.clip_model, config.device)
            clap = clap or load_encoder("clap", config.clap_model, config.device)
            store = ItemStore(config.database_url or layout.store_file, config.store_busy_timeout)
        except BaseException:
            dir_lock.release()
            raise
        backend = service = None
        try:
            backend = make_backend(config, store.store_id)
            catalog = IndexCatalog(layout.root, store, config.index_type, backend=backend)
            service = cls(config, store, catalog, clip, clap)
            service._dir_lock = dir_lock
            service._start()
        except BaseException:
            if service is not None:  # its threads, if any started
                service._jobs.close()
                service._repair.close()
                if service._follower is not None:
                    service._follower.close()
            if backend is not None:
                backend.close()
            store.close()
            dir_lock.release()
            raise
        return service

    def _start(self) -> None:
        logger.info("%s", faiss_summary())
        replicated = self._follower is not None
        # Replicas starting together take turns here (the catalog's lock is then a file lock),
        # so the first one alone registers the initial bridge and seeds the samples.
        with self.catalog.lock:
            if not replicated:  # replicas: the follower takes a dead one's job over first
                self.store.fail_interrupted_jobs()
            if not replicated or (self.store.live_job() is None and not self.store.stale_jobs()):
                # Another replica's job (running, or to be taken over) needs its uploads.
                self._remove_spent_uploads()
                self._versions.fail_interrupted()
            self._versions.register_initial(self.config.initial_bridge)
            rebuilt = self.catalog.reconcile_native(self.encoder_ids())
            if rebuilt:
                logger.info("rebuilt native indexes: %s", rebuilt)
            with self._write_lock:  # a damaged checkpoint: the previous version, or none
                self._versions.serve_at_start()
            # Another replica may be between writing a blob and committing its item.
            self._ingest.remove_orphan_blobs(ORPHAN_BLOB_MIN_AGE_SECONDS if replicated else 0.0)
            self.catalog.sweep_backend()
            if self.config.samples_dir is not None and self.store.count() == 0:
                self.seed_samples(Path(self.config.samples_dir))
        if self._follower is not None:
            self._follower.start()
        self._ready = True

    def _follow_replicas(self, check_jobs: bool) -> None:
        """One pass of the replica follower (bridge/service/replicas.py)."""
        if self._closed:
            return
        self.catalog.refresh()
        with self._write_lock:
            self._versions.follow_active()
        if not check_jobs:
            return
        self._take_over_stale_jobs()
        if self.store.fail_interrupted_jobs(stale_only=True) and self.store.live_job() is None:
            self._versions.fail_interrupted()  # the dead job's version was training

    def close(self) -> None:
        """Stop the job thread, save every index, close the store, free the directory.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._ready = False
        self._jobs.close()
        self._repair.close()
        if self._follower is not None:
            self._follower.close()
        self._versions.close()
        with self._write_lock:
            try:
                self.catalog.save_all()
            finally:
                self.catalog.close_backend()
                self.store.close()
                if self._dir_lock is not None:
                    self._dir_lock.release()

    def __enter__(self) -> BridgeService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def readiness(self) -> dict[str, Any]:
        active = self._active
        indexes: dict[str, int | None] = {}

        def rows(index: SearchIndex | None, absent: int | None) -> int | None:
            if index is None:
                return absent
            try:
                return index.ntotal  # a shared Milvus collection's count asks Milvus
            except BridgeError:
                return None  # unknown while the backend is away (backend says so)

        for modality in MODALITIES:
            indexes[native_index_name(modality)] = rows(self.catalog.native(modality), 0)
            shared = shared_index(self.catalog, active, modality) if active else None
            indexes[shared_index_name(modality)] = rows(shared, None)
        backend = self.catalog.backend.status(self.catalog.indexes())
        backend["repair_pending"] = self._repair.pending
        return {
            "ready": self._ready
            and not self._closed
            and bool(backend["reachable"] and backend["serving"])
            and not self._repair.pending,
            "backend": backend,
            "encoders": {
                enc.kind: {"model": enc.model_id, "dim": enc.dim, "device": enc.device}
                for enc in (self.clip, self.clap)
            },
            "indexes": indexes,
            "items": self.store.count(),
            "active_version": active.version if active else None,
            "active_mode": active.mode if active else None,
            "job_running": self._jobs.busy(),
            "replica": {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "shared": self._follower is not None,  # one of several (replicas.py)
            },
        }

    def encoder_ids(self) -> dict[str, str]:
        return self._encoders.encoder_ids()

    # -- items (bridge/service/ingest.py) ----------------------------------------------------

    def _decode(self, upload: Upload, label: str) -> Decoded:
        return self._encoders.decode(upload, label)

    def _encode(self, modality: str, media: Sequence[Any]) -> np.ndarray:
        """(N, D) raw embeddings with the modality's tower (bounded concurrency)."""
        return self._encoders.encode(modality, media)

    def add_items(self, uploads: list[Upload], metadata: list[dict[str, Any]]) -> list[ItemRecord]:
        """Decode, encode and commit the uploads in one transaction (all or nothing)."""
        return self._ingest.add(uploads, metadata)

    def get_item(self, item_id: str) -> ItemRecord:
        return item_record(self.store.get(check_item_id(item_id)))

    def get_item_content(self, item_id: str) -> tuple[bytes, str]:
        item = self.store.get(check_item_id(item_id))
        content = content_ref(item.metadata)
        if content is None:
            raise NotFoundError(f"item {item_id!r} has no stored original content")
        return self.blobs.read(content["blob"]), str(content.get("type") or "")

    def delete_item(self, item_id: str) -> None:
        self._ingest.delete(item_id)

    def seed_samples(self, samples_dir: Path) -> list[ItemRecord]:
        """Add every sample of samples_dir/manifest.jsonl in one add_items batch."""
        return self._ingest.seed_samples(samples_dir)

    # -- search (bridge/service/search.py) -------------------------------------------------------

    def search_many(self, queries: list[SearchQuery]) -> list[SearchResponse]:
        """All answers, or the first query's error (the batch endpoint's all-or-nothing)."""
        answers = self.search_each(queries)
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
        return answers  # type: ignore[return-value]

    def _repair_indexes(self) -> None:
        with self._write_lock:
            self._ingest.repair_indexes()

    def search_each(self, queries: list[SearchQuery]) -> list[SearchResponse | Exception]:
        """Answer independent queries in one call: those on the same index share one FAISS
        search; a query's error is returned in its slot, not raised (app/batcher.py). All
        use one snapshot of the active bridge."""
        self._repair.check()
        return self._searcher.search_each(queries, self._active)

    def search(self, query: SearchQuery) -> SearchResponse:
        self._repair.check()
        return self._searcher.search(query, self._active)  # one snapshot for the whole request

    def query_dims(self) -> dict[str, int]:
        """The length of a query vector in each space: "clip", "clap" and, while a bridge is
        active, "shared" (the served OpenAPI states them: app/openapi.py)."""
        clip, clap = self._encoders.dims()
        dims = {"clip": clip, "clap": clap}
        active = self._active
        if active is not None:
            dims["shared"] = active.checkpoint.projector_config.shared_dim
        return dims

    def is_quick(self, query: SearchQuery) -> bool:
        """Whether answering ``query`` is short and needs no encoder: a vector or stored-item
        query whose exact scans stay small (bridge/service/search.py, QUICK_FLAT_ITEMS)."""
        return self._searcher.is_quick(query, self._active)

    # -- versions (bridge/service/versions.py) -----------------------------------------------

    def list_versions(self) -> list[VersionRecord]:
        return self._versions.records()

    def activate(self, version: str) -> VersionRecord:
        """Make a ready version active (ConflictError otherwise); persisted, then swapped."""
        return self._versions.activate(version)

    def rollback(self) -> VersionRecord:
        """Back to the previously active version; ConflictError if there is none."""
        return self._versions.rollback()

    # -- retrain (bridge/service/retrain.py) -------------------------------------------------

    def start_retrain(self, request: RetrainRequest) -> JobRecord:
        """Check the request, then run the retrain pipeline in the background (one job at a
        time: ConflictError while one runs). Answers the job record at once."""
        if self._jobs.busy():
            raise ConflictError("a job is already running (one at a time); retry when it ends")
        plan = self._retrain.plan(request)

        def work(ctx: JobContext) -> dict[str, Any]:
            return self._retrain.run(plan, ctx.progress)

        # The request itself, for a replica that takes the job over if this one dies.
        params = {**plan.params, RESUMABLE_REQUEST: dataclasses.asdict(request)}
        return self._jobs.submit("retrain", params, work)

    def _take_over_stale_jobs(self) -> None:
        """Replicas: rerun a retrain whose replica died (its heartbeat stopped), from the
        request its job recorded, under the same job id; its half-trained version fails.
        A job that cannot be rerun (no recorded request, or this replica is busy) is left
        for fail_interrupted_jobs."""
        for row in self.store.stale_jobs():
            request = row["params"].get(RESUMABLE_REQUEST)
            if row["kind"] != "retrain" or request is None or self._jobs.busy():
                continue
            replica = f"{socket.gethostname()}:{os.getpid()}"
            if not self.store.claim_stale_job(row["id"], f"taken over by {replica}"):
                continue  # another replica was first
            self._versions.fail_interrupted()  # the dead replica's version (one job at a time)
            try:
                plan = self._retrain.plan(RetrainRequest(**request))
            except Exception as exc:  # the inputs are gone or no longer valid
                self.store.update_job(
                    row["id"], status="failed", message="failed", error=f"taken over: {exc}"
                )
                continue

            def work(ctx: JobContext, plan: RetrainPlan = plan) -> dict[str, Any]:
                return self._retrain.run(plan, ctx.progress)

            # The rerun trains a version of its own name (the dead one's has failed).
            self.store.update_job(row["id"], params={**plan.params, RESUMABLE_REQUEST: request})
            logger.warning("taking over job %s of a replica that stopped", row["id"])
            self._jobs.resume(row["id"], "retrain", work)

    def retrain(self, request: RetrainRequest, progress: RetrainProgress) -> dict[str, Any]:
        """The same pipeline in the caller's thread (`mbridge retrain`); returns
        {"version", "metrics"}. A failure marks the version failed and is raised."""
        live = self.store.live_job()  # a job of this process, or of another replica
        if self._jobs.busy() or live is not None:
            raise ConflictError(
                f"a job ({live or 'of this process'}) is already running (one at a time); "
                "retry when it ends"
            )
        return self._retrain.run(self._retrain.plan(request), progress)

    def retrain_upload_dir(self) -> Path:
        """A fresh folder for one multipart retrain's uploaded files (not yet created); give
        it back as RetrainRequest.inputs_dir so that the job removes it when it ends."""
        return self.layout.new_upload_dir()

    def check_memory_file(self, path: Path, what: str) -> None:
        """An uploaded memory .npy: readable, 2-D float, N >= 1 (the width is checked against
        the encoder when the retrain is planned)."""
        check_memory_header(path, what, None)

    def get_job(self, job_id: str) -> JobRecord:
        if not isinstance(job_id, str) or not job_id:
            raise NotFoundError(f"no job with id {job_id!r}")
        return self._jobs.get(job_id)

    def _remove_spent_uploads(self) -> None:
        """Retrain uploads whose job a crash interrupted (failed on start), or that a crash
        left before their job existed: no job can run yet, so none is still needed."""
        folders = sorted(self.layout.uploads_dir.glob("*"))
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        if folders:
            logger.warning("removed %d retrain upload folder(s) left by a crash", len(folders))
