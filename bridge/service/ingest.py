"""Ingest and removal of items: decode -> encode -> blob -> one store transaction -> indexes.

    add:    sniff + decode each upload (bridge/encode/media.py) -> encode with the modality's
            tower -> original bytes written to data_dir/blobs/ -> ONE store transaction commits
            items + raw embeddings (the acknowledgement) -> native index, and each loaded
            bridge version's shared index with the projected rows.
    delete: store row -> native and shared indexes -> blob.

The store commits first; the indexes are derived from it. When an index update fails after
the commit, the indexes are reconciled with the store instead of failing the request: a
committed item is acknowledged. Blobs no item references (a crash between the blob write and
the commit) are removed on start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import BackendUnavailableError, ConflictError, InvalidInputError
from bridge.modalities import MODALITIES, MODALITY_SPACE
from bridge.service.records import check_item_id, item_record
from bridge.service.versions import projector, shared_modalities
from bridge.storage.blobs import CONTENT_KEY, content_ref
from bridge.telemetry import ITEMS_DELETED, ITEMS_INGESTED, StageTimer
from bridge.types import ItemRecord, Upload

if TYPE_CHECKING:
    from bridge.encode.pair import EncoderPair
    from bridge.service.catalog import IndexCatalog
    from bridge.service.repair import IndexRepair
    from bridge.service.versions import Versions
    from bridge.storage.blobs import BlobStore
    from bridge.storage.items import ItemStore, NewItem, StoredItem

logger = logging.getLogger(__name__)


def check_metadata_list(uploads: list[Upload], metadata: list[dict[str, Any]]) -> None:
    """One metadata object per upload, each a JSON object without the reserved key."""
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


@dataclass(frozen=True)
class Ingest:
    """Adds and deletes items under the service's writer lock (module docstring)."""

    store: ItemStore
    catalog: IndexCatalog
    blobs: BlobStore
    encoders: EncoderPair
    versions: Versions
    write_lock: threading.RLock
    is_closed: Callable[[], bool]
    repair: IndexRepair

    def add(self, uploads: list[Upload], metadata: list[dict[str, Any]]) -> list[ItemRecord]:
        """Decode, encode and commit the uploads in one transaction (all or nothing)."""
        check_metadata_list(uploads, metadata)
        timer = StageTimer()
        new_items = self._new_items(uploads, metadata, timer)
        with self.write_lock:
            try:
                if self.is_closed():
                    raise ConflictError("the service is shut down")
                self.repair.check()
                stored = self.store.add_items(new_items)
            except BaseException:
                for new in new_items:
                    self.blobs.remove(new.metadata[CONTENT_KEY]["blob"])
                raise
            try:
                self._index_added(stored, new_items, timer)
            except Exception as exc:  # committed = acknowledged: repair the derived indexes
                self._after_index_failure(exc)
        for item in stored:
            ITEMS_INGESTED.labels(modality=item.modality).inc()
        return [item_record(item) for item in stored]

    def _new_items(
        self, uploads: list[Upload], metadata: list[dict[str, Any]], timer: StageTimer
    ) -> list[NewItem]:
        """Decoded, encoded and with their bytes in the blob store, ready to commit."""
        from bridge.storage.items import NewItem

        with timer.stage("decode"):
            decoded = [
                self.encoders.decode(upload, f"file {i} ({upload.filename or 'upload'})")
                for i, upload in enumerate(uploads)
            ]
        embeddings: dict[int, np.ndarray] = {}
        with timer.stage("encode"):
            for modality in MODALITIES:
                positions = [i for i, d in enumerate(decoded) if d.modality == modality]
                if positions:
                    raw = self.encoders.encode(modality, [decoded[i].media for i in positions])
                    for row, i in enumerate(positions):
                        embeddings[i] = raw[row]
        keys = self.blobs.write_all(bytes(upload.data) for upload in uploads)
        ids = self.encoders.encoder_ids()
        new_items = []
        for i, (media, meta) in enumerate(zip(decoded, metadata, strict=True)):
            content = {"blob": keys[i], "type": media.content_type, "name": uploads[i].filename}
            model = ids[MODALITY_SPACE[media.modality]]
            new_items.append(
                NewItem(media.modality, {**meta, CONTENT_KEY: content}, embeddings[i], model)
            )
        return new_items

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
                shared = {
                    version: ckpt.project(space, raw)
                    for version, ckpt in self.versions.loaded.items()
                    if modality in shared_modalities(ckpt)
                }
            self.catalog.on_items_added(modality, rowids, raw, shared)

    def _after_index_failure(self, exc: Exception) -> None:
        """Caller holds the writer lock: a committed change did not reach every index."""
        if isinstance(exc, BackendUnavailableError):
            logger.warning("vector backend unavailable after a commit; repairing later: %s", exc)
            self.repair.request(exc)
            return
        logger.exception("index update after commit failed; reconciling indexes")
        try:
            self.repair_indexes()
        except BackendUnavailableError as again:
            self.repair.request(again)

    def repair_indexes(self) -> None:
        """Caller holds the writer lock: rebuild whatever index disagrees with the store."""
        self.catalog.reconcile_native(self.encoders.encoder_ids())
        for version, checkpoint in self.versions.loaded.items():
            self.catalog.reconcile_shared(
                version, projector(checkpoint), checkpoint.sha256, shared_modalities(checkpoint)
            )

    def delete(self, item_id: str) -> None:
        with self.write_lock:
            self.repair.check()
            item = self.store.delete(check_item_id(item_id))
            try:
                self.catalog.on_item_deleted(item.modality, item.rowid)
            except Exception as exc:  # deleted in the store = acknowledged
                self._after_index_failure(exc)
        content = content_ref(item.metadata)
        if content is not None:
            self.blobs.remove(content["blob"])
        ITEMS_DELETED.labels(modality=item.modality).inc()

    def seed_samples(self, samples_dir: Path) -> list[ItemRecord]:
        """Add every sample of samples_dir/manifest.jsonl in one batch."""
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
        records = self.add([s.upload for s in samples], [s.metadata for s in samples])
        logger.info("seeded %d sample items from %s", len(records), samples_dir)
        return records

    def remove_orphan_blobs(self, min_age_seconds: float = 0.0) -> None:
        """Blobs no stored item references: a crash between blob write and commit (of those
        at least ``min_age_seconds`` old)."""
        if not self.blobs.keys():
            return
        referenced: set[str] = set()
        for modality in MODALITIES:
            rowids = self.store.snapshot(modality, with_embeddings=False).rowids
            for item in self.store.get_by_rowids(rowids).values():
                content = content_ref(item.metadata)
                if content is not None:
                    referenced.add(content["blob"])
        removed = self.blobs.remove_orphans(referenced, min_age_seconds)
        if removed:
            logger.warning("removed %d orphan blob(s) left by an interrupted upload", removed)
