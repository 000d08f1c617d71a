"""Item endpoints: add (one or a batch), read, delete, and fetch the original bytes."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from app.deps import APIAuth, ServiceDep, SettingsDep
from app.schemas.common import error_responses
from app.schemas.items import (
    ItemBatchCreated,
    ItemCreated,
    ItemOut,
    parse_metadata,
    parse_metadata_list,
)
from app.uploads import (
    check_form_fields,
    file_property,
    form_file,
    form_files,
    form_text,
    is_multipart,
    media_type,
    multipart_body,
    read_upload,
)

router = APIRouter(prefix="/v1/items", tags=["items"], dependencies=[APIAuth])
# Separate router so that create_app can give batch uploads a larger body limit.
batch_router = APIRouter(prefix="/v1/items", tags=["items"], dependencies=[APIAuth])

_MEDIA_DOC = "An image (PNG, JPEG, ...) or an audio file (WAV, FLAC, OGG, ...)."
_SINGLE_BODY = multipart_body(
    {
        "file": file_property(_MEDIA_DOC),
        "metadata": {
            "type": "object",
            "description": 'Optional JSON object stored with the item, e.g. {"label": "7"}.',
        },
    },
    required=["file"],
    json_fields=("metadata",),
)
_BATCH_BODY = multipart_body(
    {
        "files": {"type": "array", "items": file_property(_MEDIA_DOC), "minItems": 1},
        "metadata": {
            "type": "array",
            "items": {"type": "object"},
            "description": 'Optional JSON array with one object per file, e.g. [{"n": 1}, {}].',
        },
    },
    required=["files"],
    json_fields=("metadata",),
)


def _require_multipart(request: Request) -> None:
    if not is_multipart(request.headers.get("content-type")):
        kind = media_type(request.headers.get("content-type")) or "no body"
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send multipart/form-data with the file(s), not {kind!r}",
        )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ItemCreated,
    summary="Add one image or audio file",
    description="Multipart upload: field `file` (an image or audio file) and optional "
    "`metadata` (a JSON object). The file is decoded and embedded with the CLIP image or "
    "CLAP audio tower; nothing is stored when the request is rejected.",
    openapi_extra=_SINGLE_BODY,
    responses=error_responses(400, 401, 413, 415, 422, 503, 507),
)
async def add_item(request: Request, service: ServiceDep, settings: SettingsDep) -> ItemCreated:
    _require_multipart(request)
    async with request.form(max_files=1, max_fields=1) as form:
        check_form_fields(form, ("file", "metadata"))
        meta = parse_metadata(form_text(form, "metadata"))
        upload = await read_upload(form_file(form, "file"), settings.max_upload_bytes)
    (record,) = await run_in_threadpool(service.add_items, [upload], [meta])
    return ItemCreated.of(record)


@batch_router.post(
    "/batch",
    status_code=status.HTTP_201_CREATED,
    response_model=ItemBatchCreated,
    summary="Add several files in one call (all or nothing)",
    description="Multipart upload: repeated field `files` and optional `metadata`, a JSON array "
    "with one object per file. Either every file is stored or none is. At most "
    "BRIDGE_MAX_BATCH files.",
    openapi_extra=_BATCH_BODY,
    responses=error_responses(400, 401, 413, 415, 422, 503, 507),
)
async def add_items(
    request: Request, service: ServiceDep, settings: SettingsDep
) -> ItemBatchCreated:
    _require_multipart(request)
    # One file over the limit still parses (and gets the 422 below); far more stop the parser.
    async with request.form(max_files=settings.max_batch + 1, max_fields=1) as form:
        check_form_fields(form, ("files", "metadata"))
        files = form_files(form, "files")
        if len(files) > settings.max_batch:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                f"more than {settings.max_batch} files in one batch (BRIDGE_MAX_BATCH)",
            )
        metas = parse_metadata_list(form_text(form, "metadata"), len(files))
        uploads = [await read_upload(f, settings.max_upload_bytes, field="files") for f in files]
    records = await run_in_threadpool(service.add_items, uploads, metas)
    return ItemBatchCreated(items=[ItemCreated.of(r) for r in records])


@router.get(
    "/{item_id}",
    response_model=ItemOut,
    summary="Read one item",
    responses=error_responses(401, 404, 503),
)
async def get_item(item_id: str, service: ServiceDep) -> ItemOut:
    record = await run_in_threadpool(service.get_item, item_id)
    return ItemOut.of(record)


@router.delete(
    "/{item_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete one item (and its vectors in every index)",
    responses=error_responses(401, 404, 503, 507),
)
async def delete_item(item_id: str, service: ServiceDep) -> Response:
    await run_in_threadpool(service.delete_item, item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{item_id}/content",
    response_class=Response,
    summary="The item's original bytes (for the search page)",
    responses={
        200: {
            "content": {"image/*": {}, "audio/*": {}},
            "description": "The uploaded file as it was received.",
        },
        **error_responses(401, 404, 503),
    },
)
async def get_item_content(item_id: str, service: ServiceDep) -> Response:
    data, content_type = await run_in_threadpool(service.get_item_content, item_id)
    if not content_type.startswith(("image/", "audio/")):
        # Never let stored bytes be served as something a browser would run (HTML, SVG...).
        content_type = "application/octet-stream"
    elif content_type.startswith("image/svg"):
        content_type = "application/octet-stream"
    return Response(
        content=data,
        media_type=content_type,
        headers={
            "Cache-Control": "private, max-age=3600",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )
