"""ItemStore: atomic batches, deletes, fingerprints, versions, jobs, durability across re-opens."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from bridge.errors import ConflictError, InvalidInputError, NotFoundError, StoreUnavailableError
from bridge.storage import items as items_module
from bridge.storage.items import ItemStore, NewItem
from bridge.storage.jobs import JOB_LEASE_SECONDS
from bridge.storage.metadata import MAX_METADATA_DEPTH

DIM = 8


def _item(rng: np.random.Generator, modality: str = "image", **metadata: object) -> NewItem:
    encoder = "clip-test" if modality == "image" else "clap-test"
    return NewItem(modality, dict(metadata), rng.standard_normal(DIM), encoder)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ItemStore]:
    """The store on each database: a SQLite file, and a PostgreSQL database on a real server
    (BRIDGE_DATABASE_URL: tests/postgres_kit.py)."""
    if request.param == "postgres":
        s = ItemStore(request.getfixturevalue("postgres_server").new_database())
    else:
        s = ItemStore(tmp_path / "store.sqlite")
    yield s
    s.close()


def test_add_get_and_raw_embeddings(store: ItemStore) -> None:
    rng = np.random.default_rng(0)
    new = [_item(rng, label=i) for i in range(3)] + [_item(rng, "audio", label="a")]
    stored = store.add_items(new)
    assert [s.rowid for s in stored] == [1, 2, 3, 4]
    assert len({s.id for s in stored}) == 4 and all(len(s.id) == 32 for s in stored)
    got = store.get(stored[1].id)
    assert got == stored[1] and got.metadata == {"label": 1}
    assert datetime.fromisoformat(got.created_at).utcoffset() is not None
    rowids, raw = store.raw_embeddings("image")
    assert rowids.dtype == np.int64 and raw.dtype == np.float32
    assert rowids.tolist() == [1, 2, 3]
    np.testing.assert_allclose(raw, np.stack([n.embedding for n in new[:3]]), rtol=1e-6)
    item, vec = store.raw_embedding(stored[3].id)
    assert item.modality == "audio"
    np.testing.assert_allclose(vec, new[3].embedding, rtol=1e-6)
    np.testing.assert_allclose(store.raw_embeddings_for("image", [3, 1]), raw[[2, 0]], rtol=1e-6)
    assert store.count() == 4 and store.count("image") == 3 and store.count("audio") == 1


def test_empty_modality_shapes(store: ItemStore) -> None:
    rowids, raw = store.raw_embeddings("audio")
    assert rowids.shape == (0,) and raw.shape == (0, 0)
    assert store.encoder("audio") is None


def test_failing_item_in_a_batch_stores_nothing(store: ItemStore) -> None:
    rng = np.random.default_rng(1)
    store.add_items([_item(rng)])
    before = store.fingerprint("image"), store.fingerprint("audio"), store.count()
    bad_vector = NewItem("image", {}, np.array([np.nan] * DIM), "clip-test")
    with pytest.raises(InvalidInputError, match="item 2: embedding contains NaN"):
        store.add_items([_item(rng), _item(rng, "audio"), bad_vector])
    # A failure detected inside the transaction, after two rows were inserted, also rolls back.
    other_encoder = NewItem("image", {}, rng.standard_normal(DIM), "another-clip")
    with pytest.raises(ConflictError, match="item 2: the store holds image items"):
        store.add_items([_item(rng), _item(rng, "audio"), other_encoder])
    wrong_dim = NewItem("image", {}, rng.standard_normal(DIM + 1), "clip-test")
    with pytest.raises(ConflictError, match="9-d"):
        store.add_items([_item(rng), wrong_dim])
    after = store.fingerprint("image"), store.fingerprint("audio"), store.count()
    assert after == before
    assert store.raw_embeddings("audio")[0].size == 0


def _nested(levels: int) -> list[object]:
    value: list[object] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_metadata_at_the_depth_limit_is_stored_and_read_back(store: ItemStore) -> None:
    metadata = {"a": _nested(MAX_METADATA_DEPTH - 1), "emoji": "\U0001f600"}
    (stored,) = store.add_items([NewItem("image", metadata, np.ones(DIM), "clip-test")])
    assert store.hits(np.array([stored.rowid]))[stored.rowid].metadata == metadata


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (["not", "a", "dict"], "metadata must be a JSON object"),
        ({1: "x"}, "metadata keys must be strings"),
        ({"x": float("nan")}, "JSON-serialisable"),
        ({"x": object()}, "JSON-serialisable"),
        ({"x": "y" * 70_000}, "the limit is"),
        ({"a": _nested(MAX_METADATA_DEPTH)}, "more than 32 levels"),
        ({"a": _nested(5000)}, "more than 32 levels"),  # deeper than json.dumps could recurse
        ({"a": "\ud800"}, "not valid Unicode"),
        ({"\udfff": 1}, "not valid Unicode"),
        ({"a": [{"b": ["ok", "\ud83d"]}]}, "not valid Unicode"),
    ],
)
def test_bad_metadata_is_rejected(store: ItemStore, metadata: object, message: str) -> None:
    item = NewItem("image", metadata, np.ones(DIM), "clip-test")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=message):
        store.add_items([item])
    assert store.count() == 0


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (NewItem("video", {}, np.ones(DIM), "x"), "modality must be one of"),
        (NewItem("image", {}, np.ones((2, DIM)), "x"), "embedding must be a vector"),
        (NewItem("image", {}, np.ones(DIM, dtype=np.int64), "x"), "must be float"),
        (NewItem("image", {}, np.ones(DIM), ""), "encoder must be a non-empty string"),
    ],
)
def test_bad_items_are_rejected(store: ItemStore, item: NewItem, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        store.add_items([item])
    assert store.count() == 0


def test_delete(store: ItemStore) -> None:
    rng = np.random.default_rng(2)
    a, b, c = store.add_items([_item(rng, n=i) for i in range(3)])
    assert store.delete(c.id) == c
    with pytest.raises(NotFoundError):
        store.get(c.id)
    with pytest.raises(NotFoundError):
        store.delete(c.id)
    with pytest.raises(NotFoundError):
        store.raw_embedding(c.id)
    assert set(store.get_by_rowids([a.rowid, c.rowid, -1, 999])) == {a.rowid}
    assert store.raw_embeddings("image")[0].tolist() == [a.rowid, b.rowid]
    with pytest.raises(NotFoundError, match="rowid"):
        store.raw_embeddings_for("image", [c.rowid])
    # rowids are FAISS ids: a deleted rowid (even the last one) is never handed out again.
    (d,) = store.add_items([_item(rng)])
    assert d.rowid == c.rowid + 1


def test_hits_cache_agrees_with_the_store_across_deletes(store: ItemStore) -> None:
    rng = np.random.default_rng(3)
    a, b, c = store.add_items([_item(rng, n=i) for i in range(3)])
    wanted = np.array([c.rowid, a.rowid, -1, 999, b.rowid])
    assert store.hits(wanted) == store.get_by_rowids(wanted)
    assert set(store._hits.items) == {a.rowid, b.rowid, c.rowid}  # now served from memory
    assert store.hits(wanted) == {a.rowid: a, b.rowid: b, c.rowid: c}
    store.delete(b.id)
    assert store.hits(wanted) == {a.rowid: a, c.rowid: c}


def test_hits_read_before_a_delete_is_not_cached(store: ItemStore) -> None:
    """The race the generation guards: a reader fetched the item, then its delete committed
    before the reader stored what it fetched."""
    rng = np.random.default_rng(4)
    (a,) = store.add_items([_item(rng)])
    generation = store._hits.generation
    fetched = store.get_by_rowids([a.rowid])  # read while the item still existed
    store.delete(a.id)
    store._hits.keep(fetched, generation)
    assert store._hits.items == {}
    assert store.hits([a.rowid]) == {}


def test_hits_cache_starts_over_when_full(store: ItemStore) -> None:
    rng = np.random.default_rng(5)
    items = store.add_items([_item(rng, n=i) for i in range(5)])
    store._hits.capacity = 3
    store.hits([i.rowid for i in items[:3]])
    assert len(store._hits.items) == 3
    assert store.hits([items[3].rowid]) == {items[3].rowid: items[3]}
    assert set(store._hits.items) == {items[3].rowid}


def test_fingerprint_changes_per_modality(tmp_path: Path, store: ItemStore) -> None:
    rng = np.random.default_rng(3)
    image0, audio0 = store.fingerprint("image"), store.fingerprint("audio")
    (x,) = store.add_items([_item(rng)])
    image1 = store.fingerprint("image")
    assert image1 != image0 and store.fingerprint("audio") == audio0
    (y,) = store.add_items([_item(rng)])
    store.delete(y.id)
    # Same count and same last rowid as after the first add, still a different fingerprint.
    assert store.count("image") == 1 and store.fingerprint("image") != image1
    # Another store file with the same history has another fingerprint.
    other = ItemStore(tmp_path / "other.sqlite")
    try:
        assert other.fingerprint("image") != image0
        assert other.store_id != store.store_id
    finally:
        other.close()
    with pytest.raises(InvalidInputError):
        store.fingerprint("video")
    assert x.rowid == 1


def test_snapshot_is_consistent(store: ItemStore) -> None:
    rng = np.random.default_rng(4)
    store.add_items([_item(rng) for _ in range(5)])
    snap = store.snapshot("image")
    assert snap.fingerprint == store.fingerprint("image")
    assert snap.rowids.tolist() == [1, 2, 3, 4, 5] and snap.encoder == "clip-test"
    assert snap.embeddings is not None and snap.embeddings.shape == (5, DIM)
    light = store.snapshot("image", with_embeddings=False)
    assert light.embeddings is None and light.rowids.tolist() == snap.rowids.tolist()


def test_snapshot_copies_rows_in_batches_in_rowid_order(
    store: ItemStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More rows than one batch, with a gap from a delete: every row lands in its place,
    raw or through a transform applied batch by batch."""
    monkeypatch.setattr(items_module, "SNAPSHOT_BATCH", 3)
    rng = np.random.default_rng(5)
    added = store.add_items([_item(rng) for _ in range(8)])
    store.delete(added[2].id)
    snap = store.snapshot("image")
    kept = [a for i, a in enumerate(added) if i != 2]
    assert snap.rowids.tolist() == [a.rowid for a in kept]
    assert snap.embeddings is not None
    expected = np.stack([store.raw_embedding(a.id)[1] for a in kept])
    np.testing.assert_array_equal(snap.embeddings, expected)
    seen: list[int] = []

    def halve(rows: np.ndarray) -> np.ndarray:
        seen.append(len(rows))
        return rows[:, :2] / 2

    halved = store.snapshot("image", transform=halve)
    assert seen == [3, 3, 1] and halved.rowids.tolist() == snap.rowids.tolist()
    assert halved.embeddings is not None
    np.testing.assert_array_equal(halved.embeddings, expected[:, :2] / 2)
    empty = store.snapshot("audio", transform=halve)
    assert empty.rowids.shape == (0,) and empty.embeddings is not None
    assert empty.embeddings.shape == (0, 0)


