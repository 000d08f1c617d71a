"""Admin endpoints: retrain a bridge in the background, follow the job, list, activate and
roll back bridge versions. Every route needs `Authorization: Bearer <BRIDGE_ADMIN_KEY>`.

POST /v1/admin/retrain takes JSON (captions inline or paths under the data dir) or
multipart uploads, which are saved under `<data_dir>/uploads/<id>/` and passed to the engine
as paths; they are removed again when the engine rejects the request, and when the job ends
(the captions stay with the new version's checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from app.deps import AdminAuth, ServiceDep, SettingsDep
from app.schemas.admin import (
    ActivateIn,
    JobOut,
    RetrainIn,
    VersionOut,
    VersionsOut,
)
from app.schemas.common import error_responses, json_type, parse_json_field, unusable_json
from app.settings import Settings
from app.uploads import (
    check_form_fields,
    file_property,
    form_text,
    is_multipart,
    media_type,
    multipart_body,
    optional_form_file,
    remove_tree,
    save_upload,
)
from bridge.errors import InvalidInputError
from bridge.service.retrain_plan import overrides_json_schema
from bridge.types import RETRAIN_INITS, RetrainRequest

if TYPE_CHECKING:
    from bridge.service import BridgeService

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[AdminAuth])

_FILE_FIELDS = ("captions", "image_memory", "audio_memory")
_TEXT_FIELDS = ("train_overrides", "activate", "init")

_OPENAPI_BODY = multipart_body(
    {
        "captions": file_property("UTF-8 text, one caption per line."),
        "image_memory": file_property(
            ".npy (N, D_clip) CLIP image embeddings; default: the stored images' embeddings."
        ),
        "audio_memory": file_property(
            ".npy (N, D_clap) CLAP audio embeddings; default: the stored audio's embeddings."
        ),
        "train_overrides": {
            **overrides_json_schema(),
            "description": 'JSON object of TrainConfig fields, e.g. {"epochs": 5}.',
        },
        "activate": {"type": "boolean", "default": False},
        "init": {
            "type": "string",
            "enum": list(RETRAIN_INITS),
            "default": "fresh",
            "description": "fresh weights, or the active version's (a warm start).",
        },
    },
    required=["captions"],
    json_fields=("train_overrides",),
)
_OPENAPI_BODY["requestBody"]["content"]["application/json"] = {
    "schema": RetrainIn.model_json_schema()
}


def _save_form_files(
    form: FormData, settings: Settings, folder: Path, service: BridgeService
) -> dict[str, str]:
    """Save the uploaded files under `folder`; returns field -> path relative to data_dir."""
    paths: dict[str, str] = {}
    names = {"captions": "captions.txt", "image_memory": "image.npy", "audio_memory": "audio.npy"}
    for field in _FILE_FIELDS:
        value = optional_form_file(form, field)
        if value is None:
            continue
        dest = folder / names[field]
        save_upload(value, dest, settings.max_admin_upload_bytes, field=field)
        if field != "captions":  # captions are read and checked by the retrain plan
            service.check_memory_file(dest, f"`{field}`")  # the plan checks the width
        paths[field] = dest.relative_to(settings.data_dir).as_posix()
    if "captions" not in paths:
        raise InvalidInputError("multipart retrain needs a `captions` file (one caption per line)")
    return paths


def _form_request(form: FormData, paths: dict[str, str], folder: str) -> RetrainRequest:
    raw = form_text(form, "train_overrides")
    overrides = parse_json_field(raw, "train_overrides") if raw else {}
    if not isinstance(overrides, dict):
        raise InvalidInputError(
            f"`train_overrides` must be a JSON object, got {json_type(overrides)}"
        )
    try:
        body = RetrainIn.model_validate(
            {
                "captions_path": paths["captions"],
                "image_memory_path": paths.get("image_memory"),
                "audio_memory_path": paths.get("audio_memory"),
                "train_overrides": overrides,
                "activate": form_text(form, "activate") or False,
                "init": form_text(form, "init") or "fresh",
            },
            strict=False,  # form fields are text: "true" is a boolean here
        )
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("form", *e.get("loc", ()))} for e in exc.errors()]
        ) from exc
    return dataclasses.replace(body.to_request(), inputs_dir=folder)


async def _start_from_form(request: Request, service: BridgeService, settings: Settings) -> JobOut:
    folder = service.retrain_upload_dir()
    async with request.form(max_files=len(_FILE_FIELDS), max_fields=8) as form:
        check_form_fields(form, _FILE_FIELDS + _TEXT_FIELDS)
        try:
            paths = await run_in_threadpool(_save_form_files, form, settings, folder, service)
            inputs = str(folder.relative_to(settings.data_dir))
            job = await run_in_threadpool(service.start_retrain, _form_request(form, paths, inputs))
        except BaseException:
            await run_in_threadpool(remove_tree, folder)
            raise
    return JobOut.of(job)


@router.post(
    "/retrain",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    summary="Train a new bridge version in the background",
    description=(
        "JSON: `captions` (list) or `captions_path`, optional `image_memory_path` / "
        "`audio_memory_path` (.npy under the data dir), `train_overrides`, `activate`, "
        "`init` (`fresh`, or `active`: start from the active version's weights). "
        "Multipart: a `captions` file and optional `image_memory` / `audio_memory` .npy "
        "files. Without memories the stored items' raw embeddings are used, so a retrain "
        "adapts the bridge to this collection without paired data. Answers 202 with the job; "
        "follow it at GET /v1/admin/jobs/{job_id}."
    ),
    openapi_extra=_OPENAPI_BODY,
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503, 507),
)
async def retrain(request: Request, service: ServiceDep, settings: SettingsDep) -> JobOut:
    content_type = media_type(request.headers.get("content-type"))
    if is_multipart(content_type):
        return await _start_from_form(request, service, settings)
    if content_type != "application/json":
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send application/json or multipart/form-data, not {content_type or 'no body'!r}",
        )
    try:
        payload = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidInputError("body is nested too deeply to parse") from exc
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InvalidInputError(f"body is not usable JSON: {unusable_json(exc)}") from exc
    try:
        body = RetrainIn.model_validate(payload)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e.get("loc", ()))} for e in exc.errors()]
        ) from exc
    job = await run_in_threadpool(service.start_retrain, body.to_request())
    return JobOut.of(job)


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="Status, progress and metrics of a job",
    responses=error_responses(401, 403, 404, 503),
)
async def get_job(job_id: str, service: ServiceDep) -> JobOut:
    return JobOut.of(await run_in_threadpool(service.get_job, job_id))


@router.get(
    "/versions",
    response_model=VersionsOut,
    summary="Every bridge version and which one is active",
    responses=error_responses(401, 403, 503),
)
async def list_versions(service: ServiceDep) -> VersionsOut:
    records = await run_in_threadpool(service.list_versions)
    active = next((r.version for r in records if r.active), None)
    return VersionsOut(active=active, versions=[VersionOut.of(r) for r in records])


@router.post(
    "/activate",
    response_model=VersionOut,
    summary="Switch the bridged space to a ready version (atomic)",
    description="Queries in flight finish on the version they started with; later queries "
    "use the new one. 409 unless the version is ready.",
    responses=error_responses(400, 401, 403, 404, 409, 422, 503, 507),
)
async def activate(body: ActivateIn, service: ServiceDep) -> VersionOut:
    return VersionOut.of(await run_in_threadpool(service.activate, body.version))


@router.post(
    "/rollback",
    response_model=VersionOut,
    summary="Switch back to the previously active version",
    responses=error_responses(401, 403, 409, 503, 507),
)
async def rollback(service: ServiceDep) -> VersionOut:
    return VersionOut.of(await run_in_threadpool(service.rollback))
