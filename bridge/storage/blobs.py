"""Original upload bytes: the blob store and the content reference kept with each item.

Ingest writes the bytes under data_dir/blobs/<key[:2]>/<key> BEFORE the store transaction
commits; the item keeps `{"blob": key, "type": content type, "name": filename}` under the
reserved metadata key CONTENT_KEY, hidden from every answer (bridge/service/records.py). Blobs no
item references (a crash between blob write and commit) are removed on start.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bridge.errors import NotFoundError, disk_full_as_error

CONTENT_KEY = "_content"  # reserved metadata key: where the original bytes live


def content_ref(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The item's content reference when it names a blob, else None (items inserted straight
    into the store have none)."""
    content = metadata.get(CONTENT_KEY)
    if isinstance(content, dict) and isinstance(content.get("blob"), str):
        return content
    return None


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
        """Store `data` under a new key, durably (fsynced, then renamed into place); a full
        disk is StorageFullError and leaves nothing behind."""
        key = uuid.uuid4().hex
        path = self.path(key)
        with disk_full_as_error("an upload's original bytes to the blob store"):
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

    def write_all(self, blobs: Iterable[bytes]) -> list[str]:
        """`write` each, all or nothing: when one fails, those already written are removed."""
        keys: list[str] = []
        try:
            for data in blobs:
                keys.append(self.write(data))
        except BaseException:
            for key in keys:
                self.remove(key)
            raise
        return keys

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

    def remove_orphans(self, referenced: set[str], min_age_seconds: float = 0.0) -> int:
        """Delete blobs no item references (a crash between blob write and commit) and temps,
        of those last written at least ``min_age_seconds`` ago (replicas: another one may be
        between writing a blob and committing its item)."""
        removed = 0
        cutoff = time.time() - min_age_seconds
        for path in self.root.glob("??/*"):
            if path.name.startswith(".tmp-") or path.name not in referenced:
                try:
                    if min_age_seconds > 0 and path.stat().st_mtime > cutoff:
                        continue
                except FileNotFoundError:
                    continue
                path.unlink(missing_ok=True)
                removed += 1
        return removed