def test_matches_is_exact(store: ItemStore) -> None:
    (item,) = store.add_items(
        [NewItem("image", {"a": 1, "b": "x", "c": True, "d": [1, 2]}, np.ones(DIM), "e")]
    )
    assert store.matches(item, {})
    assert store.matches(item, {"a": 1, "b": "x"})
    assert store.matches(item, {"a": 1.0, "d": [1, 2]})
    assert not store.matches(item, {"a": 2})
    assert not store.matches(item, {"c": 1})  # a boolean never equals a number
    assert not store.matches(item, {"a": True})
    assert not store.matches(item, {"missing": None})
    assert not store.matches(item, {"b": "X"})
    assert ItemStore.check_filters(None) == {}
    with pytest.raises(InvalidInputError):
        ItemStore.check_filters(["a"])


def test_versions_active_previous(store: ItemStore) -> None:
    assert store.get_active() == (None, None)
    store.add_version("v1", "/x/v1", "ready", "aa", {"r1": 0.5})
    store.add_version("v2", "/x/v2", "training", None, {})
    with pytest.raises(ConflictError):
        store.add_version("v1", "/x", "ready", None, {})
    with pytest.raises(ConflictError, match="'training'"):
        store.set_active("v2", allowed_statuses={"ready"})
    store.set_active("v1", allowed_statuses={"ready"})
    assert store.get_active() == ("v1", None)
    store.update_version("v2", status="ready", sha256="bb", metrics={"r1": 0.7})
    assert store.get_version("v2")["metrics"] == {"r1": 0.7}
    assert store.get_version("v2")["sha256"] == "bb"
    store.set_active("v2", allowed_statuses={"ready"})
    assert store.get_active() == ("v2", "v1")
    store.set_active("v2")
    assert store.get_active() == ("v2", "v1")
    store.set_active("v1")  # rollback swaps the two
    assert store.get_active() == ("v1", "v2")
    listed = store.list_versions()
    assert [v["version"] for v in listed] == ["v1", "v2"]
    assert [v["active"] for v in listed] == [True, False]
    with pytest.raises(NotFoundError):
        store.set_active("v3")
    with pytest.raises(NotFoundError):
        store.get_version("v3")
    with pytest.raises(NotFoundError):
        store.update_version("v3", status="x")
    with pytest.raises(InvalidInputError, match="unknown version field"):
        store.update_version("v1", colour="red")


