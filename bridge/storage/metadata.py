"""Item metadata: a JSON object with string keys, bounded in size and depth, and the equality
the search filters use."""

from __future__ import annotations

from typing import Any

from bridge.errors import InvalidInputError
from bridge.storage.database import dump_json

MAX_METADATA_BYTES = 64 * 1024
# Deeper metadata was stored and then could not be serialised back (GET and every search
# that ranked the item answered 500); real metadata is a few levels deep.
MAX_METADATA_DEPTH = 32


def check_json_values(value: Any, what: str) -> None:
    """InvalidInputError for nesting deeper than MAX_METADATA_DEPTH or a string (key or value)
    that is not valid Unicode (a lone surrogate such as "\\ud800" in the JSON): both were
    accepted, then failed every response that carried the item. Iterative, so any depth is
    safe to check."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidInputError(
                    f"{what} contains a string that is not valid Unicode ({exc.reason} at "
                    f"character {exc.start}: a lone surrogate escape such as \\ud800?)"
                ) from exc
        elif isinstance(node, dict | list):
            if depth > MAX_METADATA_DEPTH:
                raise InvalidInputError(
                    f"{what} is nested more than {MAX_METADATA_DEPTH} levels deep"
                )
            if isinstance(node, dict):
                stack.extend((key, depth) for key in node)
                stack.extend((item, depth + 1) for item in node.values())
            else:
                stack.extend((item, depth + 1) for item in node)


def check_metadata(metadata: Any, index: int) -> str:
    if not isinstance(metadata, dict):
        raise InvalidInputError(
            f"item {index}: metadata must be a JSON object, got {type(metadata).__name__}"
        )
    for key in metadata:
        if not isinstance(key, str):
            raise InvalidInputError(f"item {index}: metadata keys must be strings, got {key!r}")
    check_json_values(metadata, f"item {index}: metadata")
    text = dump_json(metadata, f"item {index}: metadata")
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"item {index}: metadata is {len(text.encode())} bytes as JSON, "
            f"the limit is {MAX_METADATA_BYTES}"
        )
    return text


def json_equal(a: Any, b: Any) -> bool:
    """JSON value equality that keeps booleans apart from numbers (``True != 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
