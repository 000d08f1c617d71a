"""What every resource's schemas share: the error body and its OpenAPI entries, response
bodies read from the engine's records, and the decoding of JSON-valued multipart form fields.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from bridge.errors import InvalidInputError

MAX_JSON_FIELD_CHARS = 65_536


class ErrorOut(BaseModel):
    detail: str = Field(description="What was wrong, in words.", examples=["item 'x' not found"])


class RecordOut(BaseModel):
    """A response body whose fields are read, by name, from the engine record it shows (a
    dataclass of bridge.types); a field named otherwise says so with a validation alias."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, record: object) -> Self:
        return cls.model_validate(record)


_ERROR_TEXT = {
    400: "Malformed request (e.g. a broken multipart body).",
    401: "Missing or wrong bearer key.",
    403: "Admin endpoints disabled: BRIDGE_ADMIN_KEY is not set.",
    404: "Unknown id.",
    409: "Conflicts with the current state.",
    413: "Upload larger than the size or audio-duration limit.",
    415: "Not an image or audio format the service reads.",
    422: "Undecodable file or invalid parameters.",
    503: "Unavailable for now, with Retry-After: the engine is loading (see /readyz), the "
    "server is at capacity (BRIDGE_MAX_PENDING), or the vector backend or item store is "
    "unreachable or busy.",
    507: "The disk is full: nothing was stored.",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses (all use ErrorOut)."""
    return {code: {"model": ErrorOut, "description": _ERROR_TEXT[code]} for code in codes}


def parse_json_field(raw: str | None, field: str) -> Any:
    """Decode a JSON-valued form field; InvalidInputError (422) names the field."""
    if raw is None or raw == "":
        return None
    if len(raw) > MAX_JSON_FIELD_CHARS:
        raise InvalidInputError(f"`{field}` is longer than {MAX_JSON_FIELD_CHARS} characters")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"`{field}` is not valid JSON: {exc.msg} at {exc.pos}") from exc
    except RecursionError as exc:  # nesting deeper than the interpreter's stack
        raise InvalidInputError(f"`{field}` is nested too deeply to parse") from exc
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise InvalidInputError(f"`{field}` is not usable JSON: {unusable_json(exc)}") from exc


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)


def unusable_json(exc: ValueError) -> str:
    """Why json.loads refused text that parses (Python's own wording speaks to developers)."""
    if "digits" in str(exc):
        return f"a number has more than {sys.get_int_max_str_digits()} digits"
    return str(exc)
