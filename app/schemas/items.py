"""Bodies of the item endpoints (/v1/items) and their multipart `metadata` field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from app.schemas.common import RecordOut, parse_json_field
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
