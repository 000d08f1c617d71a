"""Domain errors. app/ maps each class to one HTTP status in a single place.

Every error message says what was wrong and, where it helps, what was expected.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager


class BridgeError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidInputError(BridgeError):
    """A parameter or array is malformed (wrong dtype, rank, shape, NaN...). HTTP 422."""


class MediaDecodeError(InvalidInputError):
    """A file claims a supported type but cannot be decoded. HTTP 422."""


class UnsupportedMediaError(BridgeError):
    """The file is not an image or audio format we read, or the wrong modality. HTTP 415."""


class PayloadTooLargeError(BridgeError):
    """The upload exceeds the size or audio-duration limit. HTTP 413."""


class NotFoundError(BridgeError):
    """An item, job, version or file does not exist. HTTP 404."""


class ConflictError(BridgeError):
    """The request conflicts with current state (e.g. activating an unready version). HTTP 409."""


class BackendUnavailableError(BridgeError):
    """A server the engine depends on (the Milvus vector backend) did not answer; the
    request may succeed later. HTTP 503 with Retry-After."""

    dependency = "vector backend"  # what the 503's message says is unavailable
    condition = "unavailable"  # ... and in what way


class StoreUnavailableError(BackendUnavailableError):
    """The item store's database server (PostgreSQL) did not answer."""

    dependency = "item store"


class StoreBusyError(StoreUnavailableError):
    """Another process held the item store's write lock (a SQLite file) past the store's
    busy timeout; the write was not made. HTTP 503 with Retry-After."""

    condition = "busy"


class StorageFullError(BridgeError):
    """The file system under the data directory (or the user's quota on it) is full; what
    was being written was not kept. HTTP 507."""


class CheckpointError(BridgeError):
    """A bridge checkpoint folder is missing files or does not fit the data."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint's files are missing, unreadable, or not the ones recorded for its version
    (their sha256 differs): damaged or changed on disk, never to be served."""


class ModelLoadError(BridgeError):
    """An encoder could not be loaded from the given hub id or folder."""


# errno values that mean "no room left": the disk, or the user's quota on it.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# How libraries that write files themselves (FAISS, safetensors) word it in their errors.
_DISK_FULL_TEXTS = tuple(os.strerror(code) for code in sorted(DISK_FULL_ERRNOS))


def is_disk_full(exc: BaseException) -> bool:
    """True for an error that says the disk or quota is full: an OSError with ENOSPC or
    EDQUOT, or a library's error whose message carries their text (FAISS and safetensors
    raise RuntimeError-like errors with the strerror in the message)."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in DISK_FULL_ERRNOS
    return any(text in str(exc) for text in _DISK_FULL_TEXTS)


@contextmanager
def disk_full_as_error(what: str) -> Iterator[None]:
    """Inside the block, an error saying the disk is full becomes StorageFullError naming
    `what` (e.g. "the index at /data/native/clip_image"); other errors pass unchanged. The
    caller removes whatever it had half-written (its own except/finally runs first when the
    block is inside it)."""
    try:
        yield
    except StorageFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise StorageFullError(
            f"the disk is full: could not write {what} (free space on the data directory's "
            "file system, then retry)"
        ) from exc
