"""Storage faults through the real app, on real files and a real SQLite store:

- a full disk (a small tmpfs, the kernel's own ENOSPC: tests/diskkit.py) during ingest, a
  retrain and an index save: 507, nothing half-written, reads go on;
- an index file or a checkpoint's weights damaged on disk, found at start by their sha256:
  the index is rebuilt from the store, the version is marked failed and the service serves
  the previous one (or none), and the log names the file;
- the SQLite store's write lock held by another process: a write waits for it up to
  BRIDGE_STORE_BUSY_TIMEOUT, then answers 503 with Retry-After.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from apikit import CAPTIONS, admin_headers, wait_for_api_job
from diskkit import fill, grow_wal, small_disk, wal_checkpoint
from fastapi.testclient import TestClient

from bridge.errors import StorageFullError
from bridge.index.files import file_sha256

if TYPE_CHECKING:
    from bridge.encode.encoders import Encoder
    from bridge.service.facade import BridgeService

ADMIN = admin_headers()
QUICK = {"epochs": 1, "batch_size": 16}
MiB = 1 << 20


@pytest.fixture
def backend() -> str:
    """FAISS only: its index files are what a full disk or a damaged file can hit (a Milvus
    index directory holds a manifest alone)."""
    return "faiss"


class Served:
    """Start and restart a real BridgeService and the real app over it, on one data dir."""

    def __init__(
        self, make_settings: Callable[..., Any], clip: Encoder, clap: Encoder, stack: ExitStack
    ) -> None:
        self.make_settings = make_settings
        self.clip, self.clap = clip, clap
        self.stack = stack
        self.service: BridgeService | None = None

    def start(self, **overrides: Any) -> tuple[BridgeService, TestClient]:
        from app.main import create_app
        from bridge.service.facade import BridgeService

        settings = self.make_settings(**overrides)
        self.data_dir = Path(settings.data_dir)
        service = BridgeService.open(settings.service_config(), clip=self.clip, clap=self.clap)
        self.service = service
        self.stack.callback(self._close_quietly, service)
        client = self.stack.enter_context(TestClient(create_app(settings, service=service)))
        return service, client

    @staticmethod
    def _close_quietly(service: BridgeService) -> None:
        with contextlib.suppress(StorageFullError):  # a test that left the disk full
            service.close()


@pytest.fixture
def served(
    make_settings: Callable[..., Any], tiny_clip_encoder: Encoder, tiny_clap_encoder: Encoder
) -> Iterator[Served]:
    with ExitStack() as stack:
        yield Served(make_settings, tiny_clip_encoder, tiny_clap_encoder, stack)


def _files_under(root: Path, folders: bool = True) -> list[str]:
    """Every file (and folder) under root, hidden temps included, relative, sorted."""
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if folders or not p.is_dir()
    )


def _blobs(data_dir: Path) -> list[str]:
    """The blob store's files, temps included (an empty prefix folder holds no blob)."""
    return _files_under(data_dir / "blobs", folders=False)


def _post(client: TestClient, name: str, data: bytes, ctype: str) -> Any:
    return client.post("/v1/items", files={"file": (name, data, ctype)})


