"""Two replicas of `python -m app` on one data directory and a real Milvus server, with the
store in the directory's SQLite file or on a real PostgreSQL server.

They start together on an empty store and seed the samples once. An item added through one
is found through the other within 2 s, and deleted through one it is a 404 through the
other at once. A retrain started through one is a job the other reports (and refuses a
second one while it runs); once it is activated through the first, the other answers with
the new bridge_version within 2 s, while a client querying it the whole time sees no failed
query and no answer that mixes versions.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apikit import CAPTIONS, admin_headers, train_tiny_bridge
from media_factory import make_png_bytes
from server_env import REPO, QueryLoop, Server, server_env

from bridge.index.milvus_server import EmbeddedMilvus

ADMIN = admin_headers()
SAMPLES_PER_MODALITY = 4
PROPAGATION_SECONDS = 2.0


def _small_samples(dest: Path) -> int:
    """A samples folder with the first few images and clips of models/samples."""
    source = REPO / "models" / "samples"
    lines = (source / "manifest.jsonl").read_text().splitlines()
    kept: list[str] = []
    for modality in ("image", "audio"):
        rows = [line for line in lines if json.loads(line)["modality"] == modality]
        kept += rows[:SAMPLES_PER_MODALITY]
    for line in kept:
        file = json.loads(line)["file"]
        (dest / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / file, dest / file)
    (dest / "manifest.jsonl").write_text("\n".join(kept) + "\n")
    return len(kept)


ReplicaEnv = Callable[..., dict[str, str]]


@pytest.fixture
def replica_env(
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    tiny_clip_encoder: Any,
    tiny_clap_encoder: Any,
    milvus_server: EmbeddedMilvus,
) -> ReplicaEnv:
    """The environment of one replica: the test's one data directory, the tiny towers and a
    tiny bridge, the session's Milvus server; keyword arguments add BRIDGE_* settings."""
    bridge = train_tiny_bridge(tiny_clip_encoder, tiny_clap_encoder, tmp_path / "bridge")

    def env(**settings: str) -> dict[str, str]:
        made = server_env(tmp_path / "data", tiny_clip_dir, tiny_clap_dir, bridge)
        made.update(BRIDGE_BACKEND="milvus", BRIDGE_MILVUS_URI=milvus_server.uri, **settings)
        return made

    return env


@pytest.fixture(params=["sqlite", "postgres"])
def replicas(
    request: pytest.FixtureRequest, tmp_path: Path, replica_env: ReplicaEnv
) -> Iterator[tuple[Server, Server, int]]:
    samples = tmp_path / "samples"
    count = _small_samples(samples)
    # The store: a SQLite file in the shared data directory (replicas on one machine), or a
    # PostgreSQL database (replicas on several; the catalog's lock is then an advisory lock).
    database = (
        request.getfixturevalue("postgres_server").new_database()
        if request.param == "postgres"
        else ""
    )
    servers = []
    for name in ("a", "b"):
        env = replica_env(
            BRIDGE_SEED_SAMPLES="true",
            BRIDGE_SAMPLES_DIR=str(samples),
            BRIDGE_DATABASE_URL=database,
        )
        servers.append(Server(env, tmp_path / f"replica-{name}.log"))
    try:
        yield servers[0], servers[1], count
    finally:
        for server in servers:
            server.stop()


def _until(condition: Any, seconds: float, what: str) -> float:
    """Poll ``condition()`` until true; returns the seconds it took (AssertionError past
    ``seconds``)."""
    begun = time.monotonic()
    while not condition():
        assert time.monotonic() - begun < seconds, f"{what} not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - begun


