"""Search endpoints: one query (JSON or a multipart file upload) or a batch of JSON queries.

POST /v1/search takes either body type, so it parses the body itself (FastAPI binds one
body type per route) and documents both in OpenAPI through `openapi_extra`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.batcher import SearchBatcher
from app.deps import APIAuth, ServiceDep, SettingsDep
from app.offload import offload
from app.schemas.common import error_responses, parse_json_field
from app.schemas.search import (
    SearchBatchRequest,
    SearchBatchResponse,
    SearchParams,
    SearchRequest,
    SearchResponseOut,
    params_to_query,
    search_response_json,
)
from app.uploads import (
    check_form_fields,
    file_property,
    form_file,
    form_text,
    is_multipart,
    media_type,
    multipart_schema,
    read_upload,
)
from bridge.types import SearchQuery

if TYPE_CHECKING:
    from bridge.service import BridgeService

SEARCH_PATH = "/v1/search"
router = APIRouter(prefix=SEARCH_PATH, tags=["search"], dependencies=[APIAuth])
batch_router = APIRouter(prefix=SEARCH_PATH, tags=["search"], dependencies=[APIAuth])

JSON = "application/json"
_FORM_FIELDS = ("target", "k", "offset", "min_score", "filters")


def _multipart_media() -> dict[str, Any]:
    params = SearchParams.model_json_schema()
    props: dict[str, Any] = {"file": file_property("Image or audio file to search with.")}
    for name in _FORM_FIELDS:
        props[name] = dict(params["properties"][name])
    return multipart_schema(props, ["file", "target"], json_fields=("filters",))


# The JSON body's schema is completed per server (vector lengths): app/openapi.py.
_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": SearchRequest.model_json_schema()},
            "multipart/form-data": _multipart_media(),
        },
    }
}


def _invalid(error: ValidationError, prefix: str) -> RequestValidationError:
    errors = [{**e, "loc": (prefix, *e.get("loc", ()))} for e in error.errors()]
    return RequestValidationError(errors)


def is_json(content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind == JSON or kind.endswith("+json")


async def answer_json_search(batcher: SearchBatcher, service: BridgeService, body: bytes) -> bytes:
    """The JSON answer to a JSON search body. JSON queries share engine calls (app/batcher.py).
    Served by app/fastpath.py before routing, and by the route below without it."""
    query = _json_query(body)
    cheap = service.is_quick(query)  # may run on the event loop when alone (app/batcher.py)
    response = await batcher.submit(service.search_each, query, cheap=cheap)
    # Serialised here, once: returning the model would make FastAPI validate it again.
    return search_response_json(response)


def _json_query(body: bytes) -> SearchQuery:
    # Parsed and validated in one pass by pydantic's JSON parser: parsing a 512-float vector
    # with the stdlib json module first was a visible share of the event loop's time.
    try:
        return SearchRequest.model_validate_json(body).to_query()
    except ValidationError as exc:
        bad_json = [e for e in exc.errors() if e.get("type") == "json_invalid"]
        if bad_json:
            reason = bad_json[0].get("ctx", {}).get("error", bad_json[0]["msg"])
            raise RequestValidationError(
                [
                    {
                        "loc": ("body",),
                        "msg": f"body is not valid JSON ({reason})",
                        "type": "json_invalid",
                    }
                ]
            ) from exc
        raise _invalid(exc, "body") from exc


async def _form_query(request: Request, max_upload_bytes: int) -> SearchQuery:
    async with request.form(max_files=1, max_fields=len(_FORM_FIELDS)) as form:
        check_form_fields(form, ("file", *_FORM_FIELDS))
        file = form_file(form, "file")
        fields: dict[str, Any] = {
            name: value for name in _FORM_FIELDS if (value := form_text(form, name)) is not None
        }
        if "filters" in fields:
            fields["filters"] = parse_json_field(fields["filters"], "filters")
        try:
            params = SearchParams.model_validate(fields)
        except ValidationError as exc:
            raise _invalid(exc, "form") from exc
        upload = await read_upload(file, max_upload_bytes)
    return params_to_query(params, upload)


@router.post(
    "",
    response_model=SearchResponseOut,
    summary="Search images or audio by text, vector, stored item or uploaded file",
    description=(
        "JSON: exactly one of `text`, `vector` + `space`, or `item_id`; or multipart with a "
        "`file` (image or audio). Both take `target` ('image' or 'audio'), `k` (1..1000, "
        "default 10), `offset`, `min_score` and `filters` (exact match on metadata; a JSON "
        "string in multipart). Text->image and image->image are answered in native CLIP, "
        "text->audio and audio->audio in native CLAP, audio<->image in the bridged space; "
        "`space` in the answer says which, and `bridge_version` which bridge answered."
    ),
    openapi_extra=_OPENAPI_BODY,
    responses=error_responses(400, 401, 404, 409, 413, 415, 422, 503),
)
async def search(request: Request, service: ServiceDep, settings: SettingsDep) -> Response:
    content_type = request.headers.get("content-type")
    if is_json(content_type):  # app/fastpath.py answers these first when it is installed
        body = await request.body()
        return Response(
            await answer_json_search(request.app.state.batcher, service, body), media_type=JSON
        )
    kind = media_type(content_type)
    if not is_multipart(kind):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send application/json or multipart/form-data, not {kind or 'no body'!r}",
        )
    query = await _form_query(request, settings.max_upload_bytes)
    response = await offload(request, service.search, query)
    return Response(search_response_json(response), media_type=JSON)


@batch_router.post(
    "/batch",
    response_model=SearchBatchResponse,
    summary="Run several JSON queries in one call",
    description="`queries` is a list of JSON search bodies (text, vector or item_id); answers "
    "come back in the same order. Any invalid query rejects the whole batch.",
    responses=error_responses(400, 401, 404, 409, 413, 422, 503),
)
async def search_batch(
    request: Request, body: SearchBatchRequest, service: ServiceDep, settings: SettingsDep
) -> SearchBatchResponse:
    if len(body.queries) > settings.max_batch:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"{len(body.queries)} queries in one batch; the limit is {settings.max_batch} "
            "(BRIDGE_MAX_BATCH)",
        )
    queries = [q.to_query() for q in body.queries]
    responses = await offload(request, service.search_many, queries)
    return SearchBatchResponse(responses=[SearchResponseOut.of(r) for r in responses])
