"""Bodies of the search endpoints (/v1/search) and their mapping to the engine's SearchQuery
and from its SearchResponse.

Request models forbid unknown fields so that a misspelt parameter is a 422, not ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import to_json

from app.schemas.common import RecordOut
from bridge.modalities import Modality, SpaceName
from bridge.types import MAX_K, FilterValue, SearchQuery, SearchResponse, Upload

MAX_TEXT_CHARS = 2000
MAX_VECTOR_DIM = 8192
MAX_FILTERS = 32
MAX_FILTER_KEY_CHARS = 128
# A component beyond float32's range would overflow to infinity in the engine.
FLOAT32_MAX = 3.4028234663852886e38
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
FilterKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_FILTER_KEY_CHARS)]
# Some character that is not whitespace (as str.isspace, which the engine's strip() uses, and
# Python's re, in which pydantic checks it here, agree).
NOT_BLANK = r"\S"


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
    filters: dict[FilterKey, FilterValue] = Field(
        default_factory=dict,
        max_length=MAX_FILTERS,
        description='Exact-match filters on metadata keys, e.g. {"label": "7"}.',
    )

    @model_validator(mode="after")
    def _check_window(self) -> SearchParams:
        if self.k + self.offset > MAX_K:
            raise ValueError(f"k + offset must be at most {MAX_K}")
        return self


class SearchRequest(SearchParams):
    """A JSON search: exactly one of `text`, `vector` (with `space`) or `item_id`."""

    # Strict: JSON gives types, and "10" or true where a number belongs is an error, as the
    # schema says (the multipart form, whose fields are all text, validates SearchParams).
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        regex_engine="python-re",
        json_schema_extra={
            "examples": [
                {"text": "a photo of the digit seven", "target": "image", "k": 5},
                {"item_id": "3f2a...", "target": "audio"},
                {"vector": [0.1, 0.0, 0.3], "space": "clip", "target": "image"},
            ]
        },
    )

    text: str | None = Field(
        default=None, min_length=1, max_length=MAX_TEXT_CHARS, pattern=NOT_BLANK
    )
    # Finite numbers only, checked by pydantic-core itself (a Python loop over 512 floats was
    # a visible share of the event loop's time per request).
    vector: list[FiniteFloat] | None = Field(default=None, min_length=1, max_length=MAX_VECTOR_DIM)
    space: SpaceName | None = Field(default=None, description="The space `vector` lives in.")
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
        return SearchQuery(**vars(self))  # the engine's fields have the body's names


def search_request_schema(dims: dict[str, int]) -> dict[str, Any]:
    """The served JSON Schema of a SearchRequest: one alternative per kind of query (text,
    item_id, and a vector of each space, with that space's length where `dims` knows it),
    so that a body the schema accepts is one the server accepts (app/openapi.py)."""
    model = SearchRequest.model_json_schema()
    params = {name: model["properties"][name] for name in SearchParams.model_fields}

    def one(name: str, schema: dict[str, Any], **extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "title": f"SearchBy{name.title().replace('_', '')}",
            "required": [name, "target", *extra],
            "properties": {**params, name: schema, **extra},
            "additionalProperties": False,
        }

    def not_null(name: str) -> dict[str, Any]:
        (schema,) = [s for s in model["properties"][name]["anyOf"] if s.get("type") != "null"]
        return dict(schema)

    vector = not_null("vector")
    alternatives = [one("text", not_null("text")), one("item_id", not_null("item_id"))]
    for space in ("clip", "clap", "shared"):
        length = dims.get(space)
        sized = {**vector, "minItems": length, "maxItems": length} if length else vector
        sized["not"] = {"items": {"const": 0}}  # all zeros: no direction to search
        alternatives.append(one("vector", sized, space={"const": space}))
        alternatives[-1]["title"] = f"SearchByVector{space.title()}"
    return {
        "title": "SearchRequest",
        "description": SearchRequest.__doc__,
        "oneOf": alternatives,
        "examples": model.get("examples", []),
    }


def params_to_query(params: SearchParams, media: Upload) -> SearchQuery:
    """A media (file upload) search."""
    return SearchQuery(media=media, **vars(params))


class SearchBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    queries: list[SearchRequest] = Field(min_length=1)


class SearchHitOut(RecordOut):
    id: str
    score: float
    modality: Modality
    metadata: dict[str, Any]


class SearchResponseOut(RecordOut):
    results: list[SearchHitOut]
    space: SpaceName = Field(description="The space that answered: native clip or clap, or shared.")
    bridge_version: str | None = Field(
        description="Bridge version whose shared index answered; null for native spaces."
    )
    query_modality: str
    timings_ms: dict[str, float]


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
