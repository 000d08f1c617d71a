"""Bridge versions: checkpoint loading, live shared indexes, activate / rollback, registration.

`Versions.active` is an immutable ActiveBridge (version, checkpoint, shared indexes). Readers
take it once per request and use it to the end, so a swap never mixes versions inside one
answer; `publish` builds the new ActiveBridge fully, then swaps it in with one attribute
assignment (atomic under the GIL). Every mutating method runs under the service's writer lock
(passed in), so the set of loaded versions and their shared indexes see every committed item.
Live shared indexes are kept for the active and previous versions (plus a freshly trained
one); others are unloaded and reconciled when activated again.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import (
    CheckpointCorruptError,
    CheckpointError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from bridge.memory import release_free_memory
from bridge.modalities import MODALITIES, MODALITY_SPACE
from bridge.service.encoder_ids import encoder_mismatch
from bridge.service.records import version_record
from bridge.service.routing import EXMCR_BASE
from bridge.storage.layout import DataLayout
from bridge.types import VersionRecord

if TYPE_CHECKING:
    from bridge.index.backends import SearchIndex
    from bridge.model.projectors import BridgeCheckpoint
    from bridge.service.catalog import IndexCatalog
    from bridge.storage.items import ItemStore

logger = logging.getLogger(__name__)

# Progress of a long step: (fraction 0..1 of the whole job, message).
Progress = Callable[[float, str], None]

INITIAL_VERSION = "v1"


@dataclass(frozen=True)
class ActiveBridge:
    """The active bridge version, swapped as one reference (never mutated)."""

    version: str
    checkpoint: BridgeCheckpoint
    shared: Mapping[str, SearchIndex | None]  # "image" / "audio" -> shared index

    @property
    def mode(self) -> str:
        """The bridge's mode, cmcr or exmcr (an Ex-MCR bridge's shared space is native CLIP)."""
        return self.checkpoint.projector_config.mode


def shared_modalities(checkpoint: BridgeCheckpoint) -> tuple[str, ...]:
    """The modalities a version keeps a shared index of: both for C-MCR; audio only for
    Ex-MCR, whose shared space is native CLIP (images are searched in clip_image)."""
    if checkpoint.projector_config.mode == "exmcr":
        return tuple(m for m in MODALITIES if MODALITY_SPACE[m] != EXMCR_BASE)
    return MODALITIES


def shared_index(catalog: IndexCatalog, active: ActiveBridge, target: str) -> SearchIndex | None:
    """The snapshot version's shared index: the catalog's current object (it replaces the
    object when the first item of a modality arrives or a rebuild happens), else the one
    the snapshot holds (the version was unloaded by a later swap mid-request)."""
    return catalog.shared(active.version, target) or active.shared.get(target)


def projector(checkpoint: BridgeCheckpoint) -> Callable[[str, np.ndarray], np.ndarray]:
    """checkpoint.project as the catalog's ProjectFn (space names are checked by the model)."""

    def project(space: str, raw: np.ndarray) -> np.ndarray:
        return checkpoint.project(space, raw)  # type: ignore[arg-type]

    return project


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The parts of a checkpoint's report.json worth showing in the version list."""
    keys = ("mode", "data", "final", "metrics", "wall_seconds", "device")
    return {k: report[k] for k in keys if k in report}


