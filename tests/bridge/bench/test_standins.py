"""What the service benchmarks run on: seeded stand-in encoders, WAV queries, stored items."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bridge.bench.standins import audio_queries, build_clip, near_queries, unit_rows
from bridge.types import ServiceConfig


def test_unit_rows_and_near_queries_are_unit_length_and_seeded() -> None:
    rows = unit_rows(np.random.default_rng(0), 100, 8)
    assert rows.shape == (100, 8) and rows.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(rows, unit_rows(np.random.default_rng(0), 100, 8))
    queries = near_queries(np.random.default_rng(1), rows, 10)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)
    assert (np.sum(queries * rows[:10], axis=1) > 0.9).all()  # each near its own row


def test_audio_queries_are_distinct_one_second_16k_tones() -> None:
    from bridge.encode.media import decode_audio

    wavs = audio_queries(3)
    assert len(set(wavs)) == 3
    for wav in wavs:
        wave, rate = decode_audio(wav)
        assert rate == 16_000 and len(wave) == 16_000


def test_the_stand_in_tower_is_the_same_every_build(tmp_path: Path) -> None:
    """Seeded: benchmark numbers from two runs time the same model."""

    def weights(folder: Path) -> str:
        return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    assert weights(build_clip(tmp_path / "a", 8)) == weights(build_clip(tmp_path / "b", 8))


def test_synthetic_service_stores_the_items_under_stand_ins_of_that_width(
    synthetic: tuple[ServiceConfig, np.ndarray],
) -> None:
    from bridge.encode.encoders import load_encoder
    from bridge.service.facade import BridgeService
    from bridge.types import SearchQuery

    config, images = synthetic
    clip = load_encoder("clip", config.clip_model, "cpu")
    assert clip.dim == images.shape[1] == 16
    assert clip.encode_text(["a photo"]).shape == (1, 16)
    service = BridgeService.open(config)
    try:
        hits = service.search(SearchQuery("image", vector=images[7].tolist(), space="clip", k=3))
        assert hits.results[0].metadata["n"] == 7  # the stored row answers for itself
        assert service.catalog.native("image").ntotal == len(images)
    finally:
        service.close()
