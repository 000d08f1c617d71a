"""From a released projector file to an answer over HTTP, the way docs/published-model.md
tells a user: `mbridge import-checkpoint` (a separate process), then the server `make serve`
runs (`python -m app`, uvicorn) with BRIDGE_INITIAL_BRIDGE pointing at the imported bridge.

The released clap_clip.pt needs 512-d towers and the internet; this builds the same layout
(the authors' CLAPCLIP_Head, re-typed in tests/official_mcr.py, with random weights) at the
tiny towers' 16-d width. The audio query's scores are checked against the official forward
applied to the tiny towers' embeddings, and a second server is refused at start when the
bridge records other encoders than it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from media_factory import make_png_bytes, make_wav_bytes
from official_mcr import CLAPCLIP_Head, official_cmcr, randomize
from server_env import server_env
from tiny_models import TINY_CLIP_DIM

from bridge.model.imports import PUBLISHED_CLAP, PUBLISHED_CLIP
from bridge.model.projectors import load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _import(checkpoint: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bridge.cli", "import-checkpoint", "--kind", "cmcr",
               "--checkpoint", str(checkpoint), "--out", str(out), *flags]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=REPO, env=env, stdout=out, stderr=out
        )


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server not ready after {timeout}s:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_imported_cmcr_bridge_serves_an_audio_query(
    tmp_path: Path,
    tiny_clip_dir: Path,
    tiny_clap_dir: Path,
    tiny_clip_encoder: Any,
    tiny_clap_encoder: Any,
) -> None:
    head = randomize(CLAPCLIP_Head(TINY_CLIP_DIM), seed=11)
    released = tmp_path / "clap_clip.pt"
    torch.save(head.state_dict(), released)
    bridge = tmp_path / "published-bridge"
    done = _import(released, bridge, "--clip", str(tiny_clip_dir), "--clap", str(tiny_clap_dir))
    assert done.returncode == 0, done.stderr
    assert f"wrote bridge {bridge}" in done.stdout

    env = server_env(tmp_path / "data", tiny_clip_dir, tiny_clap_dir, bridge)
    url = f"http://127.0.0.1:{env['BRIDGE_PORT']}"
    log = tmp_path / "server.log"
    proc = _serve(env, log)
    try:
        _wait_ready(proc, url, log)
        images = [make_png_bytes(40, 40, seed=i) for i in range(5)]
        query = make_wav_bytes(0.5, 48000, 440.0)
        with httpx.Client(base_url=url, timeout=60) as client:
            files = [("files", (f"{i}.png", png, "image/png")) for i, png in enumerate(images)]
            r = client.post("/v1/items/batch", files=files)
            assert r.status_code == 201, r.text
            image_ids = [item["id"] for item in r.json()["items"]]

            r = client.post(
                "/v1/search",
                files={"file": ("query.wav", query, "audio/wav")},
                data={"target": "image", "k": "5"},
            )
            assert r.status_code == 200, r.text
            answer = r.json()
            admin = {"Authorization": f"Bearer {env['BRIDGE_ADMIN_KEY']}"}
            versions = client.get("/v1/admin/versions", headers=admin).json()
    finally:
        _stop(proc)

    # The answer comes from the imported bridge, registered as v1 from its folder.
    assert answer["space"] == "shared" and answer["bridge_version"] == "v1"
    (v1,) = versions["versions"]
    assert v1["active"] and v1["metrics"]["source"] == str(bridge)
    assert v1["metrics"]["mode"] == "cmcr"
    assert v1["checkpoint_sha256"] == load_checkpoint(bridge).sha256

    # Its scores are the official forward's cosines on the towers' embeddings.
    from bridge.encode.media import decode_audio, decode_image, resample

    waveform, rate = decode_audio(query, "query", 30.0)
    waveform = resample(waveform, rate, tiny_clap_encoder.sample_rate)
    clap = tiny_clap_encoder.encode_audio([waveform], tiny_clap_encoder.sample_rate)
    clip = tiny_clip_encoder.encode_image([decode_image(png, "image") for png in images])
    audio, vision = official_cmcr(head, torch.from_numpy(clap), torch.from_numpy(clip))
    expected = dict(zip(image_ids, (vision @ audio.T).squeeze(1).tolist(), strict=True))
    got = {hit["id"]: hit["score"] for hit in answer["results"]}
    assert set(got) == set(image_ids)
    for item_id, score in got.items():
        assert abs(score - expected[item_id]) < 1e-4, (item_id, score, expected[item_id])
    assert [hit["id"] for hit in answer["results"]] == sorted(expected, key=lambda i: -expected[i])


def test_server_refuses_to_start_with_a_bridge_for_other_encoders(
    tmp_path: Path, tiny_clip_dir: Path, tiny_clap_dir: Path
) -> None:
    released = tmp_path / "clap_clip.pt"
    torch.save(randomize(CLAPCLIP_Head(TINY_CLIP_DIM), seed=0).state_dict(), released)
    bridge = tmp_path / "published-bridge"
    assert _import(released, bridge).returncode == 0  # records the published encoders

    env = server_env(tmp_path / "data", tiny_clip_dir, tiny_clap_dir, bridge)
    log = tmp_path / "server.log"
    proc = _serve(env, log)
    try:
        assert proc.wait(timeout=120) == 1  # EXIT_LOAD_FAILED
    finally:
        _stop(proc)
    output = log.read_text()
    assert "the engine failed to start: ConflictError" in output
    for name in (PUBLISHED_CLIP, PUBLISHED_CLAP, str(tiny_clip_dir), str(tiny_clap_dir)):
        assert repr(name) in output, output
    assert not (tmp_path / "data" / "versions" / "v1").exists()
