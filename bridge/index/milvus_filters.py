"""Search filters inside Milvus: each row's ``metadata`` JSON field and the filter expression.

A search filter is key -> scalar, matched with ``json_equal`` (bridge/storage/metadata.py):
strings equal as strings, numbers numerically (1 == 1.0), booleans only to booleans. Milvus's
``metadata["k"] == v`` was checked to agree on Milvus Lite and the 2.3 server
(tests/bridge/index/test_milvus_filters.py) for the values written here; other values it gets
wrong or cannot parse:

- string escapes other than \\" and \\\\ are not decoded (``"a\\nb"`` never matches a newline),
  so a key or string with a character that is not printable stays out;
- integer literals beyond int64 fail to parse (even -2**63, read as -(2**63)), and JSON
  numbers are compared as doubles, so numbers stay within +-2**53 where doubles are exact;
- an empty key is a parse error; the JSON field holds at most 64 KiB.

One predicate, ``pushable``, decides both what a row stores and which filters run inside
Milvus. A filter pair it accepts matches an item only if the item's own pair is pushable too
(equal strings are the same string; a number equal to one within 2**53 is within it), so the
row holds every pair a pushed filter can match, and Milvus's answer is exactly the store's.
A query with any pair it refuses is not pushed: the service over-fetches and filters in the
store, as it does for FAISS. The store's check runs on every hit either way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

FIELD = "metadata"
MAX_KEY_BYTES = 256
MAX_STRING_BYTES = 1024
EXACT_NUMBER = 2**53  # doubles hold every integer below this


def _plain_text(text: str, limit: int) -> bool:
    return text.isprintable() and len(text.encode("utf-8")) <= limit


def pushable(key: Any, value: Any) -> bool:
    """Whether the pair ``key == value`` can be stored in a row and matched by Milvus."""
    if not isinstance(key, str) or not key or not _plain_text(key, MAX_KEY_BYTES):
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) < EXACT_NUMBER
    if isinstance(value, float):
        return math.isfinite(value) and abs(value) < EXACT_NUMBER
    if isinstance(value, str):
        return _plain_text(value, MAX_STRING_BYTES)
    return False  # objects and lists: filters compare scalars only


def row_metadata(metadata: Mapping[str, Any] | None) -> str:
    """The row's ``metadata`` field: the item's pushable top-level pairs, as compact JSON (a
    subset of the stored metadata, so within its 64 KiB limit, which is Milvus's too)."""
    kept = {k: v for k, v in (metadata or {}).items() if pushable(k, v)}
    return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)


def _literal(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # repr of a finite float is a literal Milvus reads (1e-07 too)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def filter_expression(filters: Mapping[str, Any]) -> str | None:
    """The Milvus boolean expression for ``filters`` (all pairs must hold), or None when some
    pair cannot be pushed (the caller filters in the store instead)."""
    if not filters or not all(pushable(k, v) for k, v in filters.items()):
        return None
    return " and ".join(
        f"{FIELD}[{_literal(key)}] == {_literal(value)}" for key, value in sorted(filters.items())
    )
