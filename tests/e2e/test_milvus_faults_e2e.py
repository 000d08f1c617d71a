"""The Milvus backend when Milvus goes away: a real server stopped during ingest and search.

While it is down every request answers (no 500, no hang past BRIDGE_MILVUS_TIMEOUT):
searches and refused writes get 503 with Retry-After, /readyz says the vector backend is
the dependency that is down, and a write whose commit went through before the failure was
noticed is acknowledged (201) and caught up later. When Milvus returns, the replica
recovers by itself: /readyz turns 200 again without a restart once Milvus has reloaded the
collections, searches answer (a first one may still time out: 503 with Retry-After), and
every acknowledged item is stored and found by search.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikit import train_tiny_bridge
from media_factory import make_png_bytes, make_wav_bytes
from server_env import Server, server_env

from bridge.index.milvus_server import EmbeddedMilvus


@pytest.fixture
def cluster(
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    tiny_clip_encoder: Any,
    tiny_clap_encoder: Any,
    milvus_server: EmbeddedMilvus,
) -> Iterator[tuple[Server, EmbeddedMilvus]]:
    bridge = train_tiny_bridge(tiny_clip_encoder, tiny_clap_encoder, tmp_path / "bridge")
    env = server_env(tmp_path / "data", tiny_clip_dir, tiny_clap_dir, bridge)
    env.update(
        BRIDGE_BACKEND="milvus", BRIDGE_MILVUS_URI=milvus_server.uri, BRIDGE_MILVUS_TIMEOUT="3"
    )
    server = Server(env, tmp_path / "server.log")
    try:
        yield server, milvus_server
    finally:
        server.stop()
        if not milvus_server.running:  # the session's server, for the tests after this one
            milvus_server.start()


def _image(i: int) -> tuple[str, bytes, str]:
    return (f"img{i}.png", make_png_bytes(width=30 + i, seed=i), "image/png")


def test_milvus_down_during_ingest_and_search_then_back(
    cluster: tuple[Server, EmbeddedMilvus],
) -> None:
    server, milvus = cluster
    server.start()
    acked: set[str] = set()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for i in range(3):
            r = client.post("/v1/items", files={"file": _image(i)})
            assert r.status_code == 201, r.text
            acked.add(r.json()["id"])
        sound = ("s.wav", make_wav_bytes(seconds=0.4, freq=300.0), "audio/wav")
        assert client.post("/v1/items", files={"file": sound}).status_code == 201

        milvus.stop()
        outcomes: list[int] = []
        for i in range(3, 7):  # ingest and search while Milvus is down
            started = time.monotonic()
            r = client.post("/v1/items", files={"file": _image(i)})
            outcomes.append(r.status_code)
            assert r.status_code in (201, 503), r.text
            if r.status_code == 201:
                acked.add(r.json()["id"])
            else:
                assert int(r.headers["Retry-After"]) > 0
                assert "vector backend" in r.json()["detail"]
            s = client.post("/v1/search", json={"text": "a red square", "target": "image"})
            outcomes.append(s.status_code)
            assert s.status_code == 503, s.text
            assert int(s.headers["Retry-After"]) > 0 and "vector backend" in s.json()["detail"]
            assert time.monotonic() - started < 20  # bounded by BRIDGE_MILVUS_TIMEOUT
        assert 500 not in outcomes
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "vector backend" in ready.json()["detail"]
        assert ready.json()["engine"]["backend"]["reachable"] is False

        milvus.start()
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200:  # recovers without a restart
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.5)
        for item_id in acked:
            assert client.get(f"/v1/items/{item_id}").status_code == 200
        # /readyz waited for Milvus to reload the collections; the first searches after a
        # restart can still outlast BRIDGE_MILVUS_TIMEOUT (3 s here): 503 with Retry-After,
        # never a 500, and a client that retries gets its answer.
        query = {"text": "a red square", "target": "image", "k": 50}
        while (found := client.post("/v1/search", json=query)).status_code != 200:
            assert found.status_code == 503 and "Retry-After" in found.headers, found.text
            assert time.monotonic() < deadline + 60, found.text
            time.sleep(1)
        assert {hit["id"] for hit in found.json()["results"]} == acked  # nothing acked lost
        r = client.post("/v1/items", files={"file": _image(9)})
        assert r.status_code == 201, r.text
