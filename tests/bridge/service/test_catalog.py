"""IndexCatalog: native and per-version shared indexes kept in line with the item store."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from milvus_kit import require_milvus

from bridge.errors import ConflictError, InvalidInputError
from bridge.index.backends import MilvusBackend
from bridge.index.vectors import VectorIndex
from bridge.service.catalog import IndexCatalog
from bridge.storage.items import ItemStore, NewItem

CLIP_DIM, CLAP_DIM, SHARED_DIM = 12, 10, 6
ENCODERS = {"image": "clip-test", "audio": "clap-test"}


def make_projector(seed: int):  # type: ignore[no-untyped-def]
    """A fixed random linear map per space, standing in for a bridge checkpoint's projectors."""
    rng = np.random.default_rng(seed)
    weights = {
        "clip": rng.standard_normal((CLIP_DIM, SHARED_DIM)).astype(np.float32),
        "clap": rng.standard_normal((CLAP_DIM, SHARED_DIM)).astype(np.float32),
    }

    def project(space: str, raw: np.ndarray) -> np.ndarray:
        out = raw @ weights[space]
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    return project


def add(store: ItemStore, modality: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Add n items; returns (rowids, raw embeddings)."""
    rng = np.random.default_rng(seed)
    dim = CLIP_DIM if modality == "image" else CLAP_DIM
    raw = rng.standard_normal((n, dim)).astype(np.float32)
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)
    stored = store.add_items(
        [NewItem(modality, {"i": i}, raw[i], ENCODERS[modality]) for i in range(n)]
    )
    return np.array([s.rowid for s in stored], dtype=np.int64), raw


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[ItemStore]:
    s = ItemStore(tmp_path / "store.sqlite")
    yield s
    s.close()


@dataclass
class CatalogFactory:
    """catalog(directory, store, index_type) -> a new IndexCatalog on this test's backend
    (Milvus: Milvus Lite in directory/milvus.db, old collections dropped at once)."""

    backend: str
    made: list[IndexCatalog] = field(default_factory=list)

    def __call__(self, directory: Path, store: ItemStore, index_type: str = "flat") -> IndexCatalog:
        backend = None
        if self.backend == "milvus":
            uri = str(directory / "milvus.db")
            backend = MilvusBackend(uri, store.store_id, drop_grace_seconds=0)
        made = IndexCatalog(directory, store, index_type, use_gpu=False, backend=backend)
        self.made.append(made)
        return made

    def collections(self, cat: IndexCatalog) -> list[str]:
        """The store's Milvus collections (Milvus only)."""
        assert isinstance(cat.backend, MilvusBackend)
        return cat.backend.connection.collections()


@pytest.fixture(params=["faiss", "milvus"])
def catalog(request: pytest.FixtureRequest) -> Iterator[CatalogFactory]:
    if request.param == "milvus":
        require_milvus()
    factory = CatalogFactory(request.param)
    yield factory
    for made in factory.made:
        made.close_backend()


def test_reconcile_builds_missing_native_indexes(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    rowids, raw = add(store, "image", 30, seed=0)
    cat = catalog(tmp_path, store)
    assert cat.reconcile_native(ENCODERS) == ["clip_image"]
    image = cat.native("image")
    assert image is not None and cat.native("audio") is None
    assert image.ntotal == 30 and image.dim == CLIP_DIM
    assert image.manifest.encoder == "clip-test"
    assert image.manifest.fingerprint == store.fingerprint("image")
    assert (tmp_path / "native" / "clip_image" / "manifest.json").is_file()
    _, found = image.search(raw[7], 1)
    assert found[0, 0] == rowids[7]
    # A second catalog over the same directory loads it and rebuilds nothing.
    again = catalog(tmp_path, store)
    assert again.reconcile_native(ENCODERS) == []
    loaded = again.native("image")
    assert loaded is not None and loaded.manifest.created_at == image.manifest.created_at


def test_stale_index_rebuilt_after_simulated_crash(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    """The store committed items (and a delete) that never reached the index on disk."""
    rowids, _ = add(store, "image", 20, seed=1)
    cat = catalog(tmp_path, store)
    cat.reconcile_native(ENCODERS)
    saved_fingerprint = cat.native("image").manifest.fingerprint  # type: ignore[union-attr]
    # "Crash": the service commits to the store, then dies before updating/saving the index.
    new_rowids, new_raw = add(store, "image", 3, seed=2)
    store.delete(store.get_by_rowids([rowids[0]])[int(rowids[0])].id)
    on_disk = json.loads((tmp_path / "native/clip_image/manifest.json").read_text())
    assert on_disk["count"] == 20 and on_disk["fingerprint"] == saved_fingerprint
    assert store.count("image") == 22

    restarted = catalog(tmp_path, store)
    assert restarted.reconcile_native(ENCODERS) == ["clip_image"]
    image = restarted.native("image")
    assert image is not None
    assert image.ids().tolist() == store.raw_embeddings("image")[0].tolist()
    assert image.manifest.fingerprint == store.fingerprint("image")
    _, found = image.search(new_raw, 1)
    assert found[:, 0].tolist() == new_rowids.tolist()
    on_disk = json.loads((tmp_path / "native/clip_image/manifest.json").read_text())
    assert on_disk["count"] == 22


def test_index_missing_many_rows_is_rebuilt_whole(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    add(store, "audio", 4, seed=3)
    cat = catalog(tmp_path, store)
    cat.reconcile_native(ENCODERS)
    first = cat.native("audio").manifest.created_at  # type: ignore[union-attr]
    add(store, "audio", 40, seed=4)  # far more than half the rows changed
    restarted = catalog(tmp_path, store)
    assert restarted.reconcile_native(ENCODERS) == ["clap_audio"]
    audio = restarted.native("audio")
    assert audio is not None and audio.ntotal == 44
    assert audio.manifest.created_at != first  # a fresh build, not an incremental sync


def test_recreated_store_and_corrupt_index_are_rebuilt(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    add(store, "image", 10, seed=5)
    cat = catalog(tmp_path, store)
    cat.reconcile_native(ENCODERS)
    # A new store file with the same rowids but other vectors: ids alone would look current.
    other = ItemStore(tmp_path / "other.sqlite")
    try:
        _, raw = add(other, "image", 10, seed=6)
        fresh = catalog(tmp_path, other)
        assert fresh.reconcile_native(ENCODERS) == ["clip_image"]
        scores, _ = fresh.native("image").search(raw[3], 1)  # type: ignore[union-attr]
        assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    finally:
        other.close()
    # Corrupt what the index's vectors live in: the FAISS file, or the Milvus collection.
    if catalog.backend == "faiss":
        (tmp_path / "native/clip_image/index.faiss").write_bytes(b"not an index")
    else:
        manifest = json.loads((tmp_path / "native/clip_image/manifest.json").read_text())
        cat.backend.connection.drop(manifest["collection"])  # type: ignore[attr-defined]
    assert catalog(tmp_path, store).reconcile_native(ENCODERS) == ["clip_image"]


def test_index_type_change_and_encoder_conflict(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    add(store, "image", 10, seed=7)
    catalog(tmp_path, store).reconcile_native(ENCODERS)
    hnsw = catalog(tmp_path, store, index_type="hnsw")
    assert hnsw.reconcile_native(ENCODERS) == ["clip_image"]
    manifest = hnsw.native("image").manifest  # type: ignore[union-attr]
    # Milvus Lite has no HNSW and builds FLAT; a Milvus server builds HNSW.
    assert manifest.requested_kind == "hnsw"
    assert manifest.kind == ("hnsw" if catalog.backend == "faiss" else "flat")
    with pytest.raises(ConflictError, match="embedded by 'clip-test'"):
        catalog(tmp_path, store).reconcile_native({"image": "another-clip"})
    with pytest.raises(InvalidInputError):
        IndexCatalog(tmp_path, store, index_type="annoy")


def test_index_of_an_emptied_store_is_dropped(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    rowids, _ = add(store, "image", 3, seed=17)
    catalog(tmp_path, store).reconcile_native(ENCODERS)
    for item in store.get_by_rowids(rowids).values():
        store.delete(item.id)  # deleted while the service was down
    # A new encoder with another dimension is fine once the store holds no image items.
    cat = catalog(tmp_path, store)
    assert cat.reconcile_native({"image": "bigger-clip"}) == ["clip_image"]
    assert cat.native("image") is None
    assert not (tmp_path / "native" / "clip_image").exists()
    (item,) = store.add_items([NewItem("image", {}, np.ones(CLIP_DIM + 4), "bigger-clip")])
    cat.on_items_added("image", np.array([item.rowid]), np.ones((1, CLIP_DIM + 4)), {})
    assert cat.native("image").dim == CLIP_DIM + 4  # type: ignore[union-attr]


def test_live_adds_and_deletes(tmp_path: Path, store: ItemStore, catalog: CatalogFactory) -> None:
    cat = catalog(tmp_path, store)
    assert cat.reconcile_native(ENCODERS) == []  # empty store: nothing to build
    rowids, raw = add(store, "audio", 5, seed=8)
    cat.on_items_added("audio", rowids, raw, {})
    cat.on_items_added("audio", rowids[:2], raw[:2], {})  # idempotent
    audio = cat.native("audio")
    assert audio is not None and audio.ntotal == 5
    item = store.get_by_rowids([rowids[1]])[int(rowids[1])]
    store.delete(item.id)
    cat.on_item_deleted("audio", int(rowids[1]))
    assert audio.ntotal == 4 and not audio.contains(rowids[1:2])[0]
    assert audio.manifest.fingerprint == store.fingerprint("audio")
    cat.close()
    restarted = catalog(tmp_path, store)
    assert restarted.reconcile_native(ENCODERS) == []
    assert restarted.native("audio").ntotal == 4  # type: ignore[union-attr]


def test_shared_indexes_per_version(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    image_ids, image_raw = add(store, "image", 15, seed=9)
    audio_ids, audio_raw = add(store, "audio", 8, seed=10)
    p1, p2 = make_projector(1), make_projector(2)
    cat = catalog(tmp_path, store)
    cat.reconcile_native(ENCODERS)
    cat.build_shared("v1", p1, "sha-1")
    cat.build_shared("v2", p2, "sha-2")
    assert cat.loaded_versions() == ["v1", "v2"]
    for version, project, sha in (("v1", p1, "sha-1"), ("v2", p2, "sha-2")):
        for modality, space, ids, raw in (
            ("image", "clip", image_ids, image_raw),
            ("audio", "clap", audio_ids, audio_raw),
        ):
            index = cat.shared(version, modality)
            assert index is not None and index.dim == SHARED_DIM and index.ntotal == len(ids)
            assert index.manifest.checkpoint_sha256 == sha
            assert index.manifest.name == f"shared_{modality}"
            directory = cat.version_dir(version) / f"shared_{modality}"
            assert (directory / "manifest.json").is_file()
            scores, found = index.search(project(space, raw[:3]), 1)
            assert found[:, 0].tolist() == ids[:3].tolist()
            np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    # The two versions really hold different vectors.
    query = p1("clip", image_raw[:1])
    s1 = cat.shared("v1", "image").search(query, 15)  # type: ignore[union-attr]
    s2 = cat.shared("v2", "image").search(query, 15)  # type: ignore[union-attr]
    assert not np.allclose(s1[0], s2[0])

    # Live add: v1's projection is given, v2 is projected with the projector it was built with.
    new_ids, new_raw = add(store, "image", 2, seed=11)
    cat.on_items_added("image", new_ids, new_raw, {"v1": p1("clip", new_raw)})
    for version, project in (("v1", p1), ("v2", p2)):
        _, found = cat.shared(version, "image").search(project("clip", new_raw), 1)  # type: ignore[union-attr]
        assert found[:, 0].tolist() == new_ids.tolist()
    cat.on_item_deleted("image", int(new_ids[0]))
    for version in ("v1", "v2"):
        assert not cat.shared(version, "image").contains(new_ids[:1])[0]  # type: ignore[union-attr]
    assert not cat.native("image").contains(new_ids[:1])[0]  # type: ignore[union-attr]


def test_reconcile_shared_after_restart(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    add(store, "image", 12, seed=12)
    p1 = make_projector(1)
    cat = catalog(tmp_path, store)
    cat.build_shared("v1", p1, "sha-1")
    assert cat.shared("v1", "audio") is None  # no audio items yet
    # Store moves on while the service is down.
    new_ids, new_raw = add(store, "image", 2, seed=13)
    audio_ids, audio_raw = add(store, "audio", 3, seed=14)
    restarted = catalog(tmp_path, store)
    assert sorted(restarted.reconcile_shared("v1", p1, "sha-1")) == [
        "v1/shared_audio",
        "v1/shared_image",
    ]
    _, found = restarted.shared("v1", "image").search(p1("clip", new_raw), 1)  # type: ignore[union-attr]
    assert found[:, 0].tolist() == new_ids.tolist()
    assert restarted.shared("v1", "audio").ntotal == 3  # type: ignore[union-attr]
    # Up to date now: nothing to do. A different checkpoint hash forces a rebuild.
    assert catalog(tmp_path, store).reconcile_shared("v1", p1, "sha-1") == []
    changed = catalog(tmp_path, store).reconcile_shared("v1", make_projector(3), "sha-other")
    assert sorted(changed) == ["v1/shared_audio", "v1/shared_image"]


def test_version_names_are_validated(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    cat = catalog(tmp_path, store)
    assert cat.version_dir("v1.2_a-b") == tmp_path / "versions" / "v1.2_a-b"
    for bad in ("../etc", "", ".hidden", "a/b", "x" * 65):
        with pytest.raises(InvalidInputError, match="version names"):
            cat.version_dir(bad)


def test_delete_version_indexes(tmp_path: Path, store: ItemStore, catalog: CatalogFactory) -> None:
    add(store, "image", 5, seed=15)
    cat = catalog(tmp_path, store)
    cat.build_shared("v1", make_projector(1), "sha-1")
    if catalog.backend == "milvus":
        assert len(catalog.collections(cat)) == 1
    cat.delete_version_indexes("v1")
    assert cat.loaded_versions() == [] and cat.shared("v1", "image") is None
    assert not (cat.version_dir("v1") / "shared_image").exists()
    if catalog.backend == "milvus":
        assert catalog.collections(cat) == []  # the collection went with the index


def test_saved_index_is_a_plain_vector_index(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    if catalog.backend != "faiss":
        pytest.skip("the FAISS file format")
    _, raw = add(store, "image", 6, seed=16)
    cat = catalog(tmp_path, store)
    cat.reconcile_native(ENCODERS)
    index = VectorIndex.load(tmp_path / "native" / "clip_image", use_gpu=False)
    assert index.ntotal == 6 and index.search(raw[2], 1)[1][0, 0] == 3


def test_milvus_rebuilds_drop_old_collections_and_start_sweeps_orphans(
    tmp_path: Path, store: ItemStore, catalog: CatalogFactory
) -> None:
    """A rebuild replaces the index's collection and drops the old one; a collection no
    manifest names (a crash between a build and its manifest) is dropped by the sweep."""
    if catalog.backend != "milvus":
        pytest.skip("Milvus collections")
    add(store, "image", 4, seed=18)
    cat = catalog(tmp_path, store)
    cat.reconcile_native(ENCODERS)
    (first,) = catalog.collections(cat)
    add(store, "image", 40, seed=19)  # most rows changed: a rebuild
    restarted = catalog(tmp_path, store)
    assert restarted.reconcile_native(ENCODERS) == ["clip_image"]
    (second,) = catalog.collections(restarted)
    assert second != first
    assert restarted.native("image").collection == second  # type: ignore[union-attr]
    orphan = restarted.backend.build(  # type: ignore[call-arg]
        "shared_image",
        np.arange(2),
        np.eye(2, CLIP_DIM),
        "flat",
        fingerprint="x",
        encoder=None,
        checkpoint_sha256=None,
    )
    assert sorted(catalog.collections(restarted)) == sorted([second, orphan.collection])  # type: ignore[attr-defined]
    restarted.sweep_backend()
    assert catalog.collections(restarted) == [second]
    assert restarted.native("image").ntotal == 44  # type: ignore[union-attr]


def test_building_a_shared_index_holds_few_copies_of_the_embeddings(tmp_path: Path) -> None:
    """The projected matrix, filled batch by batch as the store reads rows, plus a batch's
    work: NumPy's and Python's allocations (tracemalloc) peak under 2 matrices. Reading all
    rows before copying them, projecting the whole raw matrix, concatenating projected chunks
    and normalising unit rows again peaked at 3.9."""
    dim, n = 256, 8000
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((n, dim)).astype(np.float32)
    store = ItemStore(tmp_path / "store.sqlite")
    store.add_items([NewItem("image", {}, raw[i], "clip-test") for i in range(n)])
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0].astype(np.float32)

    def project(space: str, rows: np.ndarray) -> np.ndarray:
        out = rows @ rotation
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    cat = IndexCatalog(tmp_path / "indexes", store, "flat", use_gpu=False)
    cat.build_shared("v0", project, "sha-0", ("image",))  # imports and first-call caches
    tracemalloc.start()
    try:
        cat.build_shared("v1", project, "sha-1", ("image",))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        store.close()
    assert peak < 2 * raw.nbytes
    index = cat.shared("v1", "image")
    assert index is not None and index.ntotal == n
