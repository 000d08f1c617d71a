"""The vector indexes of one data directory, and their reconciliation with the item store.

Paths: bridge/storage/layout.py (native/<space>_<modality>/, versions/<version>/shared_<modality>/).

The backend (bridge/index/backends.py) holds the vectors: with FAISS each index directory
holds index.faiss, ids.npy, tombstones.npy and manifest.json (bridge/index/vectors.py); with
Milvus only manifest.json, naming the collection (bridge/index/milvus.py). Index ids are the
store's rowids.

Consistency: the store commits first; indexes follow (``on_items_added``/``on_item_deleted``) and
are saved after builds and at ``close()``/``save_all()``. After a crash an index on disk may lag
the store. ``reconcile_*`` compares the manifest (fingerprint, encoder, checkpoint hash, kind)
and the index's id set with the store's rowids, then either syncs incrementally (adds the
missing rows from their stored raw embeddings, removes ids the store no longer has) or, when the
encoder/checkpoint/kind/store differ or more than half the rows would change, rebuilds from the
store. The id-set comparison makes the check exact even if a save raced with an ingest.

Every mutation of the catalog takes one re-entrant lock; searches never take it: they get an
index object (``native``/``shared``) and use its own readers-writer lock. Rebuilt indexes replace
the old object by one reference assignment, so a search holding the old object finishes on it.

Replicas (a backend whose indexes several processes share: a Milvus server) share the data
directory. The lock is then also a file lock (``<data_dir>/.catalog.lock``), so one replica at
a time changes the indexes; manifests are written only when an index is built (they name its
collection; counts in them are informational), and ``refresh`` loads whatever another replica
built since, at the start of every mutation and from the service's watcher
(docs/architecture.md, "Replicas").
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import ConflictError, InvalidInputError, NotFoundError
from bridge.index.backends import FaissBackend, SearchIndex, VectorBackend
from bridge.index.files import MANIFEST_FILE
from bridge.index.vectors import INDEX_KINDS, IndexCorruptError
from bridge.modalities import (
    MODALITIES,
    MODALITY_SPACE,
    check_modality,
    native_index_name,
    shared_index_name,
)
from bridge.storage.items import ItemStore
from bridge.storage.layout import VERSIONS_DIR, DataLayout, check_version_name
from bridge.storage.locks import CrossProcessRLock

logger = logging.getLogger(__name__)

ProjectFn = Callable[[str, np.ndarray], np.ndarray]

NATIVE_NAMES = {m: native_index_name(m) for m in MODALITIES}
SHARED_NAMES = {m: shared_index_name(m) for m in MODALITIES}
PROJECT_CHUNK = 1024  # rows per projector call: its activations stay a few MB
INCREMENTAL_MAX_FRACTION = 0.5


def project_in_chunks(project: ProjectFn, space: str, raw: np.ndarray) -> np.ndarray:
    """``project(space, raw)`` over chunks of ``PROJECT_CHUNK`` rows, each written into one
    preallocated result (memory: the result and one chunk's work, not a second result)."""
    if raw.shape[0] == 0:
        return np.zeros((0, 0), dtype=np.float32)
    out: np.ndarray | None = None
    for start in range(0, raw.shape[0], PROJECT_CHUNK):
        rows = raw[start : start + PROJECT_CHUNK]
        part = np.asarray(project(space, rows), dtype=np.float32)
        if part.ndim != 2 or part.shape[0] != rows.shape[0]:
            raise InvalidInputError(
                f"projector for {space!r} returned shape {part.shape} for {rows.shape[0]} rows"
            )
        if out is None:
            out = np.empty((raw.shape[0], part.shape[1]), dtype=np.float32)
        out[start : start + rows.shape[0]] = part
    assert out is not None
    return out


@dataclass(frozen=True)
class Origin:
    """What an index's vectors were made by, as its manifest records it: the encoder of the
    raw embeddings and, for a shared index, the checkpoint that projected them (None: not
    checked when syncing)."""

    encoder: str | None = None
    checkpoint_sha256: str | None = None


class IndexCatalog:
    """Native and per-version shared indexes of ``data_dir`` (module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        store: ItemStore,
        index_type: str = "flat",
        use_gpu: bool = True,
        index_options: dict[str, Any] | None = None,
        backend: VectorBackend | None = None,
    ) -> None:
        """``index_options`` go to the backend's ``build`` (hnsw_m, ivf_nlist, ef_search,
        nprobe); ``backend`` holds the vectors (bridge/index/backends.py; by default FAISS,
        on the GPU when ``use_gpu`` and FAISS sees one)."""
        if index_type not in INDEX_KINDS:
            raise InvalidInputError(f"index_type must be one of {INDEX_KINDS}, got {index_type!r}")
        self.data_dir = Path(data_dir)
        self.layout = DataLayout(self.data_dir)
        self.store = store
        self.index_type = index_type
        self.index_options = dict(index_options or {})
        self.backend: VectorBackend = backend or FaissBackend(use_gpu)
        self.replicated = self.backend.shared
        # Replicas on several machines share a PostgreSQL store's lock; on one machine, a
        # file's beside the data.
        self._lock: threading.RLock | CrossProcessRLock = (
            (store.cluster_lock() or self.layout.catalog_lock())
            if self.replicated
            else threading.RLock()
        )
        # Replicas: the manifest each loaded index came from (its file's mtime), so that
        # refresh() sees another replica's builds.
        self._stamps: dict[tuple[str, str], int | None] = {}
        self._native: dict[str, SearchIndex | None] = dict.fromkeys(MODALITIES)
        self._shared: dict[tuple[str, str], SearchIndex | None] = {}
        self._projectors: dict[str, ProjectFn] = {}
        self._checkpoints: dict[str, str] = {}
        # The modalities each loaded version keeps a shared index of (an Ex-MCR version:
        # audio only; versions.shared_modalities).
        self._modalities: dict[str, tuple[str, ...]] = {}
        self._dirty: set[tuple[str, str]] = set()

    # -- paths and access --------------------------------------------------------------------

    def version_dir(self, version: str) -> Path:
        return self.layout.version_dir(version)

    def native_dir(self, modality: str) -> Path:
        return self.layout.native_dir(modality)

    def shared_dir(self, version: str, modality: str) -> Path:
        return self.layout.shared_dir(version, modality)

    def native(self, modality: str) -> SearchIndex | None:
        """The native index of ``modality`` ("image" -> clip_image, "audio" -> clap_audio)."""
        return self._native[check_modality(modality)]

    def shared(self, version: str, modality: str) -> SearchIndex | None:
        """The shared-space index of ``modality`` for a loaded ``version`` (None otherwise)."""
        return self._shared.get((version, check_modality(modality)))

    def loaded_versions(self) -> list[str]:
        """Versions whose shared indexes are in memory (kept current by ``on_items_added``)."""
        return sorted(self._projectors)

    def unload_version(self, version: str, save: bool = True) -> None:
        """Forget a version's in-memory indexes (saved first if they changed and ``save``)."""
        with self._lock:
            for modality in MODALITIES:
                key = (version, modality)
                if save and key in self._dirty and self._shared.get(key) is not None:
                    self._save(key)
                self._shared.pop(key, None)
                self._dirty.discard(key)
            self._projectors.pop(version, None)
            self._checkpoints.pop(version, None)
            self._modalities.pop(version, None)

    def indexes(self) -> list[SearchIndex]:
        """Every index searches may use now: the native ones and each loaded version's."""
        loaded = [*self._native.values(), *self._shared.values()]
        return [index for index in loaded if index is not None]

    def status(self) -> dict[str, Any]:
        """Manifests of every loaded index, for readiness and metrics."""
        out: dict[str, Any] = {}
        for modality, index in self._native.items():
            out[NATIVE_NAMES[modality]] = None if index is None else index.manifest.to_json()
        for (version, modality), index in sorted(self._shared.items()):
            out[f"{version}/{SHARED_NAMES[modality]}"] = (
                None if index is None else index.manifest.to_json()
            )
        return out

    # -- replicas ----------------------------------------------------------------------------

    @property
    def lock(self) -> threading.RLock | CrossProcessRLock:
        """The lock every change of the indexes takes (across replicas, a file lock)."""
        return self._lock

    def _index_dir(self, key: tuple[str, str]) -> Path:
        version, modality = key
        return self.native_dir(modality) if version == "" else self.shared_dir(version, modality)

    def _manifest_stamp(self, key: tuple[str, str]) -> int | None:
        try:
            return (self._index_dir(key) / MANIFEST_FILE).stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def _current(self, key: tuple[str, str]) -> SearchIndex | None:
        version, modality = key
        return self._native[modality] if version == "" else self._shared.get(key)

    def _set_current(self, key: tuple[str, str], index: SearchIndex | None) -> None:
        version, modality = key
        if version == "":
            self._native[modality] = index
        else:
            self._shared[key] = index

    def refresh(self) -> list[str]:
        """Replicas: load the indexes other replicas built since this one last looked (their
        manifests changed); returns their keys as ``version/modality``. The replica that
        replaced an index frees it, after the grace that lets searches finish."""
        if not self.replicated:
            return []
        keys = [("", m) for m in MODALITIES] + list(self._shared)
        if all(
            key in self._stamps and self._manifest_stamp(key) == self._stamps[key] for key in keys
        ):
            return []  # nothing new: no need for the lock every replica's writes take
        changed: list[str] = []
        with self._lock:
            keys = [("", m) for m in MODALITIES] + list(self._shared)
            for key in keys:
                stamp = self._manifest_stamp(key)
                if key in self._stamps and stamp == self._stamps[key]:
                    continue
                current = self._current(key)
                if stamp is None:
                    fresh = None
                elif current is not None and self._names_same(key, current):
                    fresh = current  # a save of the same collection: keep the object
                else:
                    fresh = self._load(self._index_dir(key))
                if fresh is not current:
                    self._set_current(key, fresh)
                    changed.append(f"{key[0]}/{key[1]}")
                self._stamps[key] = stamp
        if changed:
            logger.info("loaded indexes another replica built: %s", changed)
        return changed

    def _names_same(self, key: tuple[str, str], index: SearchIndex) -> bool:
        from bridge.index.milvus import read_manifest

        try:
            manifest = read_manifest(self._index_dir(key))
        except IndexCorruptError:
            return False  # being replaced: load() decides
        return manifest is not None and manifest.collection == index.manifest.collection

    def _mark_changed(self, key: tuple[str, str]) -> None:
        """An add or delete changed the index: save it later. Replicas don't: their
        manifests only name collections (the counts would race)."""
        if not self.replicated:
            self._dirty.add(key)

    # -- building and syncing ----------------------------------------------------------------

    def _metadata(self, rowids: np.ndarray) -> list[dict[str, Any]] | None:
        """The items' metadata for a backend that keeps it (Milvus filters inside), else
        None (no store read)."""
        return self.store.metadata_for(rowids) if self.backend.keeps_metadata else None

    def _build(
        self,
        name: str,
        rowids: np.ndarray,
        vectors: np.ndarray,
        fingerprint: str,
        origin: Origin,
        metadata: list[dict[str, Any]] | None = None,
    ) -> SearchIndex:
        if metadata is None:
            metadata = self._metadata(rowids)
        return self.backend.build(
            name,
            rowids,
            vectors,
            self.index_type,
            fingerprint=fingerprint,
            encoder=origin.encoder,
            checkpoint_sha256=origin.checkpoint_sha256,
            metadata=metadata,
            **self.index_options,
        )

    def _load(self, directory: Path) -> SearchIndex | None:
        try:
            return self.backend.load(directory)
        except NotFoundError:
            return None
        except IndexCorruptError as exc:  # the reconciliation rebuilds it from the store
            logger.warning(
                "discarding damaged index %s, to rebuild from the store: %s", directory, exc
            )
            return None

    def _full_reason(self, index: SearchIndex | None, origin: Origin) -> str | None:
        """Why ``index`` cannot be synced incrementally and must be rebuilt (None: it can)."""
        if index is None:
            return "no index"
        m = index.manifest
        if m.fingerprint.split("/")[0] != self.store.store_id:
            return "built from another store file"
        if origin.encoder is not None and m.encoder != origin.encoder:
            return f"encoder {m.encoder!r} != {origin.encoder!r}"
        if origin.checkpoint_sha256 is not None and m.checkpoint_sha256 != origin.checkpoint_sha256:
            return "checkpoint hash differs"
        if m.requested_kind != self.index_type:
            return f"index type {m.requested_kind!r} != configured {self.index_type!r}"
        return index.needs_rebuild()

    def _sync(
        self,
        name: str,
        modality: str,
        index: SearchIndex | None,
        transform: Callable[[np.ndarray], np.ndarray],
        origin: Origin,
    ) -> tuple[SearchIndex | None, str | None]:
        """Bring ``index`` in line with the store. Returns (index, what changed or None)."""
        reason = self._full_reason(index, origin)
        if reason is None:
            assert index is not None
            snap = self.store.snapshot(modality, with_embeddings=False)
            have = index.ids()
            missing = np.setdiff1d(snap.rowids, have, assume_unique=True)
            extra = np.setdiff1d(have, snap.rowids, assume_unique=True)
            if missing.size == 0 and extra.size == 0:
                index.set_fingerprint(snap.fingerprint)
                return index, None
            changes = missing.size + extra.size
            if changes <= INCREMENTAL_MAX_FRACTION * max(snap.rowids.size, 1):
                try:
                    raw = self.store.raw_embeddings_for(modality, missing)
                except NotFoundError:
                    reason = "items deleted during the sync"
                else:
                    if missing.size:
                        metadata = self._metadata(missing)
                        index.add(missing, transform(raw), snap.fingerprint, metadata)
                    index.remove(extra, snap.fingerprint)
                    return index, f"synced (+{missing.size} -{extra.size})"
            else:
                reason = f"{changes} rows differ of {snap.rowids.size}"
        # Transformed batch by batch as the store reads them: the raw matrix is never whole
        # beside the transformed one, before the build copies the vectors once more.
        full = self.store.snapshot(modality, with_embeddings=True, transform=transform)
        vectors = full.embeddings
        assert vectors is not None
        if full.rowids.size == 0:
            # Nothing to index. Dropping the index (rather than keeping an empty one) lets the
            # next add build it with whatever dimension the items then have.
            return None, (None if index is None else f"dropped ({reason})")
        origin = Origin(origin.encoder or full.encoder, origin.checkpoint_sha256)
        built = self._build(name, full.rowids, vectors, full.fingerprint, origin)
        return built, f"rebuilt ({reason})"

    def reconcile_native(self, encoders: dict[str, str]) -> list[str]:
        """Load the native indexes from disk and fix any that disagree with the store.

        ``encoders`` maps modality ("image"/"audio", or "clip"/"clap") to the encoder id the
        service runs. ConflictError if the store's items were embedded by another encoder.
        Returns the names of the indexes that were rebuilt or synced (and saved).
        """
        changed: list[str] = []
        with self._lock:
            self.refresh()
            for modality in MODALITIES:
                encoder = encoders.get(modality) or encoders.get(MODALITY_SPACE[modality])
                stored = self.store.encoder(modality)
                if encoder is not None and stored is not None and stored != encoder:
                    raise ConflictError(
                        f"the store's {modality} items were embedded by {stored!r} but the "
                        f"service runs {encoder!r}; use the same encoder or a new data directory"
                    )
                name = NATIVE_NAMES[modality]
                old = self._native[modality] or self._load(self.native_dir(modality))
                index, what = self._sync(name, modality, old, lambda raw: raw, Origin(encoder))
                self._replace(old, index)
                self._native[modality] = index
                if what is not None:
                    logger.info("native index %s %s", name, what)
                    changed.append(name)
                    self._dirty.add(("", modality))
                    self._save(("", modality))
                    if index is None:
                        self.backend.delete(self.native_dir(modality))
        return changed

    def build_shared(
        self,
        version: str,
        project: ProjectFn,
        checkpoint_sha256: str,
        modalities: tuple[str, ...] = MODALITIES,
    ) -> None:
        """Project every stored item with ``project(space, raw)`` ("clip" for images, "clap" for
        audio), build the shared indexes of ``version`` (of ``modalities``), save and load them.

        The projection and build run outside the catalog lock (ingest goes on); items added or
        deleted meanwhile are caught up under the lock before the indexes are registered.
        """
        check_version_name(version)
        built: dict[str, SearchIndex | None] = {}
        for modality in modalities:
            into_shared = functools.partial(project_in_chunks, project, MODALITY_SPACE[modality])
            snap = self.store.snapshot(modality, with_embeddings=True, transform=into_shared)
            vectors = snap.embeddings
            assert vectors is not None
            if snap.rowids.size == 0:
                built[modality] = None
                continue
            origin = Origin(snap.encoder, checkpoint_sha256)
            name = SHARED_NAMES[modality]
            built[modality] = self._build(name, snap.rowids, vectors, snap.fingerprint, origin)
        with self._lock:
            self.refresh()
            self._register_version(version, project, checkpoint_sha256, built, force_save=True)

    def reconcile_shared(
        self,
        version: str,
        project: ProjectFn,
        checkpoint_sha256: str,
        modalities: tuple[str, ...] = MODALITIES,
    ) -> list[str]:
        """Load ``version``'s shared indexes of ``modalities`` (disk or memory) and fix any
        that disagree with the store or with ``checkpoint_sha256``; returns the names rebuilt
        or synced."""
        check_version_name(version)
        with self._lock:
            self.refresh()
            current: dict[str, SearchIndex | None] = {}
            for modality in modalities:
                key = (version, modality)
                current[modality] = (
                    self._shared[key]
                    if self._shared.get(key) is not None
                    else self._load(self.shared_dir(version, modality))
                )
            return self._register_version(version, project, checkpoint_sha256, current)

    def _register_version(
        self,
        version: str,
        project: ProjectFn,
        checkpoint_sha256: str,
        indexes: dict[str, SearchIndex | None],
        force_save: bool = False,
    ) -> list[str]:
        changed: list[str] = []
        for modality in indexes:
            space = MODALITY_SPACE[modality]
            name = SHARED_NAMES[modality]
            index, what = self._sync(
                name,
                modality,
                indexes[modality],
                lambda raw, space=space: project_in_chunks(project, space, raw),  # type: ignore[misc]
                Origin(checkpoint_sha256=checkpoint_sha256),
            )
            key = (version, modality)
            self._replace(indexes[modality], index)
            self._shared[key] = index
            if what is not None:
                logger.info("shared index %s/%s %s", version, name, what)
                changed.append(f"{version}/{name}")
            if (what is not None or force_save) and index is not None:
                self._dirty.add(key)
                self._save(key)
            if what is not None and index is None:
                self.backend.delete(self.shared_dir(version, modality))
        self._projectors[version] = project
        self._checkpoints[version] = checkpoint_sha256
        self._modalities[version] = tuple(indexes)
        return changed

    def _replace(self, old: SearchIndex | None, new: SearchIndex | None) -> None:
        """``new`` takes ``old``'s place: the backend frees what ``old`` held (after searches
        that still hold it are done, where that matters)."""
        if old is not None and old is not new:
            self.backend.discard(old)

    def index_dirs(self) -> list[Path]:
        """Every index directory on disk: native ones and each version's shared ones."""
        dirs = [self.native_dir(m) for m in MODALITIES]
        versions = self.layout.root / VERSIONS_DIR
        if versions.is_dir():
            for version_dir in sorted(p for p in versions.iterdir() if p.is_dir()):
                dirs.extend(version_dir / SHARED_NAMES[m] for m in MODALITIES)
        return dirs

    def sweep_backend(self) -> None:
        """Free what the backend holds for this store that no saved index names (a Milvus
        collection built just before a crash, or left by a removed version)."""
        with self._lock:
            self.save_all()
            self.backend.sweep(self.index_dirs())

    # -- live updates ------------------------------------------------------------------------

    def on_items_added(
        self,
        modality: str,
        rowids: np.ndarray,
        raw: np.ndarray,
        shared: dict[str, np.ndarray],
    ) -> None:
        """Add items the store has committed: raw rows to the native index, projected rows
        (``shared``: version -> (N, D)) to each loaded version's shared index. A loaded version
        missing from ``shared`` is projected here with the projector it was loaded with; ids
        already in an index are skipped (so a concurrent sync never duplicates them)."""
        check_modality(modality)
        rowids = np.asarray(rowids, dtype=np.int64)
        raw = np.asarray(raw)
        if raw.ndim != 2 or raw.shape[0] != rowids.shape[0]:
            raise InvalidInputError(f"{rowids.shape[0]} rowids for raw rows of shape {raw.shape}")
        if rowids.size == 0:
            return
        metadata = self._metadata(rowids)
        with self._lock:
            self.refresh()
            fingerprint = self.store.fingerprint(modality)
            encoder = self.store.encoder(modality)
            name = NATIVE_NAMES[modality]
            native = self._native[modality]
            self._native[modality] = self._add_to(
                native, name, rowids, raw, fingerprint, Origin(encoder), metadata
            )
            self._after_add(("", modality), built=native is None)
            for version, project in self._projectors.items():
                if modality not in self._modalities[version]:
                    continue  # an Ex-MCR version's images: searched in the native index
                vectors = shared.get(version)
                if vectors is None:
                    vectors = project_in_chunks(project, MODALITY_SPACE[modality], raw)
                key = (version, modality)
                origin = Origin(encoder, self._checkpoints[version])
                before = self._shared.get(key)
                self._shared[key] = self._add_to(
                    before, SHARED_NAMES[modality], rowids, vectors, fingerprint, origin, metadata
                )
                self._after_add(key, built=before is None)

    def _after_add(self, key: tuple[str, str], built: bool) -> None:
        """A replica saves an index it has just built at once, so the others find it."""
        if built and self.replicated:
            self._save(key)
        else:
            self._mark_changed(key)

    def _add_to(
        self,
        index: SearchIndex | None,
        name: str,
        rowids: np.ndarray,
        vectors: np.ndarray,
        fingerprint: str,
        origin: Origin,
        metadata: list[dict[str, Any]] | None,
    ) -> SearchIndex:
        """Add the rows ``index`` lacks (build it when None); ``metadata`` is aligned with
        ``rowids`` (None where the backend keeps none)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[0] != rowids.shape[0]:
            raise InvalidInputError(
                f"{name}: {rowids.shape[0]} rowids for vectors of shape {vectors.shape}"
            )
        if index is None:
            return self._build(name, rowids, vectors, fingerprint, origin, metadata)
        new = ~index.contains(rowids)
        kept = None if metadata is None else [metadata[i] for i in np.flatnonzero(new)]
        index.add(rowids[new], vectors[new], fingerprint, kept)
        return index

    def on_item_deleted(self, modality: str, rowid: int) -> None:
        """Remove a deleted item from the native index and every loaded shared index."""
        check_modality(modality)
        ids = np.array([int(rowid)], dtype=np.int64)
        with self._lock:
            self.refresh()
            fingerprint = self.store.fingerprint(modality)
            native = self._native[modality]
            if native is not None:
                native.remove(ids, fingerprint)
                self._mark_changed(("", modality))
            for (version, mod), index in self._shared.items():
                if mod == modality and index is not None:
                    index.remove(ids, fingerprint)
                    self._mark_changed((version, mod))

    # -- persistence -------------------------------------------------------------------------

    def _save(self, key: tuple[str, str]) -> None:
        index = self._current(key)
        if index is None:
            return
        index.save(self._index_dir(key))
        self._dirty.discard(key)
        self._stamps[key] = self._manifest_stamp(key)

    def save_all(self, force: bool = False) -> None:
        """Save every index that changed since it was last saved (all of them with force).
        One that fails (a full disk) keeps its old files and stays marked changed; the others
        are still saved, and the first failure is raised at the end. A start-up reconciles
        an index that lags the store."""
        failures: list[Exception] = []
        with self._lock:
            keys = [("", m) for m in MODALITIES] + list(self._shared)
            for key in keys:
                if force or key in self._dirty:
                    try:
                        self._save(key)
                    except Exception as exc:
                        logger.error("could not save index %s: %s", self._index_dir(key), exc)
                        failures.append(exc)
        if failures:
            raise failures[0]

    def close(self) -> None:
        """Save what changed. The catalog stays usable (close is idempotent)."""
        self.save_all()

    def close_backend(self) -> None:
        """Close the backend's connection (the last step of a service's close)."""
        self.backend.close()

    def delete_version_indexes(self, version: str) -> None:
        """Unload a version and delete its shared index directories (not its checkpoint)."""
        with self._lock:
            self.unload_version(version, save=False)
            for modality in MODALITIES:
                self.backend.delete(self.shared_dir(version, modality))
