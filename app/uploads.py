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
from typing import Any, TypeVar

from starlette.datastructures import FormData, UploadFile

from bridge.errors import InvalidInputError, PayloadTooLargeError, disk_full_as_error
from bridge.types import Upload

CHUNK_BYTES = 1 << 20
_V = TypeVar("_V", UploadFile, str)


async def read_upload(
    file: UploadFile, limit: int, *, field: str = "file", setting: str = "BRIDGE_MAX_UPLOAD_BYTES"
) -> Upload:
    """The file's bytes as an engine Upload; 413 past `limit` bytes, 422 when empty."""
    size = _UploadSize(file, limit, field, setting)
    if file.size is not None:
        size.check(file.size)
    chunks: list[bytes] = []
    while chunk := await file.read(CHUNK_BYTES):
        chunks.append(size.add(chunk))
    size.finish()
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

    Raises PayloadTooLargeError past `limit`, InvalidInputError when empty and
    StorageFullError when the disk is full; the partial file is removed in each case.
    """
    size = _UploadSize(file, limit, field, setting)
    file.file.seek(0)
    with disk_full_as_error(f"the uploaded file {size.name!r}"):
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            with destination.open("wb") as out:
                while chunk := file.file.read(CHUNK_BYTES):
                    out.write(size.add(chunk))
            return size.finish()
        except BaseException:
            destination.unlink(missing_ok=True)
            raise


class _UploadSize:
    """Counts an upload's bytes as they are read: PayloadTooLargeError (413) as soon as they
    pass `limit`, InvalidInputError (422) when the file ends empty."""

    def __init__(self, file: UploadFile, limit: int, field: str, setting: str) -> None:
        self.name = file.filename or field
        self.field = field
        self.limit = limit
        self.setting = setting
        self.total = 0

    def check(self, total: int) -> None:
        if total > self.limit:
            raise PayloadTooLargeError(
                f"uploaded file {self.name!r} is larger than the limit of {self.limit} bytes "
                f"({self.setting})"
            )

    def add(self, chunk: bytes) -> bytes:
        self.total += len(chunk)
        self.check(self.total)
        return chunk

    def finish(self) -> int:
        if self.total == 0:
            raise InvalidInputError(f"uploaded file {self.name!r} (field `{self.field}`) is empty")
        return self.total


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- multipart forms
# Upload routes parse their form themselves, inside the route, so that auth dependencies run
# before any byte of the body is read (FastAPI parses declared File/Form bodies first).


def is_multipart(content_type: str | None) -> bool:
    return media_type(content_type) == "multipart/form-data"


def media_type(content_type: str | None) -> str:
    """`multipart/form-data; boundary=x` -> `multipart/form-data`."""
    return (content_type or "").split(";")[0].strip().lower()


def check_form_fields(form: FormData, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(form.keys()) - set(allowed))
    if unknown:
        raise InvalidInputError(
            f"unknown form field(s): {', '.join(unknown)}; expected {', '.join(allowed)}"
        )


def form_file(form: FormData, name: str) -> UploadFile:
    """The single file in field `name` (InvalidInputError when missing or not a file)."""
    file = optional_form_file(form, name)
    if file is None:
        raise InvalidInputError(f"the multipart body needs a `{name}` file field")
    return file


def optional_form_file(form: FormData, name: str) -> UploadFile | None:
    """The single file in field `name`, or None when the field is absent."""
    return _single_value(form, name, UploadFile, "an uploaded file, not a text field")


def form_files(form: FormData, name: str) -> list[UploadFile]:
    values = form.getlist(name)
    if not values:
        raise InvalidInputError(f"the multipart body needs one or more `{name}` file fields")
    files = [v for v in values if isinstance(v, UploadFile)]
    if len(files) != len(values):
        raise InvalidInputError(f"every `{name}` field must be an uploaded file")
    return files


def form_text(form: FormData, name: str) -> str | None:
    """The text field `name`, or None when absent or empty."""
    return _single_value(form, name, str, "a text field, not a file") or None


def _single_value(form: FormData, name: str, kind: type[_V], what: str) -> _V | None:
    """The one value of field `name`, which must be a `kind`; None when the field is absent."""
    values = form.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise InvalidInputError(f"give `{name}` once, not {len(values)} times")
    value = values[0]
    if not isinstance(value, kind):
        raise InvalidInputError(f"`{name}` must be {what}")
    return value


def file_property(description: str) -> dict[str, Any]:
    """OpenAPI schema of a file field in a multipart body (an empty file is refused)."""
    return {"type": "string", "format": "binary", "minLength": 1, "description": description}


def multipart_schema(
    properties: dict[str, Any], required: list[str], json_fields: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The OpenAPI media type object of a multipart/form-data body; `json_fields` are parts
    holding JSON (their schema is the JSON value's, and the encoding says so)."""
    schema = {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,  # the routes refuse unknown fields (check_form_fields)
    }
    media: dict[str, Any] = {"schema": schema}
    if json_fields:
        media["encoding"] = {name: {"contentType": "application/json"} for name in json_fields}
    return media


def multipart_body(
    properties: dict[str, Any], required: list[str], json_fields: tuple[str, ...] = ()
) -> dict[str, Any]:
    """`openapi_extra` documenting a multipart/form-data request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": multipart_schema(properties, required, json_fields)},
        }
    }
