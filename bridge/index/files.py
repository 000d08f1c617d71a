"""The on-disk format of one index directory, and how it is written and read safely.

    <index dir>/index.faiss      the FAISS CPU index (faiss.write_index)
    <index dir>/ids.npy          live ids, ascending int64
    <index dir>/tombstones.npy   removed ids still in an HNSW graph, ascending int64
    <index dir>/manifest.json    IndexManifest: what the index holds and was built from

A save writes a temp sibling directory (files fsynced), then swaps it in by rename; the old
one is moved aside first and deleted after. A crash between the two renames leaves
``<directory>.old-*``, which the next load restores.
"""

from __future__ import annotations

import dataclasses
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

from bridge.errors import BridgeError, NotFoundError
from bridge.io import fsync_dir

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
MANIFEST_FILE = "manifest.json"
IDS_FILE = "ids.npy"
TOMBSTONES_FILE = "tombstones.npy"


class IndexCorruptError(BridgeError):
    """An index directory on disk is unreadable or disagrees with its manifest."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class IndexManifest:
    """What an index holds; saved as manifest.json beside index.faiss.

    ``fingerprint`` is the store's fingerprint of the modality the index was last synced with
    (bridge/storage/items.py). ``params`` holds the kind's parameters (hnsw_m, ef_search, nlist,
    nprobe, trained_count).
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

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> IndexManifest:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})


def save_index_dir(directory: Path, write_payload: Callable[[Path], IndexManifest]) -> None:
    """Atomically replace ``directory``: ``write_payload(tmp)`` writes index.faiss, ids.npy
    and tombstones.npy into ``tmp`` and returns the manifest they match (module docstring)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        manifest = write_payload(tmp)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
        for name in (INDEX_FILE, IDS_FILE, TOMBSTONES_FILE, MANIFEST_FILE):
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
