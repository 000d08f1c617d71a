"""Request and response bodies of the HTTP API (pydantic), and their mapping to the engine's
dataclasses (bridge.types).

Request models forbid unknown fields so that a misspelt parameter is a 422, not ignored.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import to_json

from bridge.errors import InvalidInputError
from bridge.types import (
    FilterValue,
    ItemRecord,
    JobRecord,
    RetrainRequest,
    SearchQuery,
    SearchResponse,
    Upload,
    VersionRecord,
)

Modality = Literal["image", "audio"]
Space = Literal["clip", "clap", "shared"]
MAX_K = 1000
MAX_TEXT_CHARS = 2000
MAX_VECTOR_DIM = 8192
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
MAX_CAPTIONS = 1_000_000


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong, in words.", examples=["item 'x' not found"])


# ---------------------------------------------------------------- items


class ItemCreated(BaseModel):
    id: str
    modality: Modality

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": "3f2a...", "modality": "image"}]}
    )


class ItemBatchCreated(BaseModel):
    items: list[ItemCreated]


class ItemOut(BaseModel):
    id: str
    modality: Modality
    metadata: dict[str, Any]
    created_at: str

    @classmethod
    def of(cls, record: ItemRecord) -> ItemOut:
        return cls(
            id=record.id,
            modality=record.modality,
            metadata=record.metadata,
            created_at=record.created_at,
        )


# ---------------------------------------------------------------- search


class SearchParams(BaseModel):
    """What every search takes besides the query itself."""

    model_config = ConfigDict(extra="forbid")

    target: Modality = Field(description="Modality of the items to return.")
    k: int = Field(default=10, ge=1, le=MAX_K, description="Number of results.")
    offset: int = Field(default=0, ge=0, le=MAX_K, description="Results to skip (paging).")
    min_score: float | None = Field(
        default=None,
        ge=-1.0,
        le=1.0,
        description="Drop results scoring below this cosine similarity.",
    )
    filters: dict[str, FilterValue] = Field(
        default_factory=dict,
        description='Exact-match filters on metadata keys, e.g. {"label": "7"}.',
    )

    @field_validator("filters")
    @classmethod
    def _check_filters(cls, value: dict[str, FilterValue]) -> dict[str, FilterValue]:
        if len(value) > 32:
            raise ValueError("at most 32 filters")
        for key in value:
            if not key or len(key) > 128:
                raise ValueError("filter keys must be 1 to 128 characters")
        return value

    @model_validator(mode="after")
    def _check_window(self) -> SearchParams:
        if self.k + self.offset > MAX_K:
            raise ValueError(f"k + offset must be at most {MAX_K}")
        return self


class SearchRequest(SearchParams):
    """A JSON search: exactly one of `text`, `vector` (with `space`) or `item_id`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "a photo of the digit seven", "target": "image", "k": 5},
                {"item_id": "3f2a...", "target": "audio"},
                {"vector": [0.1, 0.0, 0.3], "space": "clip", "target": "image"},
            ]
        },
    )

    text: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT_CHARS)
    # Finite numbers only, checked by pydantic-core itself (a Python loop over 512 floats was
    # a visible share of the event loop's time per request).
    vector: list[FiniteFloat] | None = Field(default=None, min_length=1, max_length=MAX_VECTOR_DIM)
    space: Space | None = Field(default=None, description="The space `vector` lives in.")
    item_id: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        given = [n for n in ("text", "vector", "item_id") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of text, vector (with space) or item_id"
                + (f"; got {', '.join(given)}" if given else "")
                + " (or send multipart/form-data with a `file`)"
            )
        if self.vector is not None and self.space is None:
            raise ValueError("vector needs space: 'clip', 'clap' or 'shared'")
        if self.vector is None and self.space is not None:
            raise ValueError("space is only meaningful with vector")
        return self

    def to_query(self) -> SearchQuery:
        return SearchQuery(
            target=self.target,
            text=self.text,
            vector=self.vector,
            space=self.space,
            item_id=self.item_id,
            k=self.k,
            offset=self.offset,
            min_score=self.min_score,
            filters=dict(self.filters),
        )


def params_to_query(params: SearchParams, media: Upload) -> SearchQuery:
    """A media (file upload) search."""
    return SearchQuery(
        target=params.target,
        media=media,
        k=params.k,
        offset=params.offset,
        min_score=params.min_score,
        filters=dict(params.filters),
    )


class SearchBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: list[SearchRequest] = Field(min_length=1)


class SearchHitOut(BaseModel):
    id: str
    score: float
    modality: Modality
    metadata: dict[str, Any]


class SearchResponseOut(BaseModel):
    results: list[SearchHitOut]
    space: Space = Field(description="The space that answered: native clip or clap, or shared.")
    bridge_version: str | None = Field(
        description="Bridge version whose shared index answered; null for native spaces."
    )
    query_modality: str
    timings_ms: dict[str, float]

    @classmethod
    def of(cls, response: SearchResponse) -> SearchResponseOut:
        return cls(
            results=[
                SearchHitOut(id=h.id, score=h.score, modality=h.modality, metadata=h.metadata)  # type: ignore[arg-type]
                for h in response.results
            ],
            space=response.space,
            bridge_version=response.bridge_version,
            query_modality=response.query_modality,
            timings_ms=dict(response.timings_ms),
        )


