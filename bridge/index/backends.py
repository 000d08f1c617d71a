"""Vector backends: where the catalog's indexes keep their vectors (BRIDGE_BACKEND).

- ``faiss`` (the default): in-process FAISS indexes saved as files in the data directory
  (bridge/index/vectors.py).
- ``milvus``: one Milvus collection per index, through pymilvus; the data directory keeps
  only each index's manifest (bridge/index/milvus.py). The URI is a Milvus Lite file
  (embedded, one process) or a Milvus server.

``SearchIndex`` is what the service uses of an index, whichever backend holds it; a backend
builds, loads, deletes and discards them. The index directory layout is the catalog's
(bridge/storage/layout.py) for both.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, get_args

import numpy as np

from bridge.errors import InvalidInputError
from bridge.index.files import IndexManifest
from bridge.types import BackendName, ServiceConfig

logger = logging.getLogger(__name__)

BACKENDS = get_args(BackendName)
# Each item's metadata, aligned with the ids it comes with.
Metadata = Sequence[Mapping[str, Any] | None]


class SearchIndex(Protocol):
    """An index of one (space, modality): VectorIndex and MilvusIndex."""

    manifest: IndexManifest
    # False where a search is a call to another process, so it must not run on the event loop.
    inline_searches: bool

    @property
    def ntotal(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def on_gpu(self) -> bool: ...
    def ids(self) -> np.ndarray: ...
    def contains(self, ids: np.ndarray) -> np.ndarray: ...
    def needs_rebuild(self) -> str | None: ...
    def set_search_params(
        self, ef_search: int | None = None, nprobe: int | None = None
    ) -> None: ...
    def can_filter(self, filters: Mapping[str, Any]) -> bool:
        """Whether ``search`` can apply ``filters`` itself, returning only matching rows."""
        ...

    def search(
        self, queries: np.ndarray, k: int, filters: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...
    def add(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        fingerprint: str,
        metadata: Metadata | None = None,
    ) -> None: ...
    def set_fingerprint(self, fingerprint: str) -> None: ...
    def remove(self, ids: np.ndarray, fingerprint: str) -> None: ...
    def save(self, directory: Path) -> None: ...


class VectorBackend(Protocol):
    name: str
    # Whether its indexes keep each item's metadata (give it to build and add): they can
    # then filter searches themselves.
    keeps_metadata: bool

    @property
    def shared(self) -> bool:
        """Whether several processes (replicas) may use the same indexes at once."""
        ...

    def build(
        self,
        name: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        kind: str,
        *,
        fingerprint: str,
        encoder: str | None,
        checkpoint_sha256: str | None,
        metadata: Metadata | None = None,
        **options: Any,
    ) -> SearchIndex: ...

    def load(self, directory: Path) -> SearchIndex:
        """NotFoundError when there is no index of this backend, IndexCorruptError when it
        cannot be read."""
        ...

    def discard(self, index: SearchIndex) -> None:
        """``index`` was replaced (searches may still hold it): free what it holds."""
        ...

    def delete(self, directory: Path) -> None:
        """Delete the saved index at ``directory`` and what it holds."""
        ...

    def sweep(self, directories: Iterable[Path]) -> None:
        """Free what no index saved under ``directories`` holds (a crash's leftovers)."""
        ...

    def status(self, serving: Iterable[SearchIndex] = ()) -> dict[str, Any]:
        """{"name", "reachable", "serving": whether the `serving` indexes can answer now,
        ...} for readiness; never raises."""
        ...

    def close(self) -> None: ...


class FaissBackend:
    """In-process FAISS indexes, saved as files (the default)."""

    name = "faiss"
    shared = False  # the indexes live in this process's memory
    keeps_metadata = False  # the service filters hits in the store

    def __init__(self, use_gpu: bool = True) -> None:
        self.use_gpu = use_gpu

    def build(
        self,
        name: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        kind: str,
        *,
        fingerprint: str,
        encoder: str | None,
        checkpoint_sha256: str | None,
        metadata: Metadata | None = None,
        **options: Any,
    ) -> SearchIndex:
        from bridge.index.vectors import VectorIndex

        return VectorIndex.build(
            name,
            ids,
            vectors,
            kind,
            fingerprint=fingerprint,
            encoder=encoder,
            checkpoint_sha256=checkpoint_sha256,
            use_gpu=self.use_gpu,
            **options,
        )

    def load(self, directory: Path) -> SearchIndex:
        from bridge.index.vectors import VectorIndex

        return VectorIndex.load(directory, use_gpu=self.use_gpu)

    def discard(self, index: SearchIndex) -> None:
        pass  # memory only: freed with the last reference

    def delete(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    def sweep(self, directories: Iterable[Path]) -> None:
        pass

    def status(self, serving: Iterable[SearchIndex] = ()) -> dict[str, Any]:
        return {"name": self.name, "reachable": True, "serving": True}

    def close(self) -> None:
        pass


class MilvusBackend:
    """One Milvus collection per index (bridge/index/milvus.py)."""

    name = "milvus"
    keeps_metadata = True  # filtered searches run inside Milvus

    def __init__(
        self,
        uri: str,
        store_id: str,
        token: str = "",
        db_name: str = "",
        drop_grace_seconds: float | None = None,
        timeout: float | None = None,
    ) -> None:
        from bridge.index.milvus import (
            CONNECT_TIMEOUT_SECONDS,
            DROP_GRACE_SECONDS,
            MilvusConnection,
        )

        prefix = "".join(ch for ch in store_id if ch.isalnum())[:12]
        self.connection = MilvusConnection(
            uri,
            prefix or "store",
            token=token,
            db_name=db_name,
            timeout=CONNECT_TIMEOUT_SECONDS if timeout is None else timeout,
        )
        self.drop_grace_seconds = (
            DROP_GRACE_SECONDS if drop_grace_seconds is None else drop_grace_seconds
        )

    def build(
        self,
        name: str,
        ids: np.ndarray,
        vectors: np.ndarray,
        kind: str,
        *,
        fingerprint: str,
        encoder: str | None,
        checkpoint_sha256: str | None,
        metadata: Metadata | None = None,
        **options: Any,
    ) -> SearchIndex:
        from bridge.index.milvus import MilvusIndex

        return MilvusIndex.build(
            self.connection,
            name,
            ids,
            vectors,
            kind,
            fingerprint=fingerprint,
            encoder=encoder,
            checkpoint_sha256=checkpoint_sha256,
            metadata=metadata,
            **options,
        )

    def load(self, directory: Path) -> SearchIndex:
        from bridge.index.milvus import MilvusIndex

        return MilvusIndex.load(self.connection, directory)

    def discard(self, index: SearchIndex) -> None:
        from bridge.index.milvus import MilvusIndex

        if isinstance(index, MilvusIndex):
            index.discard(self.drop_grace_seconds)

    def delete(self, directory: Path) -> None:
        from bridge.index.milvus import read_manifest

        manifest = read_manifest(directory) if Path(directory).is_dir() else None
        if manifest is not None and manifest.collection:
            self.connection.drop(manifest.collection)
        shutil.rmtree(directory, ignore_errors=True)

    @property
    def shared(self) -> bool:
        """Whether other processes (replicas) may use the same collections: a Milvus server,
        not Milvus Lite's file."""
        return not self.connection.lite

    def sweep(self, directories: Iterable[Path]) -> None:
        from bridge.index.milvus import SHARED_SWEEP_MIN_AGE_SECONDS, read_manifest

        keep = set()
        for directory in directories:
            manifest = read_manifest(directory) if Path(directory).is_dir() else None
            if manifest is not None and manifest.collection:
                keep.add(manifest.collection)
        self.connection.sweep(keep, SHARED_SWEEP_MIN_AGE_SECONDS if self.shared else 0.0)

    def status(self, serving: Iterable[SearchIndex] = ()) -> dict[str, Any]:
        """Reachable, and whether every collection in `serving` is loaded: a restarted Milvus
        reloads its collections before it answers searches on them."""
        from bridge.errors import BridgeError
        from bridge.index.milvus import MilvusIndex

        out: dict[str, Any] = {"name": self.name, "uri": self.connection.uri}
        try:
            out["collections"] = len(self.connection.collections())
            out["reachable"] = True
            names = [i.collection for i in serving if isinstance(i, MilvusIndex)]
            loading = [name for name in names if not self.connection.loaded(name)]
            out["serving"] = not loading
            if loading:
                out["loading"] = loading
        except BridgeError as exc:
            out["reachable"] = out["serving"] = False
            out["error"] = str(exc)
        return out

    def close(self) -> None:
        self.connection.close()


def make_backend(config: ServiceConfig, store_id: str) -> VectorBackend:
    """The backend `config.backend` names, for the store `store_id` (its Milvus collections
    are named after it); Milvus's URI defaults to a Milvus Lite file in the data directory."""
    if config.backend == "faiss":
        return FaissBackend(config.faiss_gpu)
    if config.backend == "milvus":
        uri = config.milvus_uri or str(Path(config.data_dir) / "milvus.db")
        return MilvusBackend(
            uri,
            store_id,
            token=config.milvus_token,
            db_name=config.milvus_db,
            timeout=config.milvus_timeout,
        )
    raise InvalidInputError(f"backend must be one of {BACKENDS}, got {config.backend!r}")
