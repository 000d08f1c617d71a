"""Bodies of the search endpoints (/v1/search) and their mapping to the engine's SearchQuery
and from its SearchResponse.

Request models forbid unknown fields so that a misspelt parameter is a 422, not ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import to_json

from app.schemas.common import RecordOut
from bridge.modalities import Modality, SpaceName
from bridge.types import MAX_K, FilterValue, SearchQuery, SearchResponse, Upload

MAX_TEXT_CHARS = 2000
MAX_VECTOR_DIM = 8192
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


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


def params_to_query(params: SearchParams, media: Upload) -> SearchQuery:
    """A media (file upload) search."""
    return SearchQuery(media=media, **vars(params))


class SearchBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

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
