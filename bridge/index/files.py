"""The on-disk format of one index directory, and how it is written and read safely.

    <index dir>/index.faiss      the FAISS CPU index (faiss.write_index)
    <index dir>/ids.npy          live ids, ascending int64
    <index dir>/tombstones.npy   removed ids still in an HNSW graph, ascending int64
    <index dir>/manifest.json    IndexManifest: what the index holds and was built from,
                                 and the sha256 of each of the three files above

A save writes a temp sibling directory (files fsynced), then swaps it in by rename; the old
one is moved aside first and deleted after. A crash between the two renames leaves
``<directory>.old-*``, which the next load restores. A full disk fails the save with
StorageFullError before the swap: the temp directory is removed and the old index stays.

A load checks each file against the sha256 its manifest records (a manifest written before
checksums existed records none, and is loaded as before): a file changed or damaged on disk
is IndexCorruptError naming it, and the catalog rebuilds that index from the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bridge.errors import BridgeError, NotFoundError, disk_full_as_error
from bridge.io import fsync_dir

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
IDS_FILE = "ids.npy"
TOMBSTONES_FILE = "tombstones.npy"
PAYLOAD_FILES = (INDEX_FILE, IDS_FILE, TOMBSTONES_FILE)  # what the manifest's checksums cover


class IndexCorruptError(BridgeError):
    """An index directory on disk is unreadable or disagrees with its manifest."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class IndexManifest:
    """What an index holds; saved as manifest.json beside index.faiss.

    ``fingerprint`` is the store's fingerprint of the modality the index was last synced with
    (bridge/storage/items.py). ``params`` holds the kind's parameters (hnsw_m, ef_search, nlist,
    nprobe, trained_count). ``checksums`` (file name -> sha256 hex) is written by a save and
    checked by a load; an index in memory carries none (its files would differ by then).
    """

    name: str
    kind: str
    dim: int
    count: int
    fingerprint: str
    encoder: str | None
    checkpoint_sha256: str | None
    created_at: str
    requested_kind: str = ""
    updated_at: str = ""
    tombstones: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    faiss_version: str = ""
    backend: str = "faiss"  # or "milvus" (bridge/index/milvus.py)
    collection: str = ""  # the Milvus collection holding the vectors
    checksums: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> IndexManifest:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})


def file_sha256(path: Path) -> str:
    """sha256 hex of a file, read in blocks."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def save_index_dir(directory: Path, write_payload: Callable[[Path], IndexManifest]) -> None:
    """Atomically replace ``directory``: ``write_payload(tmp)`` writes index.faiss, ids.npy
    and tombstones.npy into ``tmp`` and returns the manifest they match, which is saved with
    their checksums (module docstring). A full disk: StorageFullError, the old index kept."""
    directory = Path(directory)
    with disk_full_as_error(f"the index at {directory}"):
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
        try:
            manifest = write_payload(tmp)
            checksums = {name: file_sha256(tmp / name) for name in PAYLOAD_FILES}
            manifest = dataclasses.replace(manifest, checksums=checksums)
            (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
            for name in (*PAYLOAD_FILES, MANIFEST_FILE):
                with open(tmp / name, "rb") as handle:
                    os.fsync(handle.fileno())
            old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
            if directory.exists():
                os.rename(directory, old)
            os.rename(tmp, directory)
            fsync_dir(directory.parent)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def check_checksums(directory: Path, manifest: IndexManifest) -> None:
    """IndexCorruptError naming the first file whose sha256 is not the one its manifest
    records (nothing to check for a manifest that records none)."""
    for name, expected in sorted(manifest.checksums.items()):
        path = directory / name
        try:
            actual = file_sha256(path)
        except OSError as exc:
            raise IndexCorruptError(f"cannot read {path}: {exc}") from exc
        if actual != expected:
            raise IndexCorruptError(
                f"{path} was changed or damaged on disk: its sha256 is {actual[:16]}..., the "
                f"manifest records {expected[:16]}..."
            )


def read_index_dir(directory: Path) -> tuple[Any, IndexManifest, np.ndarray, np.ndarray]:
    """(FAISS CPU index, manifest, ids, tombstones) of a saved directory; NotFoundError if
    absent, IndexCorruptError if unreadable or inconsistent."""
    import faiss

    directory = Path(directory)
    recover_interrupted_save(directory)
    if not (directory / MANIFEST_FILE).is_file():
        raise NotFoundError(f"no index at {directory}")
    try:
        manifest = IndexManifest.from_json(json.loads((directory / MANIFEST_FILE).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise IndexCorruptError(f"cannot read {directory / MANIFEST_FILE}: {exc}") from exc
    check_checksums(directory, manifest)
    manifest = dataclasses.replace(manifest, checksums={})  # in memory the files move on
    try:
        index = faiss.read_index(str(directory / INDEX_FILE))
        ids = np.load(directory / IDS_FILE, allow_pickle=False)
        tombstones = np.load(directory / TOMBSTONES_FILE, allow_pickle=False)
    except (OSError, ValueError, TypeError, RuntimeError) as exc:
        raise IndexCorruptError(f"cannot read the index at {directory}: {exc}") from exc
    if index.d != manifest.dim or index.ntotal != ids.shape[0] + tombstones.shape[0]:
        raise IndexCorruptError(
            f"{directory}: index has d={index.d}, ntotal={index.ntotal}; manifest and id "
            f"files say d={manifest.dim}, {ids.shape[0]} ids + {tombstones.shape[0]} removed"
        )
    if manifest.count != ids.shape[0]:
        raise IndexCorruptError(
            f"{directory}: manifest count {manifest.count} != {ids.shape[0]} ids"
        )
    return index, manifest, ids, tombstones


def recover_interrupted_save(directory: Path) -> None:
    """If a save crashed between its two renames, put the previous index back."""
    if directory.exists() or not directory.parent.is_dir():
        return
    olds = sorted(
        directory.parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime
    )
    if olds:
        logger.warning("restoring %s from an interrupted save (%s)", directory, olds[-1].name)
        os.rename(olds[-1], directory)