def _flip_bytes(path: Path, count: int = 16) -> None:
    """Invert `count` bytes in the middle of the file: the damage a bad sector or a stray
    write does, in the payload (a reader of the format does not notice it)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(b ^ 0xFF for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


def _hits(client: TestClient, **query: Any) -> list[tuple[str, float]]:
    r = client.post("/v1/search", json=query)
    assert r.status_code == 200, r.text
    return [(hit["id"], round(hit["score"], 4)) for hit in r.json()["results"]]


def _retrain(client: TestClient, **extra: Any) -> dict[str, Any]:
    body = {"captions": CAPTIONS, "train_overrides": QUICK, **extra}
    r = client.post("/v1/admin/retrain", json=body, headers=ADMIN)
    assert r.status_code == 202, r.text
    return wait_for_api_job(client, r.json()["job_id"], timeout=120)


def _stock(client: TestClient, make_png_bytes: Any, make_wav_bytes: Any) -> dict[str, list[str]]:
    files = [("files", (f"{i}.png", make_png_bytes(seed=i), "image/png")) for i in range(4)]
    files += [
        ("files", (f"{i}.wav", make_wav_bytes(0.3, freq=200.0 * (i + 1)), "audio/wav"))
        for i in range(3)
    ]
    r = client.post("/v1/items/batch", files=files)
    assert r.status_code == 201, r.text
    out: dict[str, list[str]] = {"image": [], "audio": []}
    for item in r.json()["items"]:
        out[item["modality"]].append(item["id"])
    return out


# ------------------------------------------------------------------ a full disk


def test_ingest_on_a_full_disk_is_507_and_leaves_no_blob_or_row(
    served: Served, tmp_path: Path, make_png_bytes: Any, make_wav_bytes: Any
) -> None:
    with small_disk(tmp_path / "disk", 32 * MiB) as disk:
        service, client = served.start(data_dir=disk / "data")
        stocked = _stock(client, make_png_bytes, make_wav_bytes)
        image = stocked["image"][0]
        query = {"item_id": image, "target": "image", "k": 3}
        hits = _hits(client, **query)
        before = (service.readiness()["items"], _blobs(disk / "data"))

        def unchanged() -> None:
            assert (service.readiness()["items"], _blobs(disk / "data")) == before
            assert client.get(f"/v1/items/{image}").status_code == 200  # reads go on
            assert client.get(f"/v1/items/{image}/content").status_code == 200
            assert _hits(client, **query) == hits

        # No room for the upload's bytes.
        filler = fill(disk)
        r = _post(client, "new.png", make_png_bytes(seed=9), "image/png")
        assert r.status_code == 507, r.text
        assert "the disk is full" in r.json()["detail"]
        assert "blob store" in r.json()["detail"]
        unchanged()
        # A batch whose second blob finds the disk full removes the first.
        filler.unlink()
        png = make_png_bytes(16, 16, seed=10)
        filler = fill(disk, leave=len(png))  # room for one small blob, not two
        files = [("files", (f"{i}.png", png, "image/png")) for i in range(2)]
        r = client.post("/v1/items/batch", files=files)
        assert r.status_code == 507, r.text
        unchanged()

        # Room for the blob, none for the store's commit: the SQLite file is what is full.
        filler.unlink()
        wal_checkpoint(disk / "data" / "store.sqlite", "TRUNCATE")  # the next commit grows it
        filler = fill(disk, leave=len(png))
        r = _post(client, "new.png", png, "image/png")
        assert r.status_code == 507, r.text
        detail = r.json()["detail"]
        assert "the disk is full" in detail and "store.sqlite" in detail, detail
        unchanged()  # the blob written before the failed commit is gone

        filler.unlink()  # space again: the same upload goes through
        r = _post(client, "new.png", png, "image/png")
        assert r.status_code == 201, r.text
        assert service.readiness()["items"] == before[0] + 1
        assert len(_blobs(disk / "data")) == len(before[1]) + 1


def test_index_save_on_a_full_disk_keeps_the_old_index_and_catches_up_at_start(
    served: Served, tmp_path: Path, make_png_bytes: Any, make_wav_bytes: Any
) -> None:
    with small_disk(tmp_path / "disk", 32 * MiB) as disk:
        service, client = served.start(data_dir=disk / "data")
        _stock(client, make_png_bytes, make_wav_bytes)
        service.catalog.save_all(force=True)
        native = disk / "data" / "native"
        manifest = json.loads((native / "clip_image" / "manifest.json").read_text())
        assert manifest["count"] == 4
        saved = _files_under(native)
        late = _post(client, "late.png", make_png_bytes(seed=7), "image/png").json()["id"]

        filler = fill(disk)
        with pytest.raises(StorageFullError, match="the disk is full: could not write the index"):
            service.close()  # saves the changed indexes
        assert _files_under(native) == saved  # no temp folder left, the old files in place
        assert json.loads((native / "clip_image" / "manifest.json").read_text()) == manifest

        filler.unlink()
        service, client = served.start(data_dir=disk / "data")  # catches up from the store
        ids = [hit for hit, _ in _hits(client, text="a photo", target="image", k=10)]
        assert late in ids and len(ids) == 5


def test_retrain_on_a_full_disk_fails_its_job_and_leaves_no_version_files(
    served: Served, tmp_path: Path, make_png_bytes: Any, make_wav_bytes: Any
) -> None:
    with small_disk(tmp_path / "disk", 48 * MiB) as disk:
        service, client = served.start(data_dir=disk / "data")
        stocked = _stock(client, make_png_bytes, make_wav_bytes)
        bridged = {"item_id": stocked["image"][0], "target": "audio", "k": 3}
        hits = _hits(client, **bridged)
        versions_dir = disk / "data" / "versions"
        before = _files_under(versions_dir)
        # The store's commits rewrite -wal pages it already has: the checkpoint and index
        # files are what find the disk full, not the job's bookkeeping.
        grow_wal(disk / "data" / "store.sqlite", 2 * MiB)
        filler = fill(disk)

        job = _retrain(client, activate=True)
        assert job["status"] == "failed", job
        assert "the disk is full" in job["error"], job
        versions = client.get("/v1/admin/versions", headers=ADMIN).json()
        assert versions["active"] == "v1"
        status = {v["version"]: v["status"] for v in versions["versions"]}
        assert status == {"v1": "ready", "v2": "failed"}
        assert _files_under(versions_dir) == before  # no checkpoint, index or temp of v2
        r = client.post("/v1/search", json=bridged)
        assert r.status_code == 200 and r.json()["bridge_version"] == "v1"
        assert _hits(client, **bridged) == hits

        filler.unlink()
        job = _retrain(client)
        assert job["status"] == "succeeded", job
        assert job["version"] == "v3"


# ------------------------------------------------------------------ damaged files


def test_a_damaged_index_file_is_found_at_start_and_rebuilt_from_the_store(
    served: Served,
    make_png_bytes: Any,
    make_wav_bytes: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import faiss

    service, client = served.start()
    stocked = _stock(client, make_png_bytes, make_wav_bytes)
    native_query = {"item_id": stocked["image"][0], "target": "image", "k": 3}
    bridged_query = {"item_id": stocked["image"][0], "target": "audio", "k": 3}
    native_hits, bridged_hits = _hits(client, **native_query), _hits(client, **bridged_query)
    service.close()  # saves the indexes, with their checksums in the manifests

    data = served.data_dir
    damaged = [
        data / "native" / "clip_image" / "index.faiss",
        data / "versions" / "v1" / "shared_audio" / "index.faiss",
    ]
    for path in damaged:
        _flip_bytes(path)
        faiss.read_index(str(path))  # FAISS reads it without complaint: only the hash tells

    caplog.set_level(logging.WARNING)
    service, client = served.start()
    for path in damaged:
        assert f"{path} was changed or damaged on disk" in caplog.text
        manifest = json.loads((path.parent / "manifest.json").read_text())
        assert manifest["checksums"]["index.faiss"] == file_sha256(path)  # rebuilt and saved
    assert _hits(client, **native_query) == native_hits
    assert _hits(client, **bridged_query) == bridged_hits


def test_a_damaged_checkpoint_is_marked_failed_and_the_previous_version_served(
    served: Served,
    make_png_bytes: Any,
    make_wav_bytes: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, client = served.start()
    stocked = _stock(client, make_png_bytes, make_wav_bytes)
    bridged = {"item_id": stocked["image"][0], "target": "audio", "k": 3}
    v1_hits = _hits(client, **bridged)
    assert _retrain(client, activate=True)["status"] == "succeeded"
    assert client.post("/v1/search", json=bridged).json()["bridge_version"] == "v2"
    service.close()

    weights = served.data_dir / "versions" / "v2" / "checkpoint" / "weights.safetensors"
    _flip_bytes(weights)
    caplog.set_level(logging.WARNING)
    service, client = served.start()
    assert f"{weights} was changed or damaged on disk" in caplog.text
    assert "serving bridge version v1 instead of v2" in caplog.text
    versions = client.get("/v1/admin/versions", headers=ADMIN).json()
    assert versions["active"] == "v1"
    v2 = next(v for v in versions["versions"] if v["version"] == "v2")
    assert v2["status"] == "failed"
    r = client.post("/v1/search", json=bridged)
    assert r.status_code == 200 and r.json()["bridge_version"] == "v1"
    assert _hits(client, **bridged) == v1_hits
    r = client.post("/v1/admin/activate", json={"version": "v2"}, headers=ADMIN)
    assert r.status_code == 409, r.text


def test_a_damaged_only_checkpoint_starts_the_service_without_a_bridge(
    served: Served,
    make_png_bytes: Any,
    make_wav_bytes: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    service, client = served.start()
    stocked = _stock(client, make_png_bytes, make_wav_bytes)
    native = {"item_id": stocked["image"][0], "target": "image", "k": 3}
    native_hits = _hits(client, **native)
    service.close()

    weights = served.data_dir / "versions" / "v1" / "checkpoint" / "weights.safetensors"
    _flip_bytes(weights)
    caplog.set_level(logging.WARNING)
    service, client = served.start()
    assert f"{weights} was changed or damaged on disk" in caplog.text
    assert "serving native searches only" in caplog.text
    assert client.get("/readyz").status_code == 200
    assert service.readiness()["active_version"] is None
    assert _hits(client, **native) == native_hits
    bridged = {"item_id": stocked["image"][0], "target": "audio", "k": 3}
    r = client.post("/v1/search", json=bridged)
    assert r.status_code == 409 and "needs an active bridge" in r.json()["detail"]

    service.close()  # the next start does not try it again, and says why
    caplog.clear()
    service, client = served.start()
    assert "bridge version v1 is failed; not serving it" in caplog.text
    assert f"{weights} was changed" not in caplog.text


# ------------------------------------------------------------------ a busy store

_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
if sys.argv[2] == "stdin":
    sys.stdin.readline()
else:
    time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def _hold_write_lock(store: Path, hold: str) -> subprocess.Popen[str]:
    """Another process that takes the store's write lock (BEGIN EXCLUSIVE) and keeps it for
    `hold` seconds, or until a line on its stdin ("stdin")."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(store), hold],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_write_waits_for_a_lock_released_within_the_busy_timeout(
    served: Served, make_png_bytes: Any
) -> None:
    service, client = served.start(store_busy_timeout=10.0)
    holder = _hold_write_lock(served.data_dir / "store.sqlite", "1.0")
    try:
        started = time.monotonic()
        r = _post(client, "a.png", make_png_bytes(seed=1), "image/png")
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    assert r.status_code == 201, r.text
    assert 0.5 < waited < 8.0, waited  # it waited for the lock, not for the whole timeout
    assert service.readiness()["items"] == 1