def search_response_json(response: SearchResponse) -> bytes:
    """The JSON of `SearchResponseOut.of(response)`, built without validating the engine's own
    output again (the shape is the model's; tests compare the two)."""
    return to_json(
        {
            "results": [
                {"id": h.id, "score": h.score, "modality": h.modality, "metadata": h.metadata}
                for h in response.results
            ],
            "space": response.space,
            "bridge_version": response.bridge_version,
            "query_modality": response.query_modality,
            "timings_ms": dict(response.timings_ms),
        }
    )


class SearchBatchResponse(BaseModel):
    responses: list[SearchResponseOut]


# ---------------------------------------------------------------- admin


class RetrainIn(BaseModel):
    """A retrain from captions (inline and/or a file under the data dir) and optional memories."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"captions": ["a dog barking", "rain on a window"], "activate": True},
                {"captions_path": "corpus/captions.txt", "train_overrides": {"epochs": 5}},
            ]
        },
    )

    captions: list[str] | None = Field(default=None, min_length=1, max_length=MAX_CAPTIONS)
    captions_path: str | None = Field(
        default=None, min_length=1, description="Relative to the data dir."
    )
    image_memory_path: str | None = Field(
        default=None,
        description=".npy of CLIP image embeddings under the data dir; default: stored.",
    )
    audio_memory_path: str | None = Field(
        default=None,
        description=".npy of CLAP audio embeddings under the data dir; default: stored.",
    )
    train_overrides: dict[str, Any] = Field(
        default_factory=dict, description='TrainConfig fields, e.g. {"epochs": 5}.'
    )
    activate: bool = Field(default=False, description="Activate the new version once it is ready.")

    @model_validator(mode="after")
    def _some_corpus(self) -> RetrainIn:
        if self.captions is None and self.captions_path is None:
            raise ValueError("give captions (a list) and/or captions_path (a file)")
        return self

    def to_request(self) -> RetrainRequest:
        return RetrainRequest(
            captions=self.captions,
            captions_path=self.captions_path,
            image_memory_path=self.image_memory_path,
            audio_memory_path=self.audio_memory_path,
            train_overrides=dict(self.train_overrides),
            activate=self.activate,
        )


class JobOut(BaseModel):
    job_id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: float
    message: str
    version: str | None
    metrics: dict[str, Any]
    error: str | None
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, job: JobRecord) -> JobOut:
        return cls(
            job_id=job.id,
            kind=job.kind,
            status=job.status,
            progress=job.progress,
            message=job.message,
            version=job.version,
            metrics=job.metrics,
            error=job.error,
            created_at=job.created_at,
            updated_at=job.updated_at,
        )


class VersionOut(BaseModel):
    version: str
    status: Literal["training", "ready", "failed"]
    active: bool
    checkpoint_sha256: str | None
    created_at: str
    metrics: dict[str, Any]

    @classmethod
    def of(cls, record: VersionRecord) -> VersionOut:
        return cls(
            version=record.version,
            status=record.status,
            active=record.active,
            checkpoint_sha256=record.checkpoint_sha256,
            created_at=record.created_at,
            metrics=record.metrics,
        )


class VersionsOut(BaseModel):
    active: str | None
    versions: list[VersionOut]


class ActivateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1, max_length=200)


# ---------------------------------------------------------------- health


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    ready: bool
    phase: str
    detail: str | None = None
    engine: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- form fields and docs

MAX_METADATA_CHARS = 65_536

_ERROR_TEXT = {
    400: "Malformed request (e.g. a broken multipart body).",
    401: "Missing or wrong bearer key.",
    403: "Admin endpoints disabled: BRIDGE_ADMIN_KEY is not set.",
    404: "Unknown id.",
    409: "Conflicts with the current state.",
    413: "Upload larger than the size or audio-duration limit.",
    415: "Not an image or audio format the service reads.",
    422: "Undecodable file or invalid parameters.",
    503: "The engine is still loading (see /readyz).",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses (all use ErrorOut)."""
    return {code: {"model": ErrorOut, "description": _ERROR_TEXT[code]} for code in codes}


def parse_json_field(raw: str | None, field: str) -> Any:
    """Decode a JSON-valued form field; InvalidInputError (422) names the field."""
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_METADATA_CHARS:
        raise InvalidInputError(f"`{field}` is longer than {MAX_METADATA_CHARS} characters")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"`{field}` is not valid JSON: {exc.msg} at {exc.pos}") from exc
    except RecursionError as exc:  # nesting deeper than the interpreter's stack
        raise InvalidInputError(f"`{field}` is nested too deeply to parse") from exc
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InvalidInputError(f"`{field}` is not usable JSON: {unusable_json(exc)}") from exc


def unusable_json(exc: ValueError) -> str:
    """Why json.loads refused text that parses (Python's own wording speaks to developers)."""
    if "digits" in str(exc):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return str(exc)


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """The `metadata` form field: a JSON object (absent = {})."""
    value = parse_json_field(raw, "metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"`metadata` must be a JSON object, got {type(value).__name__}")
    return value


def parse_metadata_list(raw: str | None, count: int) -> list[dict[str, Any]]:
    """The batch `metadata` form field: a JSON array with one object per file (absent = {})."""
    value = parse_json_field(raw, "metadata")
    if value is None:
        return [{} for _ in range(count)]
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidInputError("`metadata` must be a JSON array of objects, one per file")
    if len(value) != count:
        raise InvalidInputError(
            f"`metadata` has {len(value)} objects but {count} files were uploaded"
        )
    return value
