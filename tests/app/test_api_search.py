"""POST /v1/search (JSON and multipart) and /v1/search/batch: routing in all four
directions, paging and filters, and the error paths."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from apikit import API_KEY
from fastapi.testclient import TestClient
from tiny_models import TINY_CLAP_DIM, TINY_CLIP_DIM

from bridge.service.facade import BridgeService
from bridge.types import MAX_K


@pytest.fixture
def stocked(client: TestClient, make_png_bytes, make_wav_bytes) -> dict[str, list[str]]:
    """Four images (labels a/b alternate) and three sounds, added through the API."""
    files = [
        ("files", (f"i{i}.png", make_png_bytes(seed=i, width=40 + i), "image/png"))
        for i in range(4)
    ] + [
        ("files", (f"s{i}.wav", make_wav_bytes(seconds=0.4, freq=220.0 * (i + 1)), "audio/wav"))
        for i in range(3)
    ]
    meta = [{"label": "ab"[i % 2], "i": i} for i in range(4)] + [{"label": "a"}] * 3
    r = client.post("/v1/items/batch", files=files, data={"metadata": json.dumps(meta)})
    assert r.status_code == 201, r.text
    ids = [item["id"] for item in r.json()["items"]]
    return {"image": ids[:4], "audio": ids[4:]}


def _search(client: TestClient, **body: Any) -> dict[str, Any]:
    r = client.post("/v1/search", json=body)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize(("target", "space"), [("image", "clip"), ("audio", "clap")])
def test_text_search_is_native(client: TestClient, stocked, target: str, space: str) -> None:
    answer = _search(client, text="a loud dog", target=target, k=10)
    assert answer["space"] == space
    assert {h["id"] for h in answer["results"]} == set(stocked[target])
    assert all(h["modality"] == target for h in answer["results"])
    scores = [h["score"] for h in answer["results"]]
    assert scores == sorted(scores, reverse=True)
    assert set(answer["results"][0]) == {"id", "score", "modality", "metadata"}
    assert answer["query_modality"] == "text"


@pytest.mark.parametrize(
    ("upload", "target", "space"),
    [
        ("image", "image", "clip"),
        ("audio", "audio", "clap"),
        ("audio", "image", "shared"),
        ("image", "audio", "shared"),
    ],
)
def test_file_search_in_all_four_directions(
    client: TestClient, stocked, make_png_bytes, make_wav_bytes, upload, target, space
) -> None:
    file = (
        ("q.png", make_png_bytes(seed=99), "image/png")
        if upload == "image"
        else ("q.wav", make_wav_bytes(seconds=0.4, freq=330.0), "audio/wav")
    )
    r = client.post("/v1/search", files={"file": file}, data={"target": target, "k": "3"})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["space"] == space
    assert answer["query_modality"] == upload
    assert len(answer["results"]) == 3
    assert all(h["modality"] == target for h in answer["results"])
    if space == "shared":
        assert answer["bridge_version"] == "v1"
        assert "project" in answer["timings_ms"]


def test_item_id_search_crosses_to_the_other_modality(client: TestClient, stocked) -> None:
    answer = _search(client, item_id=stocked["audio"][0], target="image")
    assert answer["space"] == "shared" and answer["bridge_version"] == "v1"
    assert {h["id"] for h in answer["results"]} == set(stocked["image"])


def test_vector_search(client: TestClient, stocked) -> None:
    vector = [1.0] + [0.0] * (TINY_CLIP_DIM - 1)
    answer = _search(client, vector=vector, space="clip", target="image", k=2)
    assert answer["space"] == "clip" and len(answer["results"]) == 2
    bridged = _search(client, vector=[0.5] * TINY_CLAP_DIM, space="clap", target="image")
    assert bridged["space"] == "shared"


def test_paging_min_score_and_filters(client: TestClient, stocked) -> None:
    full = _search(client, text="a red bell", target="image", k=4)["results"]
    page = _search(client, text="a red bell", target="image", k=2, offset=1)["results"]
    assert [h["id"] for h in page] == [h["id"] for h in full[1:3]]

    cut = full[1]["score"]
    above = _search(client, text="a red bell", target="image", min_score=cut)["results"]
    assert [h["id"] for h in above] == [h["id"] for h in full if h["score"] >= cut]

    only_b = _search(client, text="a red bell", target="image", filters={"label": "b"})
    assert {h["id"] for h in only_b["results"]} == {stocked["image"][1], stocked["image"][3]}
    assert all(h["metadata"]["label"] == "b" for h in only_b["results"])

    form = client.post(
        "/v1/search",
        files={"file": ("q.png", b"", "image/png")},
        data={"target": "image", "filters": '{"label": "a"}'},
    )
    assert form.status_code == 422  # empty file


def test_multipart_filters_and_paging(client: TestClient, stocked, make_png_bytes) -> None:
    r = client.post(
        "/v1/search",
        files={"file": ("q.png", make_png_bytes(seed=5), "image/png")},
        data={"target": "image", "k": "10", "offset": "0", "filters": '{"label": "a"}'},
    )
    assert r.status_code == 200, r.text
    assert {h["id"] for h in r.json()["results"]} == {stocked["image"][0], stocked["image"][2]}


def test_search_on_an_empty_store_answers_no_results(client: TestClient) -> None:
    assert _search(client, text="anything", target="audio")["results"] == []


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"target": "image"}, "exactly one of"),
        ({"text": "x", "item_id": "y", "target": "image"}, "got text, item_id"),
        ({"text": "x"}, "target"),
        ({"text": "x", "target": "video"}, "target"),
        ({"text": "x", "target": "image", "k": 0}, "k"),
        ({"text": "x", "target": "image", "k": 5000}, "k"),
        ({"text": "x", "target": "image", "k": 600, "offset": 600}, "k + offset"),
        ({"text": "x", "target": "image", "offset": -1}, "offset"),
        ({"text": "", "target": "image"}, "text"),
        ({"vector": [0.1, 0.2], "target": "image"}, "space"),
        ({"text": "x", "space": "clip", "target": "image"}, "space"),
        ({"text": "x", "target": "image", "limit": 3}, "limit"),
        ({"text": "x", "target": "image", "filters": {"a": [1]}}, "filters"),
        ({"text": "x", "target": "image", "min_score": 2}, "min_score"),
    ],
)
def test_bad_json_queries_are_422(client: TestClient, body: dict, words: str) -> None:
    r = client.post("/v1/search", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and words in detail, detail


def test_the_widest_page_the_schema_takes_is_one_the_engine_answers(
    client: TestClient, stocked
) -> None:
    """k + offset up to MAX_K passes the HTTP schema and the engine (one limit, bridge/types.py);
    one more is a 422 that names it."""
    widest = {"text": "x", "target": "image", "k": 10, "offset": MAX_K - 10}
    assert client.post("/v1/search", json=widest).status_code == 200
    r = client.post("/v1/search", json={**widest, "offset": MAX_K - 9})
    assert r.status_code == 422 and f"at most {MAX_K}" in r.json()["detail"]


def test_wrong_vector_dimension_is_422(client: TestClient, stocked) -> None:
    r = client.post(
        "/v1/search",
        json={"vector": [0.1] * (TINY_CLIP_DIM + 3), "space": "clip", "target": "image"},
    )
    assert r.status_code == 422 and r.json()["detail"]


def test_unknown_item_id_is_404(client: TestClient) -> None:
    r = client.post("/v1/search", json={"item_id": "missing", "target": "image"})
    assert r.status_code == 404 and "missing" in r.json()["detail"]


def test_invalid_json_body_is_422(client: TestClient) -> None:
    r = client.post(
        "/v1/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422 and "JSON" in r.json()["detail"]


def test_other_content_types_are_415(client: TestClient) -> None:
    r = client.post("/v1/search", content=b"text=x", headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"]


@pytest.mark.parametrize(
    ("form", "file", "status", "words"),
    [
        ({"target": "image"}, None, 422, "`file`"),
        ({"target": "image", "k": "many"}, "png", 422, "form.k"),
        ({"target": "image", "filters": "{oops"}, "png", 422, "filters"),
        ({"target": "image", "text": "dog"}, "png", 422, "unknown form field"),
        ({"target": "image", "k": ["2", "3"]}, "png", 422, "give `k` once, not 2 times"),
        ({"target": "image", "k": ["", "3"]}, "png", 422, "give `k` once, not 2 times"),
        ({}, "png", 422, "form.target"),
        ({"target": "image"}, "txt", 415, ""),
    ],
)
def test_bad_multipart_queries(
    client: TestClient, make_png_bytes, form: dict, file: str | None, status: int, words: str
) -> None:
    files = None
    if file == "png":
        files = {"file": ("q.png", make_png_bytes(), "image/png")}
    elif file == "txt":
        files = {"file": ("q.txt", b"hello there, plain text" * 5, "text/plain")}
    if files is None:
        # multipart without a file part
        r = client.post("/v1/search", files={k: (None, v) for k, v in form.items()})
    else:
        r = client.post("/v1/search", data=form, files=files)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_search_upload_over_the_limit_is_413(
    make_client: Callable[..., TestClient], service: BridgeService, make_png_bytes
) -> None:
    client = make_client(max_upload_bytes=1_500)
    r = client.post(
        "/v1/search",
        files={"file": ("q.png", make_png_bytes(width=120, height=120), "image/png")},
        data={"target": "image"},
    )
    assert r.status_code == 413 and "BRIDGE_MAX_UPLOAD_BYTES" in r.json()["detail"]


def test_search_needs_the_api_key_when_set(
    make_client: Callable[..., TestClient], service: BridgeService
) -> None:
    client = make_client(api_key=API_KEY)
    body = {"text": "x", "target": "image"}
    r = client.post("/v1/search", json=body)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = client.post("/v1/search/batch", json={"queries": [body]})
    assert r.status_code == 401
    ok = client.post("/v1/search", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200


# ------------------------------------------------------------------ batch


def test_batch_answers_in_order(client: TestClient, stocked) -> None:
    queries = [
        {"text": "a bird", "target": "image", "k": 2},
        {"item_id": stocked["image"][0], "target": "audio", "k": 1},
        {"text": "a bird", "target": "audio", "k": 3},
    ]
    r = client.post("/v1/search/batch", json={"queries": queries})
    assert r.status_code == 200, r.text
    answers = r.json()["responses"]
    assert [a["space"] for a in answers] == ["clip", "shared", "clap"]
    assert [len(a["results"]) for a in answers] == [2, 1, 3]
    single = _search(client, **queries[0])
    assert [h["id"] for h in answers[0]["results"]] == [h["id"] for h in single["results"]]


def test_batch_errors(make_client: Callable[..., TestClient], service: BridgeService) -> None:
    client = make_client(max_batch=2)
    q = {"text": "x", "target": "image"}
    too_many = client.post("/v1/search/batch", json={"queries": [q, q, q]})
    assert too_many.status_code == 422 and "BRIDGE_MAX_BATCH" in too_many.json()["detail"]
    bad = client.post("/v1/search/batch", json={"queries": [q, {"target": "image"}]})
    assert bad.status_code == 422 and "queries.1" in bad.json()["detail"]
    empty = client.post("/v1/search/batch", json={"queries": []})
    assert empty.status_code == 422
    missing = client.post("/v1/search/batch", json={"queries": [{"item_id": "nope", **q}]})
    assert missing.status_code == 422  # text and item_id together
    unknown = client.post(
        "/v1/search/batch", json={"queries": [{"item_id": "nope", "target": "image"}]}
    )
    assert unknown.status_code == 404