def test_a_write_past_the_busy_timeout_is_503_with_retry_after(
    served: Served, make_png_bytes: Any
) -> None:
    service, client = served.start(store_busy_timeout=1.0)
    item = _post(client, "a.png", make_png_bytes(seed=1), "image/png").json()["id"]
    blobs = _blobs(served.data_dir)
    query = {"text": "a photo", "target": "image", "k": 3}
    hits = _hits(client, **query)
    holder = _hold_write_lock(served.data_dir / "store.sqlite", "stdin")
    try:
        started = time.monotonic()
        r = _post(client, "b.png", make_png_bytes(seed=2), "image/png")
        waited = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"].isdigit()
        detail = r.json()["detail"]
        assert detail.startswith("the item store is busy, retry later"), detail
        assert "store.sqlite" in detail and "1 s" in detail
        assert 0.9 < waited < 5.0, waited  # bounded by the timeout: no hang
        r = client.delete(f"/v1/items/{item}")
        assert r.status_code == 503, r.text
        # Reads go on while the lock is held; nothing of the refused writes was kept.
        assert client.get(f"/v1/items/{item}").status_code == 200
        assert _hits(client, **query) == hits
        assert service.readiness()["items"] == 1
        assert _blobs(served.data_dir) == blobs
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
    r = _post(client, "b.png", make_png_bytes(seed=2), "image/png")
    assert r.status_code == 201, r.text
    assert client.delete(f"/v1/items/{item}").status_code == 204