class Versions:
    """The service's bridge versions: which are loaded (live shared indexes) and which is
    active. `write_lock` is the service's re-entrant writer lock; `encoders` the ids of the
    encoders the service runs (a bridge recorded for others is refused)."""

    def __init__(
        self,
        layout: DataLayout,
        store: ItemStore,
        catalog: IndexCatalog,
        device: str,
        dims: tuple[int, int],
        write_lock: threading.RLock,
        encoders: Mapping[str, str] | None = None,
        keep_previous_seconds: float = 0.0,
    ) -> None:
        self.layout = layout
        self.store = store
        self.catalog = catalog
        self.device = device
        self.clip_dim, self.clap_dim = dims
        self.encoders = dict(encoders or {})
        self._write_lock = write_lock
        self.loaded: dict[str, BridgeCheckpoint] = {}  # versions whose shared indexes are live
        self.active: ActiveBridge | None = None
        # How long the previously active version stays live after an activation (retire).
        self.keep_previous_seconds = keep_previous_seconds
        self._release_timer: threading.Timer | None = None
        self._closed = False

    # -- checkpoints -----------------------------------------------------------------------

    def checkpoint_path(self, row: dict[str, Any]) -> Path:
        return self.layout.resolve_checkpoint_ref(row["checkpoint_dir"])

    def load_checkpoint(self, path: Path, expected_sha: str | None = None) -> BridgeCheckpoint:
        """Load and check against the recorded sha256 (CheckpointCorruptError, before the
        weights are read) and the encoders (the ids the bridge records: ConflictError, a 409
        on activation; then their dimensions)."""
        from bridge.model.projectors import load_checkpoint

        checkpoint = load_checkpoint(path, self.device, expected_sha)
        mismatch = encoder_mismatch(checkpoint.encoders, self.encoders)
        if mismatch:
            raise ConflictError(f"bridge {path} {mismatch}")
        config = checkpoint.projector_config
        if (config.clip_dim, config.clap_dim) != (self.clip_dim, self.clap_dim):
            raise CheckpointError(
                f"bridge {path} connects {config.clip_dim}-d CLIP and {config.clap_dim}-d CLAP "
                f"embeddings, but the encoders give {self.clip_dim}-d and {self.clap_dim}-d"
            )
        return checkpoint

    def ensure_loaded(self, version: str) -> BridgeCheckpoint:
        """Caller holds the writer lock. Load the checkpoint and reconcile its shared indexes,
        unless the version is already live (its indexes follow every write). A checkpoint
        damaged on disk marks the version failed (``mark_corrupt``) and raises
        CheckpointCorruptError."""
        checkpoint = self.loaded.get(version)
        if checkpoint is not None:
            return checkpoint  # live: every add/delete since loading reached its indexes
        row = self.store.get_version(version)
        try:
            checkpoint = self.load_checkpoint(self.checkpoint_path(row), row.get("sha256"))
        except CheckpointCorruptError as exc:
            self.mark_corrupt(version, exc)
            raise
        rebuilt = self.catalog.reconcile_shared(
            version, projector(checkpoint), checkpoint.sha256, shared_modalities(checkpoint)
        )
        if rebuilt:
            logger.info("version %s: rebuilt shared indexes %s", version, rebuilt)
        self.loaded[version] = checkpoint
        return checkpoint

    def mark_corrupt(self, version: str, exc: CheckpointCorruptError) -> None:
        """The version's checkpoint is damaged on disk: log it (the message names the file)
        and mark the version failed, so that it is never activated or loaded again. Its
        folder stays for whoever investigates."""
        logger.error("bridge version %s is unusable and marked failed: %s", version, exc)
        row = self.store.get_version(version)
        metrics = {**(row.get("metrics") or {}), "error": f"checkpoint damaged on disk: {exc}"}
        self.store.update_version(version, status="failed", metrics=metrics)

    def serve_at_start(self) -> None:
        """Caller holds the writer lock: serve the version the store names active. When its
        checkpoint is damaged on disk (the version is marked failed), fall back to the
        previous version if it is ready and sound (it becomes the active one), else start
        without a bridge: native searches work, bridged ones answer 409 until a version is
        activated. A version already marked failed is not tried."""
        active, previous = self.store.get_active()
        for candidate in (active, previous):
            if candidate is None:
                continue
            status = self.store.get_version(candidate)["status"]
            if status != "ready":
                logger.error(
                    "bridge version %s is %s; not serving it%s",
                    candidate,
                    status,
                    "" if candidate == previous else " (trying the previous version)",
                )
                continue
            try:
                checkpoint = self.ensure_loaded(candidate)
            except CheckpointCorruptError:
                continue  # logged and marked failed by ensure_loaded
            if candidate != active:
                self.store.set_active(candidate, allowed_statuses=("ready",))
                logger.warning(
                    "serving bridge version %s instead of %s, whose checkpoint is unusable",
                    candidate,
                    active,
                )
            self.publish(candidate, checkpoint)
            return
        if active is not None:
            logger.error(
                "no usable bridge version (active %s, previous %s): serving native searches "
                "only until a version is activated",
                active,
                previous,
            )

    def publish(self, version: str, checkpoint: BridgeCheckpoint) -> ActiveBridge:
        """Caller holds the writer lock: build the ActiveBridge of `version` and swap it in."""
        shared = {m: self.catalog.shared(version, m) for m in MODALITIES}
        bridge = ActiveBridge(version, checkpoint, MappingProxyType(shared))
        self.active = bridge  # the atomic swap
        return bridge

    def _unload(self, version: str, save: bool = True) -> None:
        unload = getattr(self.catalog, "unload_version", None)
        if unload is not None:
            unload(version, save=save)

    def keep_loaded(self, *versions: str | None) -> None:
        """Caller holds the writer lock: stop live-updating versions not in `versions`."""
        keep = {v for v in versions if v}
        self._drop([version for version in self.loaded if version not in keep])

    def _drop(self, versions: list[str]) -> None:
        """Caller holds the writer lock: unload `versions` (saved first) and hand their
        memory back."""
        for version in versions:
            del self.loaded[version]
            self._unload(version)
        if versions:
            release_free_memory()  # an unloaded version's vectors: hundreds of MB at scale

    def retire(self, active: str, previous: str | None) -> None:
        """Caller holds the writer lock, `active` just swapped in. Only it and `previous`
        stay live; `previous` only for keep_previous_seconds, so that a rollback soon after an
        activation is an instant swap, while the memory of two versions' shared indexes is
        not held for good. Later, a rollback reloads them (ensure_loaded)."""
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        if self.keep_previous_seconds <= 0 or previous is None or previous == active:
            self.keep_loaded(active)
            return
        self.keep_loaded(active, previous)
        if previous in self.loaded:
            timer = threading.Timer(self.keep_previous_seconds, self._release, (previous,))
            timer.name, timer.daemon = f"release-{previous}", True
            self._release_timer = timer
            timer.start()

    def _release(self, version: str) -> None:
        """The timer `retire` set: unload `version` unless it is active again."""
        with self._write_lock:
            if self._closed or version not in self.loaded:
                return
            if self.active is not None and self.active.version == version:
                return
            self._drop([version])
        logger.info(
            "unloaded bridge version %s (previously active; %.0f s after the activation), "
            "a rollback reloads it",
            version,
            self.keep_previous_seconds,
        )

    def close(self) -> None:
        """No release after this (the service is closing and saves every index itself)."""
        with self._write_lock:
            self._closed = True
            if self._release_timer is not None:
                self._release_timer.cancel()

    # -- list / activate / rollback --------------------------------------------------------

    def records(self) -> list[VersionRecord]:
        active, _ = self.store.get_active()
        return [version_record(row, active) for row in self.store.list_versions()]

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
            old = self.active
            try:
                checkpoint = self.ensure_loaded(version)
            except CheckpointCorruptError as exc:  # now marked failed
                raise ConflictError(
                    f"bridge version {version!r} cannot be activated and is now marked failed: "
                    f"{exc}"
                ) from exc
            self.store.set_active(version, allowed_statuses=("ready",))
            self.publish(version, checkpoint)
            _, previous = self.store.get_active()
            self.retire(version, previous)  # active and, for a while, previous stay live
            logger.info("activated bridge version %s (was %s)", version, old and old.version)
        return version_record(self.store.get_version(version), version)

    def follow_active(self) -> bool:
        """Replicas: caller holds the writer lock. Serve the version the store names active
        when another replica has activated one; True when this changed what is served."""
        active, previous = self.store.get_active()
        if active is None or (self.active is not None and self.active.version == active):
            return False
        if self.store.get_version(active)["status"] != "ready":
            return False  # marked failed (a damaged checkpoint): serve what this one serves
        old = self.active
        self.publish(active, self.ensure_loaded(active))
        self.retire(active, previous)
        logger.info(
            "serving bridge version %s, activated by another replica (was %s)",
            active,
            old and old.version,
        )
        return True

    def rollback(self) -> VersionRecord:
        """Back to the previously active version; ConflictError if there is none."""
        with self._write_lock:
            _, previous = self.store.get_active()
            if previous is None:
                raise ConflictError("no previously active bridge version to roll back to")
            return self.activate(previous)

    # -- registration ----------------------------------------------------------------------

    def fail_interrupted(self) -> None:
        """Versions left `training` by a crash become `failed`; their folders are removed."""
        for row in self.store.list_versions():
            if row["status"] == "training":
                self.store.update_version(
                    row["version"],
                    status="failed",
                    metrics={"error": "interrupted: the service stopped during training"},
                )
                self.layout.remove_version(row["version"])

    def register_initial(self, initial_bridge: Path | str | None) -> None:
        """Copy initial_bridge into versions/v1/checkpoint and activate it, once."""
        if initial_bridge is None or self.store.list_versions():
            return
        source = Path(initial_bridge)
        if not source.is_dir():
            raise CheckpointError(f"initial bridge folder not found: {source}")
        self.load_checkpoint(source)  # validates files and dimensions before copying
        dest = self.layout.checkpoint_dir(INITIAL_VERSION)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".checkpoint."))
        shutil.rmtree(tmp)
        shutil.copytree(source, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        checkpoint = self.load_checkpoint(dest)
        self.store.add_version(
            INITIAL_VERSION,
            self.layout.checkpoint_ref(INITIAL_VERSION),
            "ready",
            checkpoint.sha256,
            {
                "mode": checkpoint.projector_config.mode,
                "source": str(source),
                "report": report_summary(checkpoint.report),
            },
        )
        self.store.set_active(INITIAL_VERSION)

    def next_version(self) -> str:
        numbers = [
            int(m.group(1))
            for row in self.store.list_versions()
            if (m := re.fullmatch(r"v(\d+)", row["version"]))
        ]
        return f"v{max(numbers, default=0) + 1}"

    def install(
        self, version: str, checkpoint_dir: Path, progress: Progress | None = None
    ) -> BridgeCheckpoint:
        """Re-project every stored item into new shared indexes, then make them live."""
        checkpoint = self.load_checkpoint(checkpoint_dir)
        self.store.update_version(version, sha256=checkpoint.sha256)
        modalities = shared_modalities(checkpoint)
        project = projector(checkpoint)
        self.catalog.build_shared(version, project, checkpoint.sha256, modalities)
        if progress is not None:
            progress(0.9, "shared indexes built")
        with self._write_lock:  # catch items added or deleted while building
            self.catalog.reconcile_shared(version, project, checkpoint.sha256, modalities)
            self.loaded[version] = checkpoint
        return checkpoint

    def fail_training(self, version: str, exc: BaseException) -> None:
        """A retrain job failed: unload the version (nothing of it saved: after a full disk
        a save would fail again), remove its folder (freeing the space it took), mark it
        failed."""
        with self._write_lock:
            self.loaded.pop(version, None)
            self._unload(version, save=False)
        try:
            row = self.store.get_version(version)
        except NotFoundError:
            return
        if row["status"] == "training":
            self.layout.remove_version(version)
            metrics = {**(row.get("metrics") or {}), "error": str(exc)}  # keeps its mode
            self.store.update_version(version, status="failed", metrics=metrics)
