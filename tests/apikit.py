"""Helpers of the API tests, in-process (tests/app) and through a real server (tests/e2e): a
module, not a conftest, so that test files can import it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.encode.encoders import Encoder
    from bridge.service.facade import BridgeService

ADMIN_KEY = "test-admin-key-0123456789"
API_KEY = "test-api-key-0123456789"

CAPTIONS = [
    f"{adj} {noun} {verb}"
    for adj in ("a loud", "a quiet", "a red", "a small")
    for noun in ("dog", "bell", "car", "bird", "drum", "piano", "train", "voice")
    for verb in ("sound", "photo")
]


def train_tiny_bridge(clip: Encoder, clap: Encoder, out_dir: Path) -> Path:
    """A real C-MCR bridge between the tiny encoders (2 quick epochs on 64 captions)."""
    from bridge.model.config import ProjectorConfig, TrainConfig
    from bridge.model.trainer import train_bridge

    train_bridge(
        clip.encode_text(CAPTIONS),
        clap.encode_text(CAPTIONS),
        config=TrainConfig(epochs=2, batch_size=32, device="cpu", progress=False, seed=0),
        projector=ProjectorConfig(hidden_dim=32, shared_dim=16),
        out_dir=out_dir,
        encoders={"clip": clip.model_id, "clap": clap.model_id},
    )
    return out_dir


def admin_headers(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def item_count(service: BridgeService) -> int:
    return int(service.readiness()["items"])


def wait_for_api_job(client: Any, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll GET /v1/admin/jobs/{job_id} through `client` (a TestClient or httpx.Client) until
    the job succeeded or failed; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.get(f"/v1/admin/jobs/{job_id}", headers=admin_headers()).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")
