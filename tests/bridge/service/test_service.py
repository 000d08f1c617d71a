"""BridgeService end to end on real parts: tiny CLIP/CLAP towers, real FAISS, real SQLite.

Every test builds its service in a tmp data dir; the encoders are the session's tiny fixture
models (read-only). The first bridge version is an untrained (seeded) checkpoint written
with save_checkpoint; later versions come from real retrain jobs with a few epochs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from media_factory import make_png_bytes, make_wav_bytes
from milvus_kit import require_milvus
from polling import wait_for_job
from tiny_models import TINY_CLAP_DIM, TINY_CLIP_DIM

from bridge.errors import (
    CheckpointError,
    ConflictError,
    InvalidInputError,
    MediaDecodeError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)
from bridge.model.config import ProjectorConfig
from bridge.model.projectors import BridgeModel, save_checkpoint
from bridge.service.facade import BridgeService
from bridge.storage.items import ItemStore, NewItem
from bridge.telemetry import STAGE_SECONDS
from bridge.types import (
    JobRecord,
    RetrainRequest,
    SearchQuery,
    SearchResponse,
    ServiceConfig,
    Upload,
)

SHARED_DIM = 8
N_IMAGES = 6
N_AUDIO = 6
CAPTIONS = [f"{word} number {i}" for i in range(24) for word in ("a photo of", "the sound of")]


def png(seed: int) -> Upload:
    return Upload(make_png_bytes(36, 36, seed=seed), f"img{seed}.png", "image/png")


def wav(i: int, seconds: float = 0.4) -> Upload:
    return Upload(make_wav_bytes(seconds, 16000, 220.0 + 130.0 * i), f"tone{i}.wav", "audio/wav")


@pytest.fixture(scope="module")
def bridge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = BridgeModel(
        ProjectorConfig(
            clip_dim=TINY_CLIP_DIM, clap_dim=TINY_CLAP_DIM, hidden_dim=32, shared_dim=SHARED_DIM
        )
    )
    return save_checkpoint(tmp_path_factory.mktemp("bridge") / "ckpt", model, None, {"x": 1})


@pytest.fixture
def make_service(
    tmp_path: Path, bridge_dir: Path, tiny_clip_encoder: Any, tiny_clap_encoder: Any
) -> Iterator[Callable[..., BridgeService]]:
    opened: list[BridgeService] = []

    def make(**overrides: Any) -> BridgeService:
        options: dict[str, Any] = {
            "data_dir": tmp_path / "var",
            "clip_model": tiny_clip_encoder.model_id,
            "clap_model": tiny_clap_encoder.model_id,
            "initial_bridge": bridge_dir,
            "device": "cpu",
            "samples_dir": None,
            "max_audio_seconds": 2.0,
        }
        options.update(overrides)
        service = BridgeService.open(
            ServiceConfig(**options), clip=tiny_clip_encoder, clap=tiny_clap_encoder
        )
        opened.append(service)
        return service

    yield make
    for service in opened:
        service.close()


@pytest.fixture
def service(make_service: Callable[..., BridgeService]) -> BridgeService:
    return make_service()


def populate(service: BridgeService) -> tuple[list[str], list[str]]:
    """6 images (label i % 3) and 6 tones (label i % 3); returns (image ids, audio ids)."""
    uploads = [png(i) for i in range(N_IMAGES)] + [wav(i) for i in range(N_AUDIO)]
    metadata = [{"n": i, "label": i % 3} for i in range(N_IMAGES)]
    metadata += [{"n": i, "label": i % 3} for i in range(N_AUDIO)]
    records = service.add_items(uploads, metadata)
    assert [r.modality for r in records] == ["image"] * N_IMAGES + ["audio"] * N_AUDIO
    return [r.id for r in records[:N_IMAGES]], [r.id for r in records[N_IMAGES:]]


def retrain(service: BridgeService, **request: Any) -> JobRecord:
    request.setdefault("captions", CAPTIONS)
    request.setdefault("train_overrides", {"epochs": 2, "batch_size": 16, "seed": 1})
    return wait_for_job(service.get_job, service.start_retrain(RetrainRequest(**request)))


def ids(response: SearchResponse) -> list[str]:
    return [hit.id for hit in response.results]


# -- startup -----------------------------------------------------------------------------


def test_open_registers_initial_bridge_as_active_v1(service: BridgeService, tmp_path: Path) -> None:
    versions = service.list_versions()
    assert [(v.version, v.status, v.active) for v in versions] == [("v1", "ready", True)]
    assert (tmp_path / "var" / "versions" / "v1" / "checkpoint" / "weights.safetensors").is_file()
    ready = service.readiness()
    assert ready["ready"] is True and ready["active_version"] == "v1"
    assert ready["encoders"]["clip"]["dim"] == TINY_CLIP_DIM


def test_initial_bridge_must_exist_and_fit_the_encoders(
    make_service: Callable[..., BridgeService], tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        make_service(initial_bridge=tmp_path / "missing")
    wrong = save_checkpoint(
        tmp_path / "wrong",
        BridgeModel(ProjectorConfig(clip_dim=5, clap_dim=16, hidden_dim=8, shared_dim=4)),
        None,
        {},
    )
    with pytest.raises(CheckpointError, match="5-d CLIP"):
        make_service(initial_bridge=wrong, data_dir=tmp_path / "other")


# -- routing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "space", "modality"),
    [
        (lambda: SearchQuery("image", text="a red square"), "clip", "text"),
        (lambda: SearchQuery("audio", text="a high tone"), "clap", "text"),
        (lambda: SearchQuery("image", media=png(0)), "clip", "image"),
        (lambda: SearchQuery("audio", media=wav(1)), "clap", "audio"),
        (lambda: SearchQuery("image", media=wav(2)), "shared", "audio"),
        (lambda: SearchQuery("audio", media=png(3)), "shared", "image"),
    ],
)
def test_each_direction_answers_in_its_space(
    service: BridgeService, query: Callable[[], SearchQuery], space: str, modality: str
) -> None:
    populate(service)
    q = query()
    response = service.search(q)
    assert response.space == space
    assert response.query_modality == modality
    assert response.bridge_version == "v1"
    assert len(response.results) == 6
    assert {hit.modality for hit in response.results} == {q.target}
    scores = [hit.score for hit in response.results]
    assert scores == sorted(scores, reverse=True)
    assert "search" in response.timings_ms and "hydrate" in response.timings_ms
    assert ("project" in response.timings_ms) == (space == "shared")


# -- ingest, search, delete --------------------------------------------------------------


def test_ingest_then_search_finds_the_item_then_delete_removes_it(service: BridgeService) -> None:
    image_ids, audio_ids = populate(service)
    for upload, target, expected in (
        (png(4), "image", image_ids[4]),
        (wav(3), "audio", audio_ids[3]),
    ):
        top = service.search(SearchQuery(target, media=upload, k=1)).results[0]  # type: ignore[arg-type]
        assert top.id == expected and top.score == pytest.approx(1.0, abs=1e-4)
        assert "_content" not in top.metadata and top.metadata["n"] in range(6)
    service.delete_item(image_ids[4])
    after = service.search(SearchQuery("image", media=png(4), k=10))
    assert image_ids[4] not in ids(after) and len(after.results) == 5
    shared_after = service.search(SearchQuery("image", media=wav(0), k=10))
    assert image_ids[4] not in ids(shared_after) and len(shared_after.results) == 5
    with pytest.raises(NotFoundError):
        service.get_item(image_ids[4])
    with pytest.raises(NotFoundError):
        service.delete_item(image_ids[4])
    with pytest.raises(NotFoundError):
        service.get_item_content(image_ids[4])


def test_item_record_and_original_content(service: BridgeService) -> None:
    upload = wav(5)
    (record,) = service.add_items([upload], [{"title": "five"}])
    assert service.get_item(record.id) == record
    assert record.metadata == {"title": "five"} and record.modality == "audio"
    data, content_type = service.get_item_content(record.id)
    assert data == upload.data and content_type == "audio/wav"


def test_batch_is_all_or_nothing(service: BridgeService, tmp_path: Path) -> None:
    populate(service)
    before = service.readiness()["items"]
    blobs_before = sorted((tmp_path / "var" / "blobs").rglob("*"))
    bad = Upload(b"RIFF\x10\x00\x00\x00WAVEfmt garbage", "broken.wav", "audio/wav")
    with pytest.raises(MediaDecodeError, match="file 1"):
        service.add_items([png(9), bad], [{}, {}])
    with pytest.raises(UnsupportedMediaError):
        service.add_items([Upload(b"just text", "notes.txt", "text/plain")], [{}])
    with pytest.raises(PayloadTooLargeError):
        service.add_items([wav(0, seconds=3.0)], [{}])
    with pytest.raises(InvalidInputError, match="reserved"):
        service.add_items([png(1)], [{"_content": "x"}])
    with pytest.raises(InvalidInputError, match="one metadata object per file"):
        service.add_items([png(1), png(2)], [{}])
    assert service.readiness()["items"] == before
    assert sorted((tmp_path / "var" / "blobs").rglob("*")) == blobs_before


def test_concurrent_ingest_from_threads(service: BridgeService) -> None:
    errors: list[BaseException] = []
    added: list[str] = []

    def worker(t: int) -> None:
        try:
            records = service.add_items([png(100 + t), wav(t)], [{"t": t}, {"t": t}])
            added.extend(r.id for r in records)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(added) == 8 and service.readiness()["indexes"]["clip_image"] == 4
    found = ids(service.search(SearchQuery("image", media=wav(0), k=10)))
    assert len(found) == 4  # the shared index of v1 got every concurrent image too


# -- query forms and paging --------------------------------------------------------------


def test_item_id_query_excludes_the_item(service: BridgeService) -> None:
    image_ids, audio_ids = populate(service)
    same = service.search(SearchQuery("image", item_id=image_ids[0], k=10))
    assert same.space == "clip" and same.query_modality == "image"
    assert image_ids[0] not in ids(same) and len(same.results) == 5
    cross = service.search(SearchQuery("image", item_id=audio_ids[0], k=10))
    assert cross.space == "shared" and len(cross.results) == 6
    with pytest.raises(NotFoundError):
        service.search(SearchQuery("image", item_id="0" * 32))


def test_vector_queries_and_their_validation(
    service: BridgeService, tiny_clip_encoder: Any
) -> None:
    image_ids, _ = populate(service)
    from bridge.encode.media import decode_image

    vector = tiny_clip_encoder.encode_image([decode_image(png(2).data)])[0]
    native = service.search(SearchQuery("image", vector=vector.tolist(), space="clip", k=1))
    assert native.space == "clip" and ids(native) == [image_ids[2]]
    bridged = service.search(SearchQuery("audio", vector=vector.tolist(), space="clip", k=3))
    assert bridged.space == "shared" and len(bridged.results) == 3
    shared = service.search(SearchQuery("image", vector=[0.5] * SHARED_DIM, space="shared"))
    assert shared.space == "shared" and len(shared.results) == 6
    # Any scale gives the same answer: normalised once by the engine in the common case, and
    # by the index where a float32 square over- or underflows.
    for target, expected in (("image", native), ("audio", bridged)):
        k = len(expected.results)
        for scale in (7.5, 1e25, 1e-25):
            scaled = (vector * scale).tolist()
            answer = service.search(SearchQuery(target, vector=scaled, space="clip", k=k))
            assert ids(answer) == ids(expected)
            got = [hit.score for hit in answer.results]
            assert got == pytest.approx([hit.score for hit in expected.results], abs=1e-5)
    bad = [
        SearchQuery("image", vector=[0.1] * (TINY_CLIP_DIM + 1), space="clip"),
        SearchQuery("image", vector=[0.1] * SHARED_DIM, space="clip"),
        SearchQuery("image", vector=[0.1] * TINY_CLIP_DIM),
        SearchQuery("image", vector=[float("nan")] * TINY_CLIP_DIM, space="clip"),
        SearchQuery("image", vector=[0.1] * (TINY_CLIP_DIM - 1) + [float("inf")], space="clip"),
        SearchQuery("image", vector=[0.1] * (TINY_CLIP_DIM - 1) + [1e39], space="clip"),  # > f32
        SearchQuery("image", vector=[0.0] * TINY_CLIP_DIM, space="clip"),
        SearchQuery("image", vector=["x"] * TINY_CLIP_DIM, space="clip"),  # type: ignore[list-item]
        SearchQuery("image", vector=[0.1] * TINY_CLIP_DIM, space="siglip"),  # type: ignore[arg-type]
    ]
    for query in bad:
        with pytest.raises(InvalidInputError):
            service.search(query)
    with pytest.raises(InvalidInputError, match="beyond float32"):
        service.search(bad[5])  # 1e39: finite in JSON, infinite as a float32


@pytest.mark.parametrize(
    "query",
    [
        SearchQuery("image"),
        SearchQuery("image", text="a", item_id="b"),
        SearchQuery("video", text="a"),  # type: ignore[arg-type]
        SearchQuery("image", text="  "),
        SearchQuery("image", text="a", k=0),
        SearchQuery("image", text="a", offset=-1),
        SearchQuery("image", text="a", k=999, offset=2),
        SearchQuery("image", text="a", min_score=float("inf")),
        SearchQuery("image", text="a", filters={"label": [1]}),  # type: ignore[dict-item]
    ],
)
def test_bad_queries_are_invalid_input(service: BridgeService, query: SearchQuery) -> None:
    with pytest.raises(InvalidInputError):
        service.search(query)


def test_filters_overfetch_until_k_results(service: BridgeService) -> None:
    uploads = [png(200 + i) for i in range(30)]
    records = service.add_items(uploads, [{"label": i % 10, "even": i % 2 == 0} for i in range(30)])
    by_label = service.search(SearchQuery("image", text="x", k=3, filters={"label": 7}))
    expected = {r.id for i, r in enumerate(records) if i % 10 == 7}
    assert set(ids(by_label)) == expected  # all 3 of 30, though k=3 would fetch only 3 unfiltered
    evens = service.search(SearchQuery("image", media=png(200), k=15, filters={"even": True}))
    assert len(evens.results) == 15 and all(h.metadata["even"] is True for h in evens.results)
    # a bool filter does not match the number 1
    assert service.search(SearchQuery("image", text="x", filters={"even": 1})).results == []
    cross = service.search(SearchQuery("image", media=wav(0), k=2, filters={"label": 3}))
    assert {h.metadata["label"] for h in cross.results} == {3} and len(cross.results) == 2


def test_filters_run_inside_milvus_and_agree_with_faiss(
    make_service: Callable[..., BridgeService], tmp_path: Path
) -> None:
    """On Milvus a filtered search is one filtered call to the index (no over-fetch rounds);
    its hits equal the FAISS service's, for filters pushed down and for those that are not."""
    require_milvus()
    faiss = make_service(data_dir=tmp_path / "faiss")
    milvus = make_service(data_dir=tmp_path / "milvus", backend="milvus")
    uploads = [png(300 + i) for i in range(60)] + [wav(i) for i in range(4)]
    metadata: list[dict[str, Any]] = [
        {"label": i % 20, "note": "line\nbreak" if i % 30 == 0 else "plain"} for i in range(64)
    ]
    position: dict[str, int] = {}  # item id -> upload position, the same in both services
    for svc in (faiss, milvus):
        position |= {r.id: i for i, r in enumerate(svc.add_items(uploads, metadata))}
    index = milvus.catalog.native("image")
    assert index is not None and index.can_filter({"label": 7})
    calls: list[Any] = []
    search = index.search

    def counted(queries: np.ndarray, k: int, filters: Any = None) -> Any:
        calls.append(filters)
        return search(queries, k, filters)

    index.search = counted  # type: ignore[method-assign]
    queries = [
        SearchQuery("image", text="x", k=3, filters={"label": 7}),  # 3 of 64 match
        SearchQuery("image", media=png(300), k=5, filters={"label": 0, "note": "plain"}),
        SearchQuery("image", text="x", k=4, filters={"label": 7.0}),  # 7.0 == 7, as JSON
        SearchQuery("image", text="x", k=4, filters={"label": True}),  # a bool: no number
        SearchQuery("image", text="x", k=4, filters={"note": "line\nbreak"}),  # not pushed
        SearchQuery("audio", media=png(301), k=2, filters={"label": 2}),  # shared index
    ]
    sent: list[list[Any]] = []  # the filters each query sent to the image index
    for query in queries:
        calls.clear()
        want = faiss.search(query)
        got = milvus.search(query)
        assert [position[h.id] for h in got.results] == [position[h.id] for h in want.results], (
            query.filters
        )
        sent.append(list(calls))
    assert len(faiss.search(queries[0]).results) == 3
    assert sent[:4] == [[q.filters] for q in queries[:4]]  # one call each, filtered in Milvus
    assert sent[4] and all(f is None for f in sent[4])  # over-fetched and filtered in the store


