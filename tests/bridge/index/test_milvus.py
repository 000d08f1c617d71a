"""MilvusIndex on a real Milvus (Milvus Lite): the VectorIndex contract (brute-force ranking,
padding, mutation, persistence) and what is Milvus's own (collections, discard, sweep, an
unreachable server); on a real Milvus server, what replicas sharing a collection rely on."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from milvus_kit import require_milvus

from bridge.errors import BackendUnavailableError, InvalidInputError, NotFoundError
from bridge.index.files import IndexCorruptError

require_milvus()

from test_index import brute_force, clustered, recall  # noqa: E402

from bridge.index import milvus as milvus_module  # noqa: E402
from bridge.index.milvus import MilvusConnection, MilvusIndex, _all_ids  # noqa: E402
from bridge.index.milvus_server import EmbeddedMilvus  # noqa: E402

DIM = 16


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[MilvusConnection]:
    conn = MilvusConnection(str(tmp_path / "milvus.db"), "teststore")
    yield conn
    conn.close()


def build(
    conn: MilvusConnection, ids: np.ndarray, vectors: np.ndarray, kind: str = "flat"
) -> MilvusIndex:
    return MilvusIndex.build(
        conn, "clip_image", ids, vectors, kind, fingerprint="f1", encoder="enc"
    )


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_search_matches_brute_force(connection: MilvusConnection, kind: str) -> None:
    vectors = clustered(1500, DIM)
    ids = np.arange(1500, dtype=np.int64) * 7 + 3  # ids are not positions
    queries = clustered(20, DIM, seed=1) * 3.0  # not normalised: the index normalises
    index = build(connection, ids, vectors, kind)
    assert index.kind == kind and index.ntotal == 1500 and index.dim == DIM
    scores, found = index.search(queries, 10)
    truth = brute_force(vectors, ids, queries, 10)
    assert recall(found, truth) >= (1.0 if kind == "flat" else 0.9)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    exact = np.sort(q @ vectors.T, axis=1)[:, ::-1][:, :10]
    if kind == "flat":
        np.testing.assert_allclose(scores, exact, atol=1e-5)


def test_hnsw_on_milvus_lite_is_built_flat(connection: MilvusConnection) -> None:
    index = build(connection, np.arange(5), clustered(5, DIM), "hnsw")
    assert index.kind == "flat" and index.manifest.requested_kind == "hnsw"


def test_k_beyond_the_rows_pads_and_empty_index(connection: MilvusConnection) -> None:
    index = build(connection, np.arange(3), clustered(3, DIM))
    scores, found = index.search(clustered(1, DIM, seed=2), 5)
    assert found[0, 3:].tolist() == [-1, -1] and np.isneginf(scores[0, 3:]).all()
    empty = build(connection, np.zeros(0, dtype=np.int64), np.zeros((0, DIM), np.float32))
    scores, found = empty.search(clustered(1, DIM), 2)
    assert found.tolist() == [[-1, -1]]


def test_add_remove_and_their_checks(connection: MilvusConnection) -> None:
    vectors = clustered(30, DIM, seed=3)
    index = build(connection, np.arange(20), vectors[:20])
    index.add(np.arange(20, 30), vectors[20:], "f2")
    assert index.ntotal == 30 and index.manifest.fingerprint == "f2"
    _, found = index.search(vectors[25], 1)
    assert found[0, 0] == 25
    with pytest.raises(InvalidInputError, match="already in the index"):
        index.add(np.array([5]), vectors[:1], "f3")
    with pytest.raises(InvalidInputError):
        index.add(np.array([99]), np.ones((1, DIM + 1)), "f3")
    index.remove(np.array([25, 1000]), "f4")  # an unknown id is ignored
    assert index.ntotal == 29 and not index.contains(np.array([25]))[0]
    _, found = index.search(vectors[25], 30)
    assert 25 not in found[0].tolist() and found[0, -1] == -1


def test_save_and_load_in_a_new_connection(tmp_path: Path, connection: MilvusConnection) -> None:
    vectors = clustered(50, DIM, seed=4)
    index = build(connection, np.arange(50) + 100, vectors)
    index.remove(np.array([100]), "f2")
    index.save(tmp_path / "clip_image")
    manifest = json.loads((tmp_path / "clip_image" / "manifest.json").read_text())
    assert manifest["backend"] == "milvus" and manifest["collection"] == index.collection
    assert sorted(p.name for p in (tmp_path / "clip_image").iterdir()) == ["manifest.json"]
    connection.close()
    again = MilvusConnection(str(tmp_path / "milvus.db"), "teststore")
    try:
        loaded = MilvusIndex.load(again, tmp_path / "clip_image")
        assert loaded.ids().tolist() == list(range(101, 150))
        assert loaded.manifest.encoder == "enc" and loaded.manifest.fingerprint == "f2"
        _, found = loaded.search(vectors[7], 1)
        assert found[0, 0] == 107
    finally:
        again.close()


def test_load_errors(tmp_path: Path, connection: MilvusConnection) -> None:
    with pytest.raises(NotFoundError):
        MilvusIndex.load(connection, tmp_path / "nothing")
    faiss_dir = tmp_path / "faiss_index"
    faiss_dir.mkdir()
    (faiss_dir / "manifest.json").write_text(
        json.dumps(
            {
                "name": "x",
                "kind": "flat",
                "dim": 2,
                "count": 0,
                "fingerprint": "",
                "encoder": None,
                "checkpoint_sha256": None,
                "created_at": "",
            }
        )
    )
    with pytest.raises(NotFoundError, match="no Milvus index"):  # another backend's index
        MilvusIndex.load(connection, faiss_dir)
    index = build(connection, np.arange(4), clustered(4, DIM))
    index.save(tmp_path / "gone")
    connection.drop(index.collection)
    with pytest.raises(IndexCorruptError, match="no collection"):
        MilvusIndex.load(connection, tmp_path / "gone")


def test_discard_drops_after_the_grace_period_and_sweep_keeps_named(
    connection: MilvusConnection,
) -> None:
    kept = build(connection, np.arange(3), clustered(3, DIM))
    old = build(connection, np.arange(3), clustered(3, DIM, seed=5))
    orphan = build(connection, np.arange(3), clustered(3, DIM, seed=6))
    old.discard(grace_seconds=0.3)
    assert old.collection in connection.collections()  # searches holding it may finish
    old.search(clustered(1, DIM), 1)
    deadline = time.monotonic() + 10
    while old.collection in connection.collections() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old.collection not in connection.collections()
    assert connection.sweep([kept.collection]) == [orphan.collection]
    assert connection.collections() == [kept.collection]
    # Another store's collections on the same Milvus are never touched.
    other = MilvusConnection(connection.uri, "otherstore")
    try:
        theirs = build(other, np.arange(2), clustered(2, DIM))
        connection.sweep([])
        assert other.collections() == [theirs.collection]
    finally:
        other.close()


def test_ids_past_one_page_come_from_the_query_iterator(
    connection: MilvusConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = np.arange(30, dtype=np.int64) * 3
    index = build(connection, ids, clustered(30, DIM))
    assert sorted(_all_ids(connection, index.collection)) == ids.tolist()  # one plain query
    monkeypatch.setattr(milvus_module, "ID_PAGE", 8)  # 30 rows: past a page
    assert sorted(_all_ids(connection, index.collection)) == ids.tolist()


def test_replicas_share_a_collection_on_a_server(
    tmp_path: Path, milvus_server: EmbeddedMilvus
) -> None:
    """Two processes' indexes on one collection: each sees the other's writes, a row both
    add is stored once, and a sweep spares a collection another replica is still building."""
    first = MilvusConnection(milvus_server.uri, "replicastore")
    second = MilvusConnection(milvus_server.uri, "replicastore")
    try:
        vectors = clustered(12, DIM, seed=8)
        mine = build(first, np.arange(4), vectors[:4])
        mine.save(tmp_path)
        theirs = MilvusIndex.load(second, tmp_path)
        assert mine.shared and theirs.shared and theirs.ntotal == 4
        mine.add(np.arange(4, 8), vectors[4:8], "f2")  # the other one has not counted these
        theirs.add(np.arange(6, 10), vectors[6:10], "f3")  # 6 and 7 twice: upserted
        assert theirs.ids().tolist() == list(range(10)) == mine.ids().tolist()
        deadline = time.monotonic() + 5
        while True:  # another client's writes: visible within Milvus's time tick
            _, found = theirs.search(vectors[5], 12)
            if 5 in found[0] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        hits = [int(i) for i in found[0] if i >= 0]
        assert hits[0] == 5 and sorted(hits) == list(range(10))  # each row once
        time.sleep(milvus_module.COUNT_TTL_SECONDS)
        assert mine.ntotal == theirs.ntotal == 10  # Milvus's count, not each one's own
        theirs.remove(np.array([1]), "f4")  # a row this process never counted
        deadline = time.monotonic() + 5
        while 1 in mine.ids().tolist():  # the other client's delete, within a time tick
            assert time.monotonic() < deadline, "a delete through the other client stays"
            time.sleep(0.1)
        # A collection no manifest names yet: young, so another replica may be building it.
        building = build(second, np.arange(2), vectors[:2])
        assert first.sweep([mine.collection], min_age_seconds=3600) == []
        assert first.sweep([mine.collection]) == [building.collection]
    finally:
        for name in first.collections():
            first.drop(name)
        first.close()
        second.close()


def test_unreachable_server_is_backend_unavailable() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = MilvusConnection(f"http://127.0.0.1:{port}", "teststore", timeout=2.0)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="cannot reach Milvus"):
        conn.collections()
    assert time.monotonic() - started < 15
