"""Reading uploaded files with a size cap.

Starlette's multipart parser spools each file to a temporary file (memory up to 1 MB, then
disk), and the per-route body limit (FastAPI `max_body_size`, which also rejects an
oversized Content-Length before reading) bounds the total. Here each file is read in chunks
and rejected with PayloadTooLargeError (413) as soon as it passes the per-file limit, so no
more than `limit` bytes of one file are ever held in memory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from starlette.datastructures import UploadFile

from bridge.errors import InvalidInputError, PayloadTooLargeError
from bridge.service_types import Upload

CHUNK_BYTES = 1 << 20


async def read_upload(
    file: UploadFile, limit: int, *, field: str = "file", setting: str = "BRIDGE_MAX_UPLOAD_BYTES"
) -> Upload:
    """The file's bytes as an engine Upload; 413 past `limit` bytes, 422 when empty."""
    name = file.filename or field
    if file.size is not None and file.size > limit:
        raise _too_large(name, limit, setting)
    chunks: list[bytes] = []
    total = 0
    while chunk := await file.read(CHUNK_BYTES):
        total += len(chunk)
        if total > limit:
            raise _too_large(name, limit, setting)
        chunks.append(chunk)
    if total == 0:
        raise InvalidInputError(f"uploaded file {name!r} (field `{field}`) is empty")
    return Upload(data=b"".join(chunks), filename=file.filename, content_type=file.content_type)


def save_upload(
    file: UploadFile,
    destination: Path,
    limit: int,
    *,
    field: str,
    setting: str = "BRIDGE_MAX_ADMIN_UPLOAD_BYTES",
) -> int:
    """Copy an upload to `destination` in chunks (blocking; run in a thread). Returns bytes.

    Raises PayloadTooLargeError past `limit` and InvalidInputError when empty; the partial
    file is removed in both cases.
    """
    name = file.filename or field
    total = 0
    destination.parent.mkdir(parents=True, exist_ok=True)
    file.file.seek(0)
    try:
        with destination.open("wb") as out:
            while chunk := file.file.read(CHUNK_BYTES):
                total += len(chunk)
                if total > limit:
                    raise _too_large(name, limit, setting)
                out.write(chunk)
        if total == 0:
            raise InvalidInputError(f"uploaded file {name!r} (field `{field}`) is empty")
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return total


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _too_large(name: str, limit: int, setting: str) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"uploaded file {name!r} is larger than the limit of {limit} bytes ({setting})"
    )
