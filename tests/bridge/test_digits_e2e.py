"""End to end on the committed digits subset: real encoders, the committed demo bridge, FAISS.

Spoken digits (FSDD test takes, never used in any training) are matched against handwritten
digits (MNIST 5000-9999, never used in any training) through demo-CLAP -> CLAP projector and
demo-CLIP -> CLIP projector, with an exact FAISS inner-product index. No audio-image pair was
used to train anything, so retrieval far above chance (0.10) means the bridge works.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bridge.encode.encoders import load_encoder
from bridge.encode.media import decode_audio, decode_image, read_media_file
from bridge.model.projectors import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
CHANCE = 0.10


def _manifest() -> list[dict]:
    lines = (MODELS / "samples" / "manifest.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def shared() -> dict[str, np.ndarray]:
    """Shared-space embeddings and labels of the 300 committed sample images and clips."""
    rows = _manifest()
    images = [r for r in rows if r["modality"] == "image"]
    clips = [r for r in rows if r["modality"] == "audio"]
    clip_enc = load_encoder("clip", str(MODELS / "demo-clip"), device="cpu")
    clap_enc = load_encoder("clap", str(MODELS / "demo-clap"), device="cpu")
    bridge = load_checkpoint(MODELS / "demo-bridge")

    pictures = [decode_image(read_media_file(MODELS / "samples" / r["file"])) for r in images]
    decoded = [decode_audio(read_media_file(MODELS / "samples" / r["file"])) for r in clips]
    rates = {rate for _, rate in decoded}
    assert rates == {8000}
    image_raw = clip_enc.encode_image(pictures)
    audio_raw = clap_enc.encode_audio([w for w, _ in decoded], sample_rate=8000)
    return {
        "image": bridge.project("clip", image_raw),
        "audio": bridge.project("clap", audio_raw),
        "image_labels": np.array([r["metadata"]["label"] for r in images]),
        "audio_labels": np.array([r["metadata"]["label"] for r in clips]),
    }


def _precision_at_1(queries: np.ndarray, gallery: np.ndarray, q_lab, g_lab) -> float:
    import faiss

    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(np.ascontiguousarray(gallery, dtype=np.float32))
    _, top = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    p1 = float(np.mean(g_lab[top[:, 0]] == q_lab))
    print(f"P@1 {p1:.3f} over {len(queries)} queries")
    return p1


def test_subset_is_the_documented_one() -> None:
    rows = _manifest()
    assert sum(r["modality"] == "image" for r in rows) == 300
    assert sum(r["modality"] == "audio" for r in rows) == 300
    for r in rows:
        assert (MODELS / "samples" / r["file"]).is_file()
        assert r["metadata"]["label"] in range(10)
        assert r["metadata"]["license"].startswith("CC BY-SA")


def test_audio_to_image_far_above_chance(shared: dict[str, np.ndarray]) -> None:
    p1 = _precision_at_1(
        shared["audio"], shared["image"], shared["audio_labels"], shared["image_labels"]
    )
    assert p1 >= 0.8, f"audio->image P@1 {p1:.3f} (chance {CHANCE})"


def test_image_to_audio_far_above_chance(shared: dict[str, np.ndarray]) -> None:
    p1 = _precision_at_1(
        shared["image"], shared["audio"], shared["image_labels"], shared["audio_labels"]
    )
    assert p1 >= 0.8, f"image->audio P@1 {p1:.3f} (chance {CHANCE})"


def test_shuffled_bridge_is_at_chance(shared: dict[str, np.ndarray]) -> None:
    """The check above can fail: with the audio labels permuted the same search is near chance."""
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(shared["audio_labels"])
    p1 = _precision_at_1(shared["audio"], shared["image"], shuffled, shared["image_labels"])
    assert p1 < 0.3
