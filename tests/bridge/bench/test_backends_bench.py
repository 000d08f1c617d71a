"""`mbridge bench backends` at tiny size, against the session's real Milvus server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bridge.index.milvus_server import EmbeddedMilvus

RunBench = Callable[[str, list[str]], dict[str, Any]]


def test_backends(
    run_bench: RunBench, milvus_server: EmbeddedMilvus, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_bench("backends", ["--sizes", "600", "--clients", "1", "2", "--queries", "16",
                                    "--milvus-uri", milvus_server.uri])  # fmt: skip
    rows = {(r["backend"], r["requested"], r["replicas"]): r for r in report["results"]}
    assert list(rows) == [
        ("faiss", "flat", 1),
        ("faiss", "hnsw", 1),
        ("milvus", "hnsw", 1),
        ("milvus", "hnsw", 2),  # two services on the one data directory and collection
    ]
    assert rows[("milvus", "hnsw", 1)]["kind"] == "hnsw"  # a server builds HNSW (Lite cannot)
    assert rows[("faiss", "flat", 1)]["recall_at_10"] == 1.0
    for row in rows.values():
        assert row["size"] == 600 and row["build_seconds"] > 0
        assert 0.8 <= row["recall_at_10"] <= 1.0
        assert set(row["clients"]) == {"1", "2"}
        assert all(cell["n"] == 16 and cell["p50_ms"] > 0 for cell in row["clients"].values())
    out = capsys.readouterr().out
    assert "milvus hnsw" in out and "x2 replicas" in out and "p50 / flat" in out