def test_min_score_and_offset(service: BridgeService) -> None:
    image_ids, _ = populate(service)
    full = service.search(SearchQuery("image", media=png(1), k=6))
    paged = service.search(SearchQuery("image", media=png(1), k=2, offset=2))
    assert ids(paged) == ids(full)[2:4]
    assert [h.score for h in paged.results] == pytest.approx([h.score for h in full.results][2:4])
    cut = full.results[2].score
    above = service.search(SearchQuery("image", media=png(1), k=6, min_score=cut))
    assert ids(above) == ids(full)[:3] and all(h.score >= cut for h in above.results)
    top = service.search(SearchQuery("image", media=png(1), k=6, min_score=0.99999))
    assert ids(top)[0] == image_ids[1]
    beyond = service.search(SearchQuery("image", media=png(1), k=3, offset=10))
    assert beyond.results == []


def test_quick_queries_need_no_encoder_and_small_exact_scans(
    service: BridgeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge.service.search

    images, _ = populate(service)
    vector = [0.1] * service.clip.dim
    assert service.is_quick(SearchQuery("image", vector=vector, space="clip"))
    assert service.is_quick(SearchQuery("audio", item_id=images[0]))
    assert not service.is_quick(SearchQuery("image", text="a bird"))
    assert not service.is_quick(SearchQuery("image", media=png(0)))
    monkeypatch.setattr(bridge.service.search, "QUICK_FLAT_ITEMS", len(images) - 1)
    assert not service.is_quick(SearchQuery("image", vector=vector, space="clip"))


def test_search_many_and_stage_metrics(service: BridgeService) -> None:
    populate(service)
    before = STAGE_SECONDS.labels(stage="search")._sum.get()  # type: ignore[attr-defined]
    responses = service.search_many(
        [SearchQuery("image", text="a"), SearchQuery("image", media=wav(1), k=2)]
    )
    assert [r.space for r in responses] == ["clip", "shared"]
    assert [len(r.results) for r in responses] == [6, 2]
    assert STAGE_SECONDS.labels(stage="search")._sum.get() > before  # type: ignore[attr-defined]


def test_empty_store_answers_with_no_results(service: BridgeService) -> None:
    for query in (SearchQuery("image", text="x"), SearchQuery("audio", media=png(0))):
        response = service.search(query)
        assert response.results == []


# -- versions, retrain, swap -------------------------------------------------------------


def test_retrain_activate_rollback(service: BridgeService, tmp_path: Path) -> None:
    populate(service)
    job = retrain(service)
    assert job.status == "succeeded", job.error
    assert job.version == "v2" and job.progress == 1.0
    for direction in ("clap_to_clip", "clip_to_clap"):
        assert 0.0 <= job.metrics["captions"][direction]["r_at_1"] <= 1.0
    assert job.metrics["held_out_captions"] >= 4
    assert job.metrics["memory_source"] == {"image": "store", "audio": "store"}
    assert set(job.metrics["stored_items_by_label"]) == {"audio_to_image", "image_to_audio"}
    versions = {v.version: v for v in service.list_versions()}
    assert versions["v2"].status == "ready" and not versions["v2"].active
    assert versions["v2"].checkpoint_sha256 and versions["v2"].metrics["captions"]
    assert (tmp_path / "var" / "versions" / "v2" / "shared_image" / "index.faiss").is_file()
    before = service.search(SearchQuery("image", media=wav(1)))
    assert before.bridge_version == "v1"

    record = service.activate("v2")
    assert record.active and record.version == "v2"
    after = service.search(SearchQuery("image", media=wav(1)))
    assert after.bridge_version == "v2" and len(after.results) == 6
    assert [h.score for h in after.results] != pytest.approx([h.score for h in before.results])
    # items added after the retrain reach the new version's shared index
    (new,) = service.add_items([png(77)], [{"late": True}])
    assert new.id in ids(service.search(SearchQuery("image", media=wav(1), k=10)))

    assert service.rollback().version == "v1"
    assert (
        service.search(
            SearchQuery("image", media=wav(1)),
        ).bridge_version
        == "v1"
    )
    assert new.id in ids(service.search(SearchQuery("image", media=wav(1), k=10)))
    assert service.rollback().version == "v2"  # rollback toggles between the last two


def test_the_previous_version_is_unloaded_after_a_while_and_a_rollback_reloads_it(
    make_service: Callable[..., BridgeService],
) -> None:
    """keep_previous_seconds: two versions' shared indexes are held only for a while after
    an activation; a rollback later reloads the previous one, up to date with the store."""
    service = make_service(keep_previous_seconds=0.5)
    populate(service)
    job = retrain(service, activate=True)
    assert job.status == "succeeded", job.error
    assert service.catalog.loaded_versions() == ["v1", "v2"]  # instant rollback for now
    deadline = time.monotonic() + 10
    while service.catalog.loaded_versions() != ["v2"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert service.catalog.loaded_versions() == ["v2"]
    (late,) = service.add_items([png(91)], [{"late": True}])  # while v1 is not loaded

    assert service.rollback().version == "v1"
    answer = service.search(SearchQuery("image", media=wav(1), k=10))
    assert answer.bridge_version == "v1" and late.id in ids(answer)
    assert service.catalog.loaded_versions() == ["v1", "v2"]
    service.close()  # the pending release of v2 is cancelled, not run on a closed service
    time.sleep(0.7)
    assert service.catalog.loaded_versions() == ["v1", "v2"]


def test_without_a_grace_period_only_the_active_version_stays_loaded(
    make_service: Callable[..., BridgeService],
) -> None:
    service = make_service(keep_previous_seconds=0)
    populate(service)
    assert retrain(service, activate=True).status == "succeeded"
    assert service.catalog.loaded_versions() == ["v2"]
    assert service.rollback().version == "v1"
    assert service.catalog.loaded_versions() == ["v1"]
    assert len(service.search(SearchQuery("image", media=wav(1))).results) == N_IMAGES


def test_an_exmcr_version_searches_audio_against_the_native_clip_images(
    make_service: Callable[..., BridgeService], tmp_path: Path
) -> None:
    """train_overrides {"mode": "exmcr"}: the version re-projects only the audio, builds no
    shared_image index, and audio->image ranks the native CLIP images by cosine with the
    projected audio; image->audio goes through shared_audio; text->audio stays native."""
    from bridge.arrays import l2_normalize
    from bridge.model.projectors import load_checkpoint

    service = make_service()
    image_ids, audio_ids = populate(service)
    overrides = {"epochs": 2, "batch_size": 16, "seed": 1, "mode": "exmcr"}
    job = retrain(service, train_overrides=overrides, activate=True)
    assert job.status == "succeeded", job.error
    assert job.metrics["mode"] == "exmcr" and job.metrics["train"]["data"]["tuples"]["audio"] == 6
    version_dir = tmp_path / "var" / "versions" / "v2"
    assert (version_dir / "shared_audio" / "index.faiss").is_file()
    assert not (version_dir / "shared_image").exists()
    ready = service.readiness()
    assert (ready["active_version"], ready["active_mode"]) == ("v2", "exmcr")
    assert ready["indexes"]["shared_image"] is None and ready["indexes"]["shared_audio"] == 6
    modes = {v.version: v.metrics["mode"] for v in service.list_versions()}
    assert modes == {"v1": "cmcr", "v2": "exmcr"}

    checkpoint = load_checkpoint(version_dir / "checkpoint")
    image_raw = np.stack([service.store.raw_embedding(i)[1] for i in image_ids])
    audio_raw = np.stack([service.store.raw_embedding(i)[1] for i in audio_ids])
    images, audio = l2_normalize(image_raw), checkpoint.project("clap", audio_raw)

    def brute_force(query: np.ndarray, gallery: np.ndarray, names: list[str]) -> list[str]:
        return [names[j] for j in np.argsort(-(gallery @ query), kind="stable")]

    for i, audio_id in enumerate(audio_ids):
        answer = service.search(SearchQuery("image", item_id=audio_id, k=N_IMAGES))
        assert (answer.space, answer.bridge_version) == ("clip", "v2")
        assert ids(answer) == brute_force(audio[i], images, image_ids)
        expected = np.sort(images @ audio[i])[::-1]
        np.testing.assert_allclose([h.score for h in answer.results], expected, atol=1e-5)
    upload = service.search(SearchQuery("image", media=wav(1), k=N_IMAGES))
    assert upload.space == "clip" and ids(upload) == brute_force(audio[1], images, image_ids)
    shared_vector = SearchQuery("image", vector=audio[1].tolist(), space="shared", k=N_IMAGES)
    assert ids(service.search(shared_vector)) == ids(upload)
    answer = service.search(SearchQuery("audio", item_id=image_ids[0], k=N_AUDIO))
    assert answer.space == "shared" and ids(answer) == brute_force(images[0], audio, audio_ids)
    text = service.search(SearchQuery("audio", text="the sound of number 1"))
    assert text.space == "clap" and len(text.results) == N_AUDIO
    # New items: images reach the native index only, audio the version's shared index.
    (image, clip) = service.add_items([png(77), wav(9)], [{}, {}])
    assert image.id in ids(service.search(SearchQuery("image", item_id=audio_ids[0], k=10)))
    assert clip.id in ids(service.search(SearchQuery("audio", item_id=image_ids[0], k=10)))
    assert service.readiness()["indexes"]["shared_image"] is None
    before = ids(service.search(SearchQuery("image", item_id=audio_ids[0], k=10)))
    service.close()
    service = make_service()  # a restart loads the Ex-MCR version with its audio index only
    assert service.readiness()["active_mode"] == "exmcr"
    assert ids(service.search(SearchQuery("image", item_id=audio_ids[0], k=10))) == before
    assert service.rollback().version == "v1"  # back to a C-MCR bridge: the shared space again
    assert service.search(SearchQuery("image", item_id=audio_ids[0])).space == "shared"


def test_retrain_with_activate_and_memory_files(service: BridgeService, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    memories = tmp_path / "var" / "uploads"
    memories.mkdir(parents=True)
    np.save(memories / "img.npy", rng.normal(size=(20, TINY_CLIP_DIM)).astype(np.float32))
    np.save(memories / "aud.npy", rng.normal(size=(20, TINY_CLAP_DIM)).astype(np.float32))
    (memories / "captions.txt").write_text("\n".join(CAPTIONS[:30]) + "\n\n")
    job = retrain(
        service,
        captions=None,
        captions_path="uploads/captions.txt",
        image_memory_path="uploads/img.npy",
        audio_memory_path="uploads/aud.npy",
        activate=True,
    )
    assert job.status == "succeeded", job.error
    assert job.metrics["memory_source"] == {"image": "file", "audio": "file"}
    assert job.metrics["train"]["data"]["image_memory"] == 20
    assert "stored_items_by_label" not in job.metrics  # the store is empty
    assert job.metrics["held_out_captions"] == 0  # 30 captions: evaluated in-sample
    assert service.readiness()["active_version"] == "v2"


def test_a_delete_during_the_retrain_evaluation_does_not_fail_the_job(
    service: BridgeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluation reads labelled items, then their embeddings; an item deleted between
    the two reads failed the job ("no image item with rowid(s) ...")."""
    image_ids, _ = populate(service)
    real = service.store.get_by_rowids
    deleted: list[str] = []

    def get_then_delete(rowids: Any) -> Any:
        items = real(rowids)
        if not deleted:  # once, right between the evaluation's two reads
            deleted.append(image_ids[0])
            service.delete_item(image_ids[0])
        return items

    monkeypatch.setattr(service.store, "get_by_rowids", get_then_delete)
    job = retrain(service)
    assert deleted and job.status == "succeeded", job.error
    assert set(job.metrics["stored_items_by_label"]) == {"audio_to_image", "image_to_audio"}


def test_retrain_evaluates_only_labels_both_modalities_have(service: BridgeService) -> None:
    """Images labelled 3 and 9, audio 0 and 0: no query had a relevant item, the median rank
    was infinite and the job failed saving its metrics."""
    service.add_items(
        [png(0), png(1), wav(0), wav(1)], [{"label": 3}, {"label": 9}, {"label": 0}, {"label": 0}]
    )
    job = retrain(service)
    assert job.status == "succeeded", job.error
    assert job.metrics["stored_items_by_label"] == {
        "skipped": "no label common to images and audio"
    }
    service.add_items([png(2), wav(2)], [{"label": 3}, {"label": 3}])
    job = retrain(service)
    assert job.status == "succeeded", job.error
    by_label = job.metrics["stored_items_by_label"]
    assert by_label["audio_to_image"]["queries"] == 1.0  # only the label-3 items take part
    assert by_label["audio_to_image"]["gallery"] == 2.0


def test_retrain_measures_the_labelled_stored_items_every_epoch(service: BridgeService) -> None:
    """Stored items with a `label` are the trainer's dev set: class-level P@1 across the new
    bridge at every epoch, usable to keep the best epoch (select_epoch)."""
    populate(service)
    overrides = {"epochs": 3, "batch_size": 16, "seed": 1, "select_epoch": "val_dev_p_at_1"}
    job = retrain(service, train_overrides=overrides)
    assert job.status == "succeeded", job.error
    train = job.metrics["train"]
    assert (train["data"]["dev_images"], train["data"]["dev_audio"]) == (N_IMAGES, N_AUDIO)
    assert train["selected_epoch"]["by"] == "val_dev_p_at_1"
    final = train["final"]
    assert 0.0 <= final["val_dev_p_at_1"] <= 1.0
    assert final["val_dev_p_at_1"] == pytest.approx(
        (final["val_dev_audio_to_image_p_at_1"] + final["val_dev_image_to_audio_p_at_1"]) / 2
    )
    service.add_items([png(90), wav(90)], [{"label": "x"}, {"label": "y"}])  # unshared labels
    job = retrain(service)
    assert job.status == "succeeded", job.error
    assert job.metrics["train"]["data"]["dev_audio"] == N_AUDIO  # only shared labels count


def test_startup_removes_retrain_uploads_a_crash_left(
    make_service: Callable[..., BridgeService], tmp_path: Path
) -> None:
    """A crash before the job existed, or while it ran, left uploads/<id>/ for good."""
    make_service().close()
    uploads = tmp_path / "var" / "uploads"
    left = uploads / "0da0e46b73ca42cf87d4ddad7bb5540b"
    left.mkdir(parents=True)
    (left / "captions.txt").write_text("a\nb\n")
    make_service()  # the same data dir, opened again after the "crash"
    assert uploads.is_dir() and not list(uploads.iterdir())


def test_failed_retrain_marks_job_and_version_failed(
    service: BridgeService, tmp_path: Path
) -> None:
    (tmp_path / "var" / "bad.npy").parent.mkdir(parents=True, exist_ok=True)
    # Values are checked in the job (the request only reads the header): NaN fails there.
    np.save(tmp_path / "var" / "bad.npy", np.full((10, TINY_CLIP_DIM), np.nan, np.float32))
    job = retrain(service, image_memory_path="bad.npy", activate=True)
    assert job.status == "failed" and "NaN" in (job.error or "")
    versions = {v.version: v for v in service.list_versions()}
    assert versions["v2"].status == "failed" and not versions["v2"].active
    assert not (tmp_path / "var" / "versions" / "v2").exists()
    with pytest.raises(ConflictError, match="ready"):
        service.activate("v2")
    assert service.readiness()["active_version"] == "v1"
    assert retrain(service).version == "v3"  # the runner is free again


@pytest.fixture
def retrain_argv(tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path) -> list[str]:
    """`mbridge retrain` on the make_service data directory with the tiny towers."""
    argv = ["retrain", "--data-dir", str(tmp_path / "var"), "--device", "cpu"]
    return argv + ["--clip-model", str(tiny_clip_dir), "--clap-model", str(tiny_clap_dir)]


def test_mbridge_retrain_runs_the_same_pipeline_on_a_stopped_services_directory(
    make_service: Callable[..., BridgeService],
    retrain_argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`mbridge retrain`: refused while a service holds the directory; once it is stopped,
    the version is trained, installed, evaluated and activated, and the next start serves
    it; the copied inputs are gone."""
    from bridge.cli import main

    captions = tmp_path / "corpus.txt"
    captions.write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    argv = [*retrain_argv, "--captions", str(captions), "--activate", "--init", "active"]
    argv += ["--overrides", '{"epochs": 2, "batch_size": 16, "seed": 1}']
    argv += ["--json", str(tmp_path / "result.json")]
    service = make_service()
    populate(service)
    assert main(argv) == 2
    assert "is in use by process" in capsys.readouterr().err
    service.close()

    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "version v2 ready and active" in out and "%] training" in err
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["version"] == "v2" and result["metrics"]["memory_source"]["image"] == "store"
    assert result["metrics"]["init"]["from"] == "v1"  # --init active: a warm start from v1
    assert list((tmp_path / "var" / "uploads").iterdir()) == []
    reopened = make_service()
    versions = {v.version: v for v in reopened.list_versions()}
    assert versions["v2"].active and versions["v2"].status == "ready"
    answer = reopened.search(SearchQuery("image", media=wav(1)))
    assert answer.bridge_version == "v2" and len(answer.results) == N_IMAGES


@pytest.mark.parametrize(
    ("captions", "extra", "message"),
    [
        ("three.txt", [], "at least 4 non-blank captions, got 3"),
        ("none.txt", [], "--captions: no file"),
        ("three.txt", ["--overrides", "[1]"], "--overrides must be a JSON object"),
        ("three.txt", ["--overrides", "{"], "--overrides is not JSON"),
    ],
)
def test_mbridge_retrain_refuses_bad_input_and_registers_nothing(
    make_service: Callable[..., BridgeService],
    retrain_argv: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    captions: str,
    extra: list[str],
    message: str,
) -> None:
    from bridge.cli import main

    make_service().close()
    (tmp_path / "three.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    assert main([*retrain_argv, "--captions", str(tmp_path / captions), *extra]) == 2
    assert message in capsys.readouterr().err
    assert [v.version for v in make_service().list_versions()] == ["v1"]
    uploads = tmp_path / "var" / "uploads"  # refused before the directory was opened, or after
    assert not uploads.exists() or list(uploads.iterdir()) == []


@pytest.mark.parametrize(
    ("request_args", "error", "match"),
    [
        ({"captions": None}, InvalidInputError, "captions"),
        ({"captions": ["one", "two", "three"]}, InvalidInputError, "at least 4"),
        ({"captions_path": "../outside.txt"}, InvalidInputError, "outside"),
        ({"captions_path": "/etc/passwd"}, InvalidInputError, "absolute"),
        ({"captions_path": "missing.txt"}, NotFoundError, "missing.txt"),
        ({"image_memory_path": "../../x.npy"}, InvalidInputError, "outside"),
        ({"image_memory_path": "wide.npy"}, InvalidInputError, "rows have"),
        ({"audio_memory_path": "short.npy"}, InvalidInputError, "not a readable .npy"),
        ({"inputs_dir": "."}, InvalidInputError, "uploads/"),  # never the whole data dir
        ({"train_overrides": {"epochz": 1}}, InvalidInputError, "epochz"),
        ({"train_overrides": {"epochs": 0}}, InvalidInputError, "epochs"),
    ],
)
def test_retrain_requests_are_validated_up_front(
    service: BridgeService,
    tmp_path: Path,
    request_args: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    data = tmp_path / "var"
    np.save(data / "wide.npy", np.ones((10, TINY_CLIP_DIM + 3), dtype=np.float32))
    np.save(data / "short.npy", np.ones((10, TINY_CLAP_DIM), dtype=np.float32))
    short = (data / "short.npy").read_bytes()
    (data / "short.npy").write_bytes(short[: len(short) - 40])  # header says 10 rows
    request_args = {"captions": CAPTIONS, **request_args}
    with pytest.raises(error, match=match):
        service.start_retrain(RetrainRequest(**request_args))
    assert [v.version for v in service.list_versions()] == ["v1"]


def test_activate_and_rollback_errors(service: BridgeService) -> None:
    with pytest.raises(NotFoundError):
        service.activate("v9")
    with pytest.raises(ConflictError, match="no previously active"):
        service.rollback()
    assert service.activate("v1").active  # activating the active version is a no-op
    with pytest.raises(NotFoundError):
        service.get_job("nope")


def test_swap_during_concurrent_searches(service: BridgeService) -> None:
    image_ids, audio_ids = populate(service)
    assert retrain(service).status == "succeeded"
    # Stored-item queries cross the bridge without encoding, so the readers run fast.
    queries = [SearchQuery("image", item_id=i, k=4) for i in audio_ids[:3]]
    queries += [SearchQuery("audio", item_id=i, k=4) for i in image_ids[:3]]
    queries += [SearchQuery("image", item_id=image_ids[0], k=4)]  # native: version-independent
    expected: dict[str, list[list[str]]] = {}
    for version in ("v2", "v1"):
        service.activate(version)
        expected[version] = [ids(service.search(q)) for q in queries]
    assert expected["v1"][:6] != expected["v2"][:6]  # so a mixed answer would be detectable
    stop = threading.Event()
    errors: list[BaseException] = []
    answers: list[tuple[int, SearchResponse]] = []

    def reader(offset: int) -> None:
        i = offset
        while not stop.is_set():
            try:
                answers.append((i % len(queries), service.search(queries[i % len(queries)])))
            except BaseException as exc:
                errors.append(exc)
            i += 1

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(3)]
    for thread in threads:
        thread.start()
    swaps = 0
    deadline = time.monotonic() + 30.0
    try:
        while (swaps < 20 or len(answers) < 300) and time.monotonic() < deadline:
            service.activate("v2")
            time.sleep(0.005)
            service.rollback()
            time.sleep(0.005)
            swaps += 2
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors
    assert len(answers) >= 100
    seen = set()
    for qi, answer in answers:
        assert answer.bridge_version in ("v1", "v2")
        assert ids(answer) == expected[answer.bridge_version][qi]  # wholly one version
        seen.add(answer.bridge_version)
    assert seen == {"v1", "v2"}
    assert service.readiness()["active_version"] == "v1"


# -- restart, reconciliation, seeding -----------------------------------------------------


def test_restart_keeps_items_and_rebuilds_stale_indexes(
    make_service: Callable[..., BridgeService], tmp_path: Path, tiny_clip_encoder: Any
) -> None:
    first = make_service()
    image_ids, audio_ids = populate(first)
    first.close()
    # Behind the service's back: one more committed item, one native index deleted, one orphan
    # blob. The indexes on disk are now stale.
    from bridge.encode.media import decode_image

    store = ItemStore(tmp_path / "var" / "store.sqlite")
    embedding = tiny_clip_encoder.encode_image([decode_image(png(55).data)])[0]
    (sneaky,) = store.add_items(
        [NewItem("image", {"sneaky": True}, embedding, tiny_clip_encoder.model_id)]
    )
    store.close()
    import shutil

    shutil.rmtree(tmp_path / "var" / "native" / "clap_audio")
    orphan = tmp_path / "var" / "blobs" / "ab" / ("ab" + "0" * 30)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"left by a crash")

    second = make_service()
    ready = second.readiness()
    assert ready["items"] == 13
    assert ready["indexes"]["clip_image"] == 7 and ready["indexes"]["clap_audio"] == 6
    assert ready["indexes"]["shared_image"] == 7
    for item_id in image_ids + audio_ids:
        assert second.get_item(item_id).id == item_id
    assert ids(second.search(SearchQuery("image", media=png(55), k=1))) == [sneaky.id]
    assert sneaky.id in ids(second.search(SearchQuery("image", media=wav(0), k=10)))
    assert ids(second.search(SearchQuery("audio", media=wav(2), k=1))) == [audio_ids[2]]
    assert not orphan.exists()
    assert second.get_item_content(image_ids[0])[0] == png(0).data
    assert [v.version for v in second.list_versions()] == ["v1"]  # not registered twice


def test_restart_keeps_the_active_version(make_service: Callable[..., BridgeService]) -> None:
    first = make_service()
    populate(first)
    assert retrain(first, activate=True).status == "succeeded"
    first.close()
    second = make_service()
    assert second.readiness()["active_version"] == "v2"
    assert second.search(SearchQuery("image", media=wav(0))).bridge_version == "v2"
    assert second.rollback().version == "v1"


def test_seed_samples_on_an_empty_store_only(
    make_service: Callable[..., BridgeService], tmp_path: Path
) -> None:
    samples = tmp_path / "samples"
    (samples / "images").mkdir(parents=True)
    (samples / "audio").mkdir()
    lines = []
    for i in range(2):
        (samples / "images" / f"d{i}.png").write_bytes(png(i).data)
        (samples / "audio" / f"{i}_x_0.wav").write_bytes(wav(i).data)
        lines.append({"file": f"images/d{i}.png", "modality": "image", "metadata": {"label": i}})
        lines.append({"file": f"audio/{i}_x_0.wav", "modality": "audio", "metadata": {"label": i}})
    (samples / "manifest.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    first = make_service(samples_dir=samples)
    assert first.readiness()["items"] == 4
    hit = first.search(SearchQuery("audio", media=wav(1), k=1)).results[0]
    assert hit.metadata == {"label": 1, "sample_file": "audio/1_x_0.wav"}
    first.close()
    assert make_service(samples_dir=samples).readiness()["items"] == 4  # not seeded again


def test_bad_samples_manifest_is_reported(
    make_service: Callable[..., BridgeService], tmp_path: Path
) -> None:
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "manifest.jsonl").write_text('{"file": "../x.png", "modality": "image"}\n')
    with pytest.raises(InvalidInputError, match="line 1.*outside"):
        make_service(samples_dir=samples)


def test_committed_samples_manifest_is_readable() -> None:
    from bridge.service.samples import load_samples

    samples_dir = Path(__file__).resolve().parents[3] / "models" / "samples"
    if not (samples_dir / "manifest.jsonl").is_file():
        pytest.skip("models/samples not committed yet")
    samples = load_samples(samples_dir)
    assert {s.modality for s in samples} == {"image", "audio"}
    assert all("label" in s.metadata and s.upload.data for s in samples)


def test_search_each_answers_like_search_one_by_one(service: BridgeService) -> None:
    """Batched ranking (one FAISS call per index) must not change any answer or error."""
    image_ids, audio_ids = populate(service)
    rng = np.random.default_rng(0)
    queries = [
        SearchQuery("image", vector=rng.standard_normal(TINY_CLIP_DIM).tolist(), space="clip", k=3),
        SearchQuery("image", vector=rng.standard_normal(TINY_CLIP_DIM).tolist(), space="clip", k=5),
        SearchQuery("image", item_id=image_ids[0], k=4),  # excludes itself
        SearchQuery("image", text="a red square", k=2, offset=1),
        SearchQuery("image", text="a red square", k=2, filters={"label": 1}),  # over-fetches
        SearchQuery("image", vector=[1.0, 2.0], space="clip"),  # wrong dimension: an error
        SearchQuery("audio", item_id=audio_ids[1], k=3),
        SearchQuery("image", item_id=audio_ids[2], k=3, min_score=-1.0),  # bridged
        SearchQuery("audio", text="a high tone", k=6),
        SearchQuery("image", item_id="no-such-item"),  # not found: an error
    ]
    together = service.search_each(queries)
    assert len(together) == len(queries)
    for query, answer in zip(queries, together, strict=True):
        try:
            alone = service.search(query)
        except Exception as exc:
            assert type(answer) is type(exc) and str(answer) == str(exc)
            continue
        assert isinstance(answer, SearchResponse), answer
        assert ids(answer) == ids(alone)
        assert [h.score for h in answer.results] == pytest.approx(
            [h.score for h in alone.results], abs=1e-5
        )
        assert (answer.space, answer.bridge_version) == (alone.space, alone.bridge_version)
    assert isinstance(together[5], InvalidInputError)
    assert isinstance(together[9], NotFoundError)
    assert image_ids[0] not in ids(together[2])  # type: ignore[arg-type]


def test_search_each_encodes_a_batch_of_texts_in_one_pass(
    service: BridgeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(service)
    towers = service._encoders
    real = towers.encode_texts
    calls: list[tuple[str, list[str]]] = []

    def spy(space: str, texts: list[str]) -> np.ndarray:
        calls.append((space, list(texts)))
        return real(space, texts)

    monkeypatch.setattr(towers, "encode_texts", spy)
    queries = [
        SearchQuery("image", text="a red square", k=2),
        SearchQuery("image", text="a blue circle", k=2),
        SearchQuery("image", text="   "),  # invalid: left to its own error
        SearchQuery("image", text="a green line", k=2),
        SearchQuery("audio", text="a high tone", k=2),  # the only CLAP text: encoded alone
    ]
    answers = service.search_each(queries)
    assert calls[0] == ("clip", ["a red square", "a blue circle", "a green line"])
    assert calls[1:] == [("clap", ["a high tone"])]
    assert isinstance(answers[2], InvalidInputError)
    for query, answer in zip(queries, answers, strict=True):
        if query.text and query.text.strip():
            assert isinstance(answer, SearchResponse)
            assert ids(answer) == ids(service.search(query))
            assert answer.timings_ms["encode"] > 0

    def failing(space: str, texts: list[str]) -> np.ndarray:  # the batch fails, one by one works
        if len(texts) > 1:
            raise RuntimeError("tower out of memory")
        return real(space, texts)

    monkeypatch.setattr(towers, "encode_texts", failing)
    again = service.search_each(queries)
    assert [ids(a) for a in again if isinstance(a, SearchResponse)] == [
        ids(a) for a in answers if isinstance(a, SearchResponse)
    ]


def test_search_threads_setting_splits_scans_with_the_same_answers(
    make_service: Callable[..., BridgeService], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ServiceConfig.search_threads reaches the index: with slices of 2 rows, the 6 images
    are scanned in 3 slices, and every answer equals the unsplit one."""
    import bridge.index.split_scan as split_scan
    import bridge.index.threads as index_module

    monkeypatch.setattr(split_scan, "MIN_ROWS_PER_SLICE", 2)
    monkeypatch.setattr(index_module, "_scanner", index_module._scanner)  # restored after
    service = make_service(search_threads=3)
    assert index_module._scanner.threads == 3
    image_ids, _ = populate(service)
    index = service.catalog.native("image")
    assert index is not None and index._splits(1, index.ntotal)
    queries = [SearchQuery("image", item_id=i, k=4) for i in image_ids]
    split = [service.search(q) for q in queries]
    index_module.configure_search_threads(1)
    unsplit = [service.search(q) for q in queries]
    for a, b in zip(split, unsplit, strict=True):
        assert [h.id for h in a.results] == [h.id for h in b.results]
        assert [h.score for h in a.results] == pytest.approx([h.score for h in b.results])
