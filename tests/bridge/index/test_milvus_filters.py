"""Filters inside Milvus (bridge/index/milvus_filters.py): which pairs are pushed, and that
Milvus's filtered search finds exactly the items the store's ``json_equal`` matches, on
Milvus Lite and on the real server, for strings, numbers, booleans and awkward keys."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from milvus_kit import require_milvus

from bridge.errors import InvalidInputError
from bridge.index.milvus_filters import (
    EXACT_NUMBER,
    MAX_STRING_BYTES,
    filter_expression,
    pushable,
    row_metadata,
)
from bridge.storage.metadata import json_equal

DIM = 8

# Items' metadata: every kind of value a filter can compare, and some it cannot.
CORPUS: list[dict[str, Any]] = [
    {"n": 1, "tag": "a"},
    {"n": 1.0, "tag": "b"},
    {"n": True, "tag": "a"},
    {"n": "1", "tag": "c"},
    {"n": 0, "flag": False},
    {"n": 1.5, "quote": 'say "hi" \\ back'},
    {"n": -3, "tag": "é😀"},
    {"n": 2**60, "tag": "big"},
    {"n": None, "tag": "null"},
    {"n": [1], "tag": "list"},
    {"n": {"x": 1}, "tag": "object"},
    {"line": "a\nb", "tag": "a"},
    {'k"q': 1, "a.b": "dot"},
    {"long": "x" * (MAX_STRING_BYTES + 1)},
    {},
]


def store_matches(filters: dict[str, Any]) -> set[int]:
    return {
        i
        for i, meta in enumerate(CORPUS)
        if all(k in meta and json_equal(meta[k], v) for k, v in filters.items())
    }


def probe_filters() -> list[dict[str, Any]]:
    """Every scalar pair in the corpus, cross-type probes, and some two-key filters."""
    pairs = {
        (key, json.dumps(value))
        for meta in CORPUS
        for key, value in meta.items()
        if isinstance(value, str | int | float | bool)
    }
    singles = [{k: json.loads(v)} for k, v in sorted(pairs)]
    singles += [{"n": v} for v in (1, 1.0, True, False, 0, 0.0, "1", -3.0, 2.0**60, 7)]
    doubles = [a | b for a, b in itertools.combinations(singles[:12], 2) if a.keys() != b.keys()]
    return singles + doubles


def test_what_is_pushed() -> None:
    assert pushable("tag", "a") and pushable("n", 1.5) and pushable("n", True)
    assert pushable('k"q', 1) and pushable("a.b", "é😀")
    assert not pushable("", 1)  # an empty key does not parse
    assert not pushable("line", "a\nb") and not pushable("a\tb", 1)  # no escapes decoded
    assert not pushable("n", EXACT_NUMBER) and not pushable("n", -(2**63))
    assert not pushable("n", float("nan")) and not pushable("n", float("inf"))
    assert not pushable("long", "x" * (MAX_STRING_BYTES + 1))
    assert not pushable("n", [1]) and not pushable("n", None)
    assert (
        filter_expression({"tag": "a", "n": 1}) == 'metadata["n"] == 1 and metadata["tag"] == "a"'
    )
    assert filter_expression({"q": 'a"b\\'}) == r'metadata["q"] == "a\"b\\"'
    assert filter_expression({"n": False}) == 'metadata["n"] == false'
    assert filter_expression({"n": 1e-7}) == 'metadata["n"] == 1e-07'
    assert filter_expression({"tag": "a", "line": "a\nb"}) is None  # one pair stays out: all do
    assert filter_expression({}) is None


def test_a_row_keeps_every_pushable_pair_and_only_those() -> None:
    meta = {"n": 1, "big": 2**60, "nested": {"x": 1}, "line": "a\nb", "tag": "é"}
    assert json.loads(row_metadata(meta)) == {"n": 1, "tag": "é"}
    assert row_metadata(None) == "{}"
    # Every pushed filter that the store matches on an item is a pair its row keeps.
    for filters in probe_filters():
        if filter_expression(filters) is None:
            continue
        for i in store_matches(filters):
            row = json.loads(row_metadata(CORPUS[i]))
            assert all(k in row and json_equal(row[k], v) for k, v in filters.items())


@pytest.fixture(params=["lite", "server"])
def connection(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    require_milvus()
    from bridge.index.milvus import MilvusConnection

    if request.param == "lite":
        conn = MilvusConnection(str(tmp_path / "milvus.db"), "filterstore")
    else:
        server = request.getfixturevalue("milvus_server")
        conn = MilvusConnection(server.uri, "filterstore")
    yield conn
    for name in conn.collections():
        conn.drop(name)
    conn.close()


def test_milvus_finds_what_the_store_matches(connection: Any) -> None:
    from bridge.index.milvus import MilvusIndex

    n = len(CORPUS)
    vectors = np.random.default_rng(0).standard_normal((n + 4, DIM)).astype(np.float32)
    index = MilvusIndex.build(
        connection, "t", np.arange(n - 4), vectors[: n - 4], fingerprint="f", metadata=CORPUS[:-4]
    )
    index.add(np.arange(n - 4, n), vectors[n - 4 : n], "f2", metadata=CORPUS[-4:])  # add too
    query = vectors[n:]
    pushed = 0
    for filters in probe_filters():
        if not index.can_filter(filters):
            continue
        pushed += 1
        _, found = index.search(query[:1], n, filters)
        got = {int(i) for i in found[0] if i >= 0}
        assert got == store_matches(filters), filters
    assert pushed >= 40  # the probes exercise the pushdown, not just the fallback
    with pytest.raises(InvalidInputError, match="cannot apply filters"):
        index.search(query[:1], 3, {"line": "a\nb"})


def test_a_collection_without_the_metadata_field_is_rebuilt(
    tmp_path: Path, connection: Any
) -> None:
    """Collections built before filters ran in Milvus have no metadata field: loading one
    says it needs a rebuild (the catalog then rebuilds it) and pushes no filter to it."""
    from pymilvus import DataType, MilvusClient

    from bridge.index.milvus import MilvusIndex

    index = MilvusIndex.build(
        connection, "t", np.arange(3), np.eye(3, DIM, dtype=np.float32), fingerprint="f"
    )
    index.save(tmp_path)
    old = connection.new_collection_name()
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    spec = MilvusClient.prepare_index_params()
    spec.add_index("vector", index_type="FLAT", metric_type="IP")
    connection.client.create_collection(old, schema=schema, index_params=spec)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps(manifest | {"collection": old}))
    loaded = MilvusIndex.load(connection, tmp_path)
    assert loaded.needs_rebuild() and "metadata" in str(loaded.needs_rebuild())
    assert not loaded.can_filter({"tag": "a"})
    assert index.needs_rebuild() is None and index.can_filter({"tag": "a"})
