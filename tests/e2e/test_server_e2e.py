"""End to end through a real server: `python -m app` (uvicorn) on a free loopback port.

Ingest images and audio, search in all four directions, retrain a bridge and activate it
while a thread keeps querying (no query may fail, and each answer comes wholly from the old
or the new version), kill -9 the process, restart it on the same data dir, and find every
acknowledged item again (and the activated version still active). On both vector backends:
FAISS, and a real Milvus server (tests/milvus_kit.py).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikit import CAPTIONS, admin_headers, train_tiny_bridge
from media_factory import make_png_bytes, make_wav_bytes
from server_env import QueryLoop, Server, server_env

from bridge.index.milvus_server import EmbeddedMilvus

ADMIN = admin_headers()


@pytest.fixture(scope="module")
def bridge_dir(tiny_clip_encoder: Any, tiny_clap_encoder: Any, tmp_path_factory) -> Path:
    """A small trained bridge between the tiny encoders (the server's initial version)."""
    out = tmp_path_factory.mktemp("e2e-bridge") / "ckpt"
    return train_tiny_bridge(tiny_clip_encoder, tiny_clap_encoder, out)


@pytest.fixture(params=["faiss", "milvus"])
def server(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    bridge_dir: Path,
) -> Iterator[Server]:
    """The server on each backend: FAISS, or a real Milvus server with HNSW indexes."""
    env = server_env(tmp_path / "data", tiny_clip_dir, tiny_clap_dir, bridge_dir)
    if request.param == "milvus":
        milvus: EmbeddedMilvus = request.getfixturevalue("milvus_server")
        env.update(BRIDGE_BACKEND="milvus", BRIDGE_MILVUS_URI=milvus.uri, BRIDGE_INDEX_TYPE="hnsw")
    srv = Server(env, tmp_path / "server.log")
    try:
        yield srv
    finally:
        srv.stop()


def _add(client: httpx.Client, files: list[tuple[str, bytes, str]], acked: dict[str, str]) -> None:
    r = client.post(
        "/v1/items/batch", files=[("files", f) for f in files], data={"metadata": "[" + ",".join(
            f'{{"name": "{name}"}}' for name, _, _ in files) + "]"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    for (name, _, _), item in zip(files, r.json()["items"], strict=True):
        acked[item["id"]] = name


def _search_file(client: httpx.Client, file: tuple[str, bytes, str], target: str) -> dict:
    r = client.post("/v1/search", files={"file": file}, data={"target": target, "k": "5"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_ingest_search_retrain_swap_and_crash_recovery(server: Server) -> None:
    started = time.monotonic()
    server.start()
    acked: dict[str, str] = {}
    images = [(f"img{i}.png", make_png_bytes(width=36 + i, seed=i), "image/png") for i in range(6)]
    sounds = [
        (f"snd{i}.wav", make_wav_bytes(seconds=0.4, freq=150.0 * (i + 1)), "audio/wav")
        for i in range(6)
    ]
    with httpx.Client(base_url=server.url, timeout=30) as client:
        _add(client, images[:3] + sounds[:3], acked)
        for one in (images[3], sounds[3]):
            r = client.post("/v1/items", files={"file": one})
            assert r.status_code == 201, r.text
            acked[r.json()["id"]] = one[0]

        # All four directions, with the space that answered.
        image_q = ("q.png", make_png_bytes(seed=42), "image/png")
        audio_q = ("q.wav", make_wav_bytes(seconds=0.4, freq=500.0), "audio/wav")
        for file, target, space in (
            (image_q, "image", "clip"),
            (audio_q, "audio", "clap"),
            (audio_q, "image", "shared"),
            (image_q, "audio", "shared"),
        ):
            answer = _search_file(client, file, target)
            assert answer["space"] == space, (file[0], target, answer)
            assert len(answer["results"]) == 4
            assert all(h["modality"] == target for h in answer["results"])
            assert {acked[h["id"]][:3] for h in answer["results"]} == {
                target[:3].replace("ima", "img").replace("aud", "snd")
            }
        assert (
            client.post("/v1/search", json={"text": "a bell", "target": "audio"}).json()["space"]
            == "clap"
        )

        # Retrain and swap while queries run.
        audio_item = next(i for i, name in acked.items() if name.startswith("snd"))
        loop = QueryLoop(server.url, audio_item)
        loop.start()
        r = client.post(
            "/v1/admin/retrain",
            json={"captions": CAPTIONS, "train_overrides": {"epochs": 2, "batch_size": 16}},
            headers=ADMIN,
        )
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        _add(client, images[4:] + sounds[4:], acked)  # writes during the job, too
        deadline = time.monotonic() + 40
        while (job := client.get(f"/v1/admin/jobs/{job_id}", headers=ADMIN).json())[
            "status"
        ] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["status"] == "succeeded", job
        new_version = job["version"]
        r = client.post("/v1/admin/activate", json={"version": new_version}, headers=ADMIN)
        assert r.status_code == 200, r.text
        swapped_at = time.monotonic()
        while sum(1 for t, _, _ in loop.answers if t > swapped_at) < 10:
            assert time.monotonic() < swapped_at + 20, "query loop stalled"
            time.sleep(0.05)
        loop.stop_flag.set()
        loop.join(timeout=30)

        assert not loop.failures, loop.failures[:5]
        versions = {v for _, v, _ in loop.answers}
        assert versions <= {"v1", new_version}, versions
        assert "v1" in versions and new_version in versions
        late = [v for t, v, s in loop.answers if t > swapped_at and s == "shared"]
        assert late and set(late) == {new_version}  # sent after the swap: new version only
        shared = client.post(
            "/v1/search", json={"item_id": audio_item, "target": "image", "k": 20}
        ).json()
        assert len(shared["results"]) == 6  # the items added during the job are in the new index

    # kill -9, restart on the same data dir: every acknowledged item is still there.
    server.kill()
    server.start()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for item_id, name in acked.items():
            r = client.get(f"/v1/items/{item_id}")
            assert r.status_code == 200, (name, r.text)
            assert r.json()["metadata"].get("name", name) == name
        assert client.get("/v1/admin/versions", headers=ADMIN).json()["active"] == new_version
        for target in ("image", "audio"):
            answer = client.post(
                "/v1/search", json={"text": "a bright bird", "target": target, "k": 50}
            ).json()
            assert len(answer["results"]) == 6
        answer = client.post(
            "/v1/search", json={"item_id": audio_item, "target": "image", "k": 50}
        ).json()
        assert answer["bridge_version"] == new_version and len(answer["results"]) == 6
    # Graceful stop: uvicorn finishes the lifespan (engine closed), then re-raises SIGTERM.
    assert server.stop() in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 90
