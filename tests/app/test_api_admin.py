"""/v1/admin/*: auth (403 without a configured key, 401 on missing or wrong keys), retrain as
a background job (JSON and multipart), versions, activate and rollback."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from apikit import ADMIN_KEY, CAPTIONS, admin_headers, wait_for_api_job
from fastapi.testclient import TestClient
from tiny_models import TINY_CLIP_DIM

from bridge.service.facade import BridgeService

ADMIN = admin_headers()
FOUR = ["one", "two", "three", "four"]  # the fewest captions a retrain accepts
CAPS4 = "\n".join(FOUR).encode()
QUICK = {"epochs": 1, "batch_size": 16}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


ADMIN_CALLS = [
    ("GET", "/v1/admin/versions", None),
    ("GET", "/v1/admin/jobs/some-job", None),
    ("POST", "/v1/admin/activate", {"version": "v1"}),
    ("POST", "/v1/admin/rollback", None),
    ("POST", "/v1/admin/retrain", {"captions": ["a", "b"]}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_admin_is_disabled_without_a_configured_key(
    make_client: Callable[..., TestClient], method: str, path: str, body: Any
) -> None:
    client = make_client(admin_key=None)
    r = client.request(method, path, json=body, headers=ADMIN)
    assert r.status_code == 403
    assert "BRIDGE_ADMIN_KEY is not set" in r.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
def test_admin_needs_the_right_bearer_key(
    client: TestClient, service: BridgeService, method: str, path: str, body: Any
) -> None:
    for headers, error in (
        ({}, None),
        ({"Authorization": f"Basic {ADMIN_KEY}"}, None),
        ({"Authorization": "Bearer not-the-key"}, "invalid_token"),
        ({"Authorization": f"Bearer {ADMIN_KEY}x"}, "invalid_token"),
    ):
        r = client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="admin"')
        assert (f'error="{error}"' in challenge) == (error is not None)
        assert "BRIDGE_ADMIN_KEY" in r.json()["detail"]
    assert [v.version for v in service.list_versions()] == ["v1"]
    assert service.readiness()["active_version"] == "v1"


def test_versions_lists_the_initial_bridge(client: TestClient) -> None:
    r = client.get("/v1/admin/versions", headers=ADMIN)
    assert r.status_code == 200
    body = r.json()
    assert body["active"] == "v1"
    (v1,) = body["versions"]
    assert v1["version"] == "v1" and v1["status"] == "ready" and v1["active"] is True
    assert len(v1["checkpoint_sha256"]) == 64


def test_unknown_ids_are_404_and_rollback_without_history_is_409(client: TestClient) -> None:
    r = client.get("/v1/admin/jobs/nope", headers=ADMIN)
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = client.post("/v1/admin/activate", json={"version": "v9"}, headers=ADMIN)
    assert r.status_code == 404 and "v9" in r.json()["detail"]
    r = client.post("/v1/admin/rollback", headers=ADMIN)
    assert r.status_code == 409 and r.json()["detail"]
    r = client.post("/v1/admin/activate", json={"name": "v1"}, headers=ADMIN)
    assert r.status_code == 422 and "version" in r.json()["detail"]


def test_retrain_activate_rollback(
    client: TestClient, service: BridgeService, make_png_bytes, make_wav_bytes
) -> None:
    files = [("files", (f"{i}.png", make_png_bytes(seed=i), "image/png")) for i in range(3)]
    files += [("files", (f"{i}.wav", make_wav_bytes(0.3, freq=200.0 * (i + 1)), "audio/wav"))
              for i in range(3)]  # fmt: skip
    assert client.post("/v1/items/batch", files=files).status_code == 201

    r = client.post(
        "/v1/admin/retrain",
        json={"captions": CAPTIONS, "train_overrides": QUICK},
        headers=ADMIN,
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["job_id"] and job["kind"] == "retrain"
    assert job["status"] in ("queued", "running", "succeeded")
    done = wait_for_api_job(client, job["job_id"])
    assert done["status"] == "succeeded", done
    assert done["progress"] == pytest.approx(1.0)
    assert done["version"] == "v2" and done["metrics"]

    versions = client.get("/v1/admin/versions", headers=ADMIN).json()
    assert versions["active"] == "v1"
    assert {v["version"]: v["status"] for v in versions["versions"]} == {
        "v1": "ready",
        "v2": "ready",
    }

    r = client.post("/v1/admin/activate", json={"version": "v2"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["active"] is True and r.json()["version"] == "v2"
    query = {"item_id": service.readiness() and _first_audio(client), "target": "image"}
    answer = client.post("/v1/search", json=query).json()
    assert answer["space"] == "shared" and answer["bridge_version"] == "v2"
    assert len(answer["results"]) == 3

    r = client.post("/v1/admin/rollback", headers=ADMIN)
    assert r.status_code == 200 and r.json()["version"] == "v1"
    assert client.post("/v1/search", json=query).json()["bridge_version"] == "v1"


def _first_audio(client: TestClient) -> str:
    answer = client.post("/v1/search", json={"text": "tone", "target": "audio", "k": 1}).json()
    return str(answer["results"][0]["id"])


def test_retrain_from_multipart_uploads(client: TestClient, service: BridgeService) -> None:
    rng = np.random.default_rng(0)
    image_memory = rng.standard_normal((12, TINY_CLIP_DIM)).astype(np.float32)
    captions = "\n".join(CAPTIONS).encode()
    r = client.post(
        "/v1/admin/retrain",
        files={
            "captions": ("captions.txt", captions, "text/plain"),
            "image_memory": ("img.npy", _npy_bytes(image_memory), "application/octet-stream"),
        },
        data={"train_overrides": '{"epochs": 1, "batch_size": 16}', "activate": "true"},
        headers=ADMIN,
    )
    assert r.status_code == 202, r.text
    done = wait_for_api_job(client, r.json()["job_id"])
    assert done["status"] == "succeeded", done
    assert service.readiness()["active_version"] == "v2"  # activate=true
    data = Path(service.config.data_dir)
    assert not list((data / "uploads").glob("*/*"))  # spent inputs are removed with the job
    kept = (data / "versions" / "v2" / "checkpoint" / "captions.txt").read_text()
    assert kept.splitlines() == CAPTIONS  # the corpus stays with the version


def test_failed_multipart_retrain_leaves_no_uploads(
    client: TestClient, service: BridgeService
) -> None:
    nan_memory = np.full((12, TINY_CLIP_DIM), np.nan, np.float32)  # values: checked in the job
    r = client.post(
        "/v1/admin/retrain",
        files={
            "captions": ("captions.txt", "\n".join(CAPTIONS).encode(), "text/plain"),
            "image_memory": ("img.npy", _npy_bytes(nan_memory), "application/octet-stream"),
        },
        headers=ADMIN,
    )
    assert r.status_code == 202, r.text
    done = wait_for_api_job(client, r.json()["job_id"])
    assert done["status"] == "failed" and "NaN" in done["error"], done
    assert not list((Path(service.config.data_dir) / "uploads").glob("*/*"))


@pytest.mark.parametrize(
    ("files", "form", "words"),
    [
        ({"image_memory": ("m.npy", _npy_bytes(np.ones((3, 4), np.float32)), "x/y")},
         {}, "`captions` file"),
        ({"captions": ("c.txt", b"\xff\xfe\x00bad", "text/plain")}, {}, "UTF-8"),
        ({"captions": ("c.txt", b"\n \n", "text/plain")}, {}, "no caption"),
        ({"captions": ("c.txt", CAPS4, "text/plain"),
          "image_memory": ("m.npy", b"not an npy file at all", "application/octet-stream")},
         {}, "image_memory"),
        ({"captions": ("c.txt", CAPS4, "text/plain"),
          "audio_memory": ("m.npy", _npy_bytes(np.zeros(5, np.float32)), "application/x-npy")},
         {}, "2-D float"),
        ({"captions": ("c.txt", CAPS4, "text/plain")}, {"train_overrides": "[1]"},
         "JSON object"),
        ({"captions": ("c.txt", CAPS4, "text/plain")}, {"train_overrides": '{"epochs": -1}'},
         "epochs"),
        ({"captions": ("c.txt", CAPS4, "text/plain")}, {"what": "x"}, "unknown form field"),
        ([("captions", ("c.txt", CAPS4, "text/plain"))] * 2, {}, "give `captions` once"),
    ],
)  # fmt: skip
def test_bad_multipart_retrain_is_422_and_leaves_no_files(
    client: TestClient, service: BridgeService, files: dict | list, form: dict, words: str
) -> None:
    r = client.post("/v1/admin/retrain", files=files, data=form, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]
    uploads = Path(service.config.data_dir) / "uploads"
    assert not uploads.exists() or not any(uploads.rglob("*.*"))
    assert [v.version for v in service.list_versions()] == ["v1"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({}, 422, "captions"),
        ({"captions": ["one", "two", "three"]}, 422, "at least 4"),
        ({"captions_path": "store.sqlite"}, 422, "service's own storage"),  # lost items once
        ({"captions_path": "a" * 300}, 422, "not a usable path"),  # was a 500
        ({"captions_path": "../../etc/passwd"}, 422, ""),
        ({"captions_path": "missing.txt"}, 404, "missing.txt"),
        ({"captions": FOUR, "train_overrides": {"no_such_option": 1}}, 422, "no_such_option"),
        ({"captions": FOUR, "colour": "red"}, 422, "colour"),
        ({"captions": FOUR, "train_overrides": {"epochs": 1.5}}, 422, "must be an integer"),
        ({"captions": FOUR, "train_overrides": {"hidden_dim": "8"}}, 422, "must be an integer"),
        ({"captions": FOUR, "train_overrides": {"lr": True}}, 422, "must be a number"),
        ({"captions": FOUR, "train_overrides": {"loss": "mse"}}, 422, "one of"),
        ({"captions": FOUR, "train_overrides": {"mode": "both"}}, 422, "cmcr"),
        ({"captions": FOUR, "train_overrides": {"mode": "exmcr", "loss": "cwcl"}}, 422, "Ex-MCR"),
        ({"captions": FOUR, "train_overrides": {"device": "cuda"}}, 422, "CUDA"),
    ],
)
def test_bad_json_retrain(client: TestClient, body: dict, status: int, words: str) -> None:
    r = client.post("/v1/admin/retrain", json=body, headers=ADMIN)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('{"captions": ' + "[" * 3000 + "]" * 3000 + "}", "nested too deeply"),  # was a 500
        ('{"captions": ["a"], "activate": 1' + "0" * 5000 + "}", "more than 4300 digits"),
    ],
)
def test_unparseable_json_retrain_is_422(client: TestClient, body: str, words: str) -> None:
    headers = {**ADMIN, "content-type": "application/json"}
    r = client.post("/v1/admin/retrain", content=body.encode(), headers=headers)
    assert r.status_code == 422, r.text
    assert words in r.json()["detail"]


def test_retrain_rejects_other_content_types(client: TestClient) -> None:
    r = client.post(
        "/v1/admin/retrain", content=b"a\nb", headers={**ADMIN, "content-type": "text/plain"}
    )
    assert r.status_code == 415


def test_a_second_retrain_while_one_runs_is_409(client: TestClient) -> None:
    # ~250 optimiser steps: far longer than the next request takes to arrive.
    body = {"captions": CAPTIONS * 4, "train_overrides": {"epochs": 8, "batch_size": 8}}
    first = client.post("/v1/admin/retrain", json=body, headers=ADMIN)
    assert first.status_code == 202
    second = client.post("/v1/admin/retrain", json=body, headers=ADMIN)
    assert second.status_code == 409, second.text
    assert "already running" in second.json()["detail"]
    assert wait_for_api_job(client, first.json()["job_id"], timeout=120)["status"] == "succeeded"
