"""Bodies of the item endpoints (/v1/items) and their multipart `metadata` field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.schemas.common import RecordOut, json_type, parse_json_field
from bridge.errors import InvalidInputError
from bridge.modalities import Modality


class ItemCreated(RecordOut):
    id: str
    modality: Modality

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": "3f2a...", "modality": "image"}]}
    )


class ItemBatchCreated(BaseModel):
    items: list[ItemCreated]


class ItemOut(RecordOut):
    id: str
    modality: Modality
    metadata: dict[str, Any]
    created_at: str


def parse_metadata(raw: str | None) -> dict[str, Any]:
    """The `metadata` form field: a JSON object (absent = {})."""
    if not raw:  # absent or empty: no metadata ("null" is not an object, though)
        return {}
    value = parse_json_field(raw, "metadata")
    if not isinstance(value, dict):
        raise InvalidInputError(f"`metadata` must be a JSON object, got {json_type(value)}")
    return value


def parse_metadata_list(raw: str | None, count: int) -> list[dict[str, Any]]:
    """The batch `metadata` form field: a JSON array with one object per file (absent = {})."""
    if not raw:
        return [{} for _ in range(count)]
    value = parse_json_field(raw, "metadata")
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InvalidInputError("`metadata` must be a JSON array of objects, one per file")
    if len(value) != count:
        raise InvalidInputError(
            f"`metadata` has {len(value)} objects but {count} files were uploaded"
        )
    return value
