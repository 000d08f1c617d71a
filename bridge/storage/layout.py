"""The data directory: the one place that names its paths.

    <data_dir>/store.sqlite (-wal, -shm)         items, raw embeddings, versions, jobs
    <data_dir>/.lock                             held by the process serving this directory
                                                 (shared by replicas on a Milvus server)
    <data_dir>/.catalog.lock                     replicas: one changes the indexes at a time
    <data_dir>/blobs/<key[:2]>/<key>             original upload bytes
    <data_dir>/native/clip_image/                native CLIP index of image items
    <data_dir>/native/clap_audio/                native CLAP index of audio items
    <data_dir>/versions/<version>/checkpoint/    the bridge checkpoint of that version
                                  (config.json, weights.safetensors, report.json, captions.txt)
    <data_dir>/versions/<version>/shared_image/  image items projected by the CLIP projector
    <data_dir>/versions/<version>/shared_audio/  audio items projected by the CLAP projector
    <data_dir>/uploads/<id>/                     a multipart retrain's files while its job runs

Everything else under the data directory belongs to the user (e.g. corpus/ for caption files
and memories a retrain reads by relative path). Each index directory holds index.faiss,
ids.npy, tombstones.npy and manifest.json (bridge/index/files.py).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bridge.errors import ConflictError, InvalidInputError, NotFoundError
from bridge.modalities import check_modality, native_index_name, shared_index_name
from bridge.storage.locks import ProcessRLock

STORE_FILE = "store.sqlite"  # and its -wal, -shm and -journal files
LOCK_FILE = ".lock"
CATALOG_LOCK_FILE = ".catalog.lock"
BLOBS_DIR = "blobs"
NATIVE_DIR = "native"
VERSIONS_DIR = "versions"
UPLOADS_DIR = "uploads"
CHECKPOINT_DIR = "checkpoint"
CAPTIONS_FILE = "captions.txt"  # a version's training corpus, one caption per line
# The service's own storage, never read as a retrain input: opening and closing the SQLite
# file from another handle drops the process's POSIX locks on it, after which an outside
# reader may delete the WAL with acknowledged writes in it.
RESERVED_DIRS = (BLOBS_DIR, NATIVE_DIR, VERSIONS_DIR)
RESERVED_DATA_PATHS = (STORE_FILE, *RESERVED_DIRS)

_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_version_name(version: str) -> str:
    """A version name is 1-64 characters of [A-Za-z0-9._-], starting alphanumeric."""
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise InvalidInputError(
            f"version names are 1-64 characters of letters, digits, '.', '_' or '-', starting "
            f"with a letter or digit; got {version!r}"
        )
    return version


@dataclass(frozen=True)
class DataLayout:
    """Paths of one data directory (module docstring)."""

    root: Path

    @property
    def store_file(self) -> Path:
        return self.root / STORE_FILE

    @property
    def blobs_dir(self) -> Path:
        return self.root / BLOBS_DIR

    @property
    def uploads_dir(self) -> Path:
        return self.root / UPLOADS_DIR

    def native_dir(self, modality: str) -> Path:
        return self.root / NATIVE_DIR / native_index_name(check_modality(modality))

    def version_dir(self, version: str) -> Path:
        """``<data_dir>/versions/<version>`` (the name is validated: no path tricks)."""
        return self.root / VERSIONS_DIR / check_version_name(version)

    def checkpoint_dir(self, version: str) -> Path:
        return self.version_dir(version) / CHECKPOINT_DIR

    def checkpoint_ref(self, version: str) -> str:
        """How the store records a version's checkpoint: relative to the data directory."""
        return self.checkpoint_dir(version).relative_to(self.root).as_posix()

    def resolve_checkpoint_ref(self, ref: str) -> Path:
        path = Path(ref)
        return path if path.is_absolute() else self.root / path

    def shared_dir(self, version: str, modality: str) -> Path:
        return self.version_dir(version) / shared_index_name(check_modality(modality))

    def remove_version(self, version: str) -> None:
        """Remove a version's folder (checkpoint and indexes), e.g. after a failed retrain."""
        shutil.rmtree(self.version_dir(version), ignore_errors=True)

    def new_upload_dir(self) -> Path:
        """A fresh folder under uploads/ for one multipart retrain's files (not yet created)."""
        return self.uploads_dir / uuid.uuid4().hex

    def is_upload_dir(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.uploads_dir.resolve())

    def resolve_input(self, relative: str, what: str) -> Path:
        """A user's input file named relative to the data directory.

        Absolute paths, anything resolving outside the directory (``..``, symlinks) and the
        service's own storage (RESERVED_DATA_PATHS) raise InvalidInputError; a missing file
        raises NotFoundError."""
        if not isinstance(relative, str) or not relative.strip():
            raise InvalidInputError(f"{what}: expected a path relative to the data directory")
        if "\x00" in relative:
            raise InvalidInputError(f"{what}: the path contains a NUL byte")
        if Path(relative).is_absolute():
            raise InvalidInputError(
                f"{what}: absolute paths are not accepted; give a path relative to the data "
                "directory"
            )
        root = self.root.resolve()
        try:
            path = (root / relative).resolve()
            is_file = path.is_file()
        except OSError as exc:  # a name too long for the file system, say
            raise InvalidInputError(f"{what}: not a usable path ({exc.strerror or exc})") from exc
        if not path.is_relative_to(root):
            raise InvalidInputError(f"{what}: {relative!r} resolves outside the data directory")
        if _reserved(path.relative_to(root)):
            raise InvalidInputError(
                f"{what}: {relative!r} is the service's own storage "
                f"({', '.join(RESERVED_DATA_PATHS)}); put input files elsewhere under the data "
                "directory, e.g. corpus/"
            )
        if not is_file:
            raise NotFoundError(f"{what}: no file {relative!r} under the data directory")
        return path

    def lock(self, shared: bool = False) -> DirectoryLock:
        """Take the directory for this process (ConflictError when another holds it), or
        with ``shared`` for this replica (ConflictError only while a process holds it
        alone)."""
        return DirectoryLock(self.root / LOCK_FILE, shared)

    def catalog_lock(self) -> ProcessRLock:
        """The lock replicas sharing this directory take to change its indexes."""
        return ProcessRLock(self.root / CATALOG_LOCK_FILE)


def _reserved(relative: Path) -> bool:
    first = relative.parts[0] if relative.parts else ""
    return first in RESERVED_DIRS or first.startswith(STORE_FILE) or first == LOCK_FILE


class DirectoryLock:
    """An advisory lock on ``<data_dir>/.lock``, held while a service has the directory open.
    Exclusive by default: FAISS indexes live in that process's memory, so a second process
    (another server, or `mbridge retrain` while the server runs) would write indexes the first
    never sees. Shared for replicas whose indexes live on a Milvus server: they coordinate
    through the store and ``ProcessRLock``, and still keep out a process that wants the
    directory alone. The kernel drops the lock when the process dies, so a crash leaves none."""

    def __init__(self, path: Path, shared: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = path.open("a+")
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(self._file.fileno(), mode | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            self._file = None
            hint = (
                "replicas share a directory only on a Milvus server (BRIDGE_BACKEND=milvus, "
                "BRIDGE_MILVUS_URI=http://...)"
                if shared
                else "stop it first, or retrain through that server's POST /v1/admin/retrain"
            )
            raise ConflictError(
                f"data directory {path.parent} is in use by {holder}; {hint}"
            ) from exc
        if not shared:
            self._file.seek(0)
            self._file.truncate()
            self._file.write(f"process {os.getpid()}\n")
            self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor drops the flock
            self._file = None