def test_two_replicas_share_items_jobs_and_the_active_version(
    replicas: tuple[Server, Server, int],
) -> None:
    a, b, samples = replicas
    a.launch()
    b.launch()  # together, on an empty store
    a.wait_ready(90)
    b.wait_ready(90)
    with (
        httpx.Client(base_url=a.url, timeout=30) as ca,
        httpx.Client(base_url=b.url, timeout=30) as cb,
    ):
        assert ca.get("/readyz").json()["engine"]["items"] == samples  # seeded once, not twice
        assert cb.get("/readyz").json()["engine"]["items"] == samples

        # Added through A: found through B within 2 s (by id at once, by search soon).
        r = ca.post("/v1/items", files={"file": ("new.png", make_png_bytes(seed=7), "image/png")})
        assert r.status_code == 201, r.text
        item = r.json()["id"]
        assert cb.get(f"/v1/items/{item}").status_code == 200

        def b_finds_it() -> bool:  # (a search by the item itself would leave it out)
            answer = cb.post("/v1/search", json={"text": "a digit", "target": "image", "k": 20})
            return answer.status_code == 200 and item in {h["id"] for h in answer.json()["results"]}

        _until(b_finds_it, PROPAGATION_SECONDS, "an item added through A, searched through B")

        # Deleted through A: a 404 through B.
        assert ca.delete(f"/v1/items/{item}").status_code == 204
        assert cb.get(f"/v1/items/{item}").status_code == 404

        # A retrain through A is a job B reports; B refuses a second one while it runs.
        audio = cb.post("/v1/search", json={"text": "a dog", "target": "audio", "k": 1}).json()
        loop = QueryLoop(b.url, audio["results"][0]["id"])
        loop.start()
        body = {"captions": CAPTIONS, "train_overrides": {"epochs": 2, "batch_size": 16}}
        r = ca.post("/v1/admin/retrain", json=body, headers=ADMIN)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        seen = cb.get(f"/v1/admin/jobs/{job_id}", headers=ADMIN)
        assert seen.status_code == 200, seen.text
        if seen.json()["status"] in ("queued", "running"):
            second = cb.post("/v1/admin/retrain", json=body, headers=ADMIN)
            assert second.status_code == 409, second.text
        deadline = time.monotonic() + 60
        while (job := cb.get(f"/v1/admin/jobs/{job_id}", headers=ADMIN).json())["status"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
        assert job["status"] == "succeeded", job
        new_version = job["version"]

        # Activated through A: B answers with it within 2 s, no query failing meanwhile.
        r = ca.post("/v1/admin/activate", json={"version": new_version}, headers=ADMIN)
        assert r.status_code == 200, r.text
        activated = time.monotonic()

        def b_serves_it() -> bool:
            return any(v == new_version for t, v, s in loop.answers if t > activated)

        took = _until(b_serves_it, PROPAGATION_SECONDS, "B answering with the new version")
        while sum(1 for t, _, _ in loop.answers if t > activated + took) < 5:
            assert time.monotonic() < activated + 20, "query loop stalled"
            time.sleep(0.05)
        loop.stop_flag.set()
        loop.join(timeout=30)
        assert not loop.failures, loop.failures[:5]
        assert {v for _, v, _ in loop.answers} <= {"v1", new_version}
        late = [v for t, v, s in loop.answers if t > activated + took and s == "shared"]
        assert late and set(late) == {new_version}
        assert cb.get("/v1/admin/versions", headers=ADMIN).json()["active"] == new_version


def test_workers_of_one_server_are_replicas(tmp_path: Path, replica_env: ReplicaEnv) -> None:
    """BRIDGE_WORKERS=2: uvicorn's two worker processes on one port serve one data directory;
    whichever worker a new connection reaches finds an item another one added."""
    server = Server(replica_env(BRIDGE_WORKERS="2"), tmp_path / "server.log")
    try:
        server.start(90)  # one worker ready; the other may still be loading: wait for both
        ready: set[int] = set()
        deadline = time.monotonic() + 90
        while len(ready) < 2:
            assert time.monotonic() < deadline, server.output()
            r = httpx.get(f"{server.url}/readyz", timeout=10)
            if r.status_code == 200:
                ready.add(r.json()["engine"]["replica"]["pid"])
        added = []
        for seed in range(4):  # each on a new connection: both workers take some
            r = httpx.post(
                f"{server.url}/v1/items",
                files={"file": (f"{seed}.png", make_png_bytes(seed=seed), "image/png")},
                timeout=60,
            )
            assert r.status_code == 201, r.text
            added.append(r.json()["id"])

        def every_worker_finds_all() -> bool:
            for _ in range(8):
                answer = httpx.post(
                    f"{server.url}/v1/search",
                    json={"text": "a digit", "target": "image", "k": 10},
                    timeout=30,
                )
                if {h["id"] for h in answer.json()["results"]} != set(added):
                    return False
            return True

        _until(every_worker_finds_all, PROPAGATION_SECONDS + 5, "every worker finding every item")
        engine = httpx.get(f"{server.url}/readyz", timeout=10).json()["engine"]
        assert engine["replica"]["shared"] is True  # each worker knows it is one of several
        assert server.stop() in (0, -15)
    finally:
        server.stop()


def test_a_retrain_whose_replica_dies_is_taken_over(
    tmp_path: Path, replica_env: ReplicaEnv
) -> None:
    """kill -9 the replica running a retrain: once its lease runs out, the other replica
    reruns the job from the request it recorded, under the same job id, and it succeeds."""
    servers = [Server(replica_env(), tmp_path / f"replica-{name}.log") for name in ("a", "b")]
    a, b = servers
    try:
        a.start(90)
        b.start(90)
        body = {"captions": CAPTIONS, "train_overrides": {"epochs": 400, "batch_size": 16}}
        r = httpx.post(f"{a.url}/v1/admin/retrain", json=body, headers=ADMIN, timeout=30)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        first_version = r.json()["version"]

        def job() -> dict[str, Any]:
            found = httpx.get(f"{b.url}/v1/admin/jobs/{job_id}", headers=ADMIN, timeout=30)
            return dict(found.json())

        _until(lambda: job()["status"] == "running", 30, "the job running on A")
        a.kill()
        assert job()["status"] == "running", "the job ended before A died: more epochs"
        deadline = time.monotonic() + 120  # the lease (15 s), B's check, then the rerun
        while (state := job())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state["status"] == "succeeded", state
        assert state["version"] != first_version  # the dead replica's version failed
        versions = {
            v["version"]: v["status"]
            for v in httpx.get(f"{b.url}/v1/admin/versions", headers=ADMIN).json()["versions"]
        }
        assert versions[first_version] == "failed" and versions[state["version"]] == "ready"
        assert "taking over job" in b.output()
    finally:
        for server in servers:
            server.stop()