def _age_job(store: ItemStore, job_id: str, seconds: float) -> None:
    """Make a job's last heartbeat ``seconds`` old (as if its process had stopped then)."""
    from datetime import UTC, datetime, timedelta

    then = (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
    with store._write() as conn:
        conn.execute("UPDATE jobs SET updated_at=? WHERE id=?", (then, job_id))


def test_jobs_and_fail_interrupted(store: ItemStore) -> None:
    done = store.create_job("retrain", {})
    store.update_job(done["id"], status="succeeded", progress=1.0, result={"version": "v1"})
    assert store.get_job(done["id"])["result"] == {"version": "v1"}
    job = store.create_job("retrain", {"epochs": 2})
    assert job["status"] == "queued" and job["progress"] == 0.0 and job["params"] == {"epochs": 2}
    assert store.live_job() == job["id"]
    with pytest.raises(ConflictError, match="one at a time"):  # the lease, for every replica
        store.create_job("retrain", {})
    _age_job(store, job["id"], JOB_LEASE_SECONDS + 1)  # its process stopped beating
    assert store.live_job() is None
    running = store.create_job("retrain", {})
    store.update_job(running["id"], status="running", progress=0.5, message="epoch 1")
    assert store.get_job(running["id"])["message"] == "epoch 1"
    with pytest.raises(NotFoundError):
        store.get_job("nope")
    with pytest.raises(NotFoundError):
        store.update_job("nope", status="x")
    with pytest.raises(InvalidInputError):
        store.update_job(job["id"], colour="red")
    with pytest.raises(InvalidInputError):
        store.update_job(job["id"], progress=float("nan"))
    # A replica fails only the job whose heartbeat stopped; a lone process's start fails all.
    assert store.fail_interrupted_jobs(stale_only=True) == 1
    assert store.get_job(job["id"])["status"] == "failed"
    assert store.get_job(running["id"])["status"] == "running"
    store.touch_job(running["id"])
    assert store.fail_interrupted_jobs() == 1
    for job_id in (job["id"], running["id"]):
        failed = store.get_job(job_id)
        assert failed["status"] == "failed" and "interrupted" in failed["error"]
    assert store.get_job(done["id"])["status"] == "succeeded"
    assert store.fail_interrupted_jobs() == 0
    assert [j["id"] for j in store.list_jobs()] == [running["id"], job["id"], done["id"]]


def test_a_stale_job_is_claimed_once(store: ItemStore) -> None:
    """Replicas taking over a dead replica's job: only a stale job can be claimed, and only
    by one of them (the claim renews its lease)."""
    job = store.create_job("retrain", {"request": {"captions": ["a"]}})
    assert store.stale_jobs() == []
    assert not store.claim_stale_job(job["id"], "taken over by b")  # its holder is alive
    _age_job(store, job["id"], JOB_LEASE_SECONDS + 1)
    assert [j["id"] for j in store.stale_jobs()] == [job["id"]]
    assert store.claim_stale_job(job["id"], "taken over by b")
    assert not store.claim_stale_job(job["id"], "taken over by c")  # b was first
    claimed = store.get_job(job["id"])
    assert claimed["status"] == "queued" and claimed["message"] == "taken over by b"
    assert store.live_job() == job["id"] and store.stale_jobs() == []


def test_everything_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    rng = np.random.default_rng(5)
    first = ItemStore(path)
    items = first.add_items([_item(rng, n=1), _item(rng, "audio", n=2)])
    first.add_version("v1", "/v1", "ready", "aa", {"m": 1})
    first.set_active("v1")
    job = first.create_job("retrain", {})
    fingerprint, store_id = first.fingerprint("image"), first.store_id
    raw = first.raw_embeddings("image")[1]
    first.close()
    with pytest.raises(ConflictError):
        first.count()

    second = ItemStore(path)
    try:
        assert second.store_id == store_id and second.fingerprint("image") == fingerprint
        assert [second.get(i.id) for i in items] == items
        np.testing.assert_array_equal(second.raw_embeddings("image")[1], raw)
        assert second.get_active() == ("v1", None)
        assert second.get_job(job["id"])["status"] == "queued"
    finally:
        second.close()


def test_acknowledged_items_survive_a_killed_process(tmp_path: Path) -> None:
    """A process that commits and then dies without closing loses nothing it acknowledged."""
    path = tmp_path / "store.sqlite"
    script = (
        "import os, sys, numpy as np\n"
        "from bridge.storage.items import ItemStore, NewItem\n"
        "s = ItemStore(sys.argv[1])\n"
        "items = s.add_items([NewItem('image', {'n': i}, np.ones(4) * i, 'e') for i in range(5)])\n"
        "print(','.join(i.id for i in items), flush=True)\n"
        "os._exit(9)\n"
    )
    root = Path(__file__).resolve().parents[3]
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
    )
    assert proc.returncode == 9, proc.stderr
    ids = proc.stdout.strip().split(",")
    store = ItemStore(path)
    try:
        assert [store.get(i).metadata["n"] for i in ids] == [0, 1, 2, 3, 4]
        assert store.raw_embeddings("image")[1][:, 0].tolist() == [0, 1, 2, 3, 4]
    finally:
        store.close()


def test_concurrent_writers_and_readers(store: ItemStore) -> None:
    errors: list[BaseException] = []

    def write(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(10):
                store.add_items([_item(rng), _item(rng)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(30):
                rowids, raw = store.raw_embeddings("image")
                assert raw.shape[0] == rowids.shape[0]
                store.get_by_rowids(rowids[:5])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s,)) for s in range(4)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count("image") == 80
    assert len(set(store.raw_embeddings("image")[0].tolist())) == 80


def test_a_threads_reader_connection_is_closed_when_the_thread_ends(store: ItemStore) -> None:
    """Server pools replace idle threads; a new thread's reader must not outlive it."""
    store.count("image")  # this thread's reader
    before = len(store._readers)
    seen: list[object] = []

    def read() -> None:
        store.count("image")
        seen.append(store._local.reader.conn)

    for _ in range(5):
        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
    gc.collect()
    assert len(store._readers) == before and len(seen) == 5
    for conn in seen:  # closed, not merely forgotten
        with pytest.raises(Exception, match="closed"):
            conn.execute("SELECT 1")  # type: ignore[attr-defined]
    assert store.count("image") == 0  # this thread's reader still works


def test_a_lost_postgres_server_is_unavailable_then_recovers(tmp_path: Path) -> None:
    """PostgreSQL stopped under a store: reads and writes raise StoreUnavailableError (HTTP
    503), nothing half-written; started again, the same store object works, having kept
    every committed item."""
    from postgres_kit import LocalPostgres, require_postgres

    require_postgres()
    server = LocalPostgres()  # its own server: this one is stopped
    server.start()
    rng = np.random.default_rng(9)
    try:
        store = ItemStore(server.new_database())
        kept = store.add_items([_item(rng)])
        server.halt()
        with pytest.raises(StoreUnavailableError, match="item store"):
            store.count()
        with pytest.raises(StoreUnavailableError):
            store.add_items([_item(rng)])
        server.start()
        assert store.count() == 1 and store.get(kept[0].id) == kept[0]
        store.add_items([_item(rng)])
        assert store.count() == 2
        store.close()
    finally:
        server.stop()
