"""bridge.encode.encoders on tiny CLIP/CLAP models built by the fixtures, loaded through
from_pretrained with HF_HUB_OFFLINE=1 (conftest sets it for the session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from media_factory import make_image, sine_wave
from PIL import Image

from bridge.encode.encoders import CLAPEncoder, CLIPEncoder, Encoder, load_encoder
from bridge.encode.media import decode_audio, read_media_file, resample
from bridge.errors import InvalidInputError, ModelLoadError, UnsupportedMediaError

REPO_ROOT = Path(__file__).resolve().parents[3]
CAPTIONS = ["a dog barks", "rain on a tin roof", "a red square", "x", "two spoken digits"]


def _images(n: int = 5) -> list[Image.Image]:
    return [make_image(40 + 3 * i, 30 + i, seed=i) for i in range(n)]


def _waves(rate: int = 16_000) -> list[np.ndarray]:
    return [sine_wave(s, rate, f) for s, f in ((0.3, 220.0), (1.0, 440.0), (0.05, 880.0))]


def _assert_unit_rows(x: np.ndarray, n: int, d: int) -> None:
    assert x.shape == (n, d)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


# -- loading ---------------------------------------------------------------------------
def test_offline_mode_is_on_for_tests() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


@pytest.mark.parametrize(
    ("kind", "cls", "dim", "modalities", "rate"),
    [
        ("clip", CLIPEncoder, tiny_models.TINY_CLIP_DIM, ("text", "image"), None),
        ("clap", CLAPEncoder, tiny_models.TINY_CLAP_DIM, ("text", "audio"), 48_000),
    ],
)
def test_loaded_encoder_attributes(
    request: pytest.FixtureRequest,
    kind: str,
    cls: type,
    dim: int,
    modalities: tuple[str, ...],
    rate: int | None,
) -> None:
    enc = request.getfixturevalue(f"tiny_{kind}_encoder")
    folder = request.getfixturevalue(f"tiny_{kind}_dir")
    assert isinstance(enc, cls)
    assert (enc.kind, enc.model_id, enc.device) == (kind, str(folder), "cpu")
    assert enc.dim == dim and enc.describe()["dim"] == dim
    assert enc.modalities == modalities
    assert enc.sample_rate == rate
    assert rate is None or rate == tiny_models.TINY_CLAP_SAMPLE_RATE
    assert not enc.model.training


def test_load_errors_name_the_model(tmp_path: Path, tiny_clap_dir: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelLoadError, match=f"model folder not found: {missing}"):
        load_encoder("clip", str(missing), device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_encoder("clap", str(tmp_path / "empty"), device="cpu")
    with pytest.raises(ModelLoadError, match="holds a 'clap' model, expected 'clip'"):
        load_encoder("clip", str(tiny_clap_dir), device="cpu")
    with pytest.raises(ModelLoadError, match="'openai/clip-vit-base-patch32'"):
        load_encoder("clip", "openai/clip-vit-base-patch32", device="cpu")  # offline, not cached
    with pytest.raises(InvalidInputError, match="encoder kind must be one of"):
        load_encoder("wav2vec", str(tiny_clap_dir), device="cpu")


def test_corrupt_weights_raise_model_load_error(tmp_path: Path, tiny_clip_dir: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in tiny_clip_dir.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="cannot load clip encoder from"):
        load_encoder("clip", str(broken), device="cpu")


def test_tiny_models_are_seeded(tmp_path: Path, tiny_clip_encoder: Encoder) -> None:
    """A second build gives the same weights, hence the same embeddings."""
    other = load_encoder("clip", str(tiny_models.build_tiny_clip(tmp_path / "again")), "cpu")
    np.testing.assert_array_equal(
        other.encode_text(CAPTIONS), tiny_clip_encoder.encode_text(CAPTIONS)
    )
    config = json.loads((tmp_path / "again" / "config.json").read_text())
    assert config["model_type"] == "clip"


def test_import_bridge_does_not_import_transformers() -> None:
    code = (
        "import sys, bridge, bridge.encode.encoders, bridge.encode.media, bridge.encode.embed; "
        "bad = [m for m in ('transformers', 'torch', 'PIL', 'soundfile') if m in sys.modules]; "
        "print(', '.join(bad)); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()


# -- outputs ---------------------------------------------------------------------------
def test_clip_text_and_image_outputs(tiny_clip_encoder: Encoder) -> None:
    text = tiny_clip_encoder.encode_text(CAPTIONS)
    image = tiny_clip_encoder.encode_image(_images())
    _assert_unit_rows(text, len(CAPTIONS), tiny_models.TINY_CLIP_DIM)
    _assert_unit_rows(image, 5, tiny_models.TINY_CLIP_DIM)
    # distinct inputs give distinct embeddings (no collapsed or constant output)
    assert np.abs(text[0] - text[1]).max() > 1e-3
    assert np.abs(image[0] - image[1]).max() > 1e-4


def test_clap_text_and_audio_outputs(tiny_clap_encoder: Encoder) -> None:
    text = tiny_clap_encoder.encode_text(CAPTIONS)
    audio = tiny_clap_encoder.encode_audio(_waves(), sample_rate=16_000)
    _assert_unit_rows(text, len(CAPTIONS), tiny_models.TINY_CLAP_DIM)
    _assert_unit_rows(audio, 3, tiny_models.TINY_CLAP_DIM)
    assert np.abs(text[0] - text[1]).max() > 1e-3
    assert np.abs(audio[0] - audio[1]).max() > 1e-4


def test_empty_input_gives_zero_rows(tiny_clip_encoder: Encoder) -> None:
    assert tiny_clip_encoder.encode_text([]).shape == (0, tiny_models.TINY_CLIP_DIM)


def test_encoding_is_deterministic(tiny_clip_encoder: Encoder, tiny_clap_encoder: Encoder) -> None:
    images = _images()
    np.testing.assert_array_equal(
        tiny_clip_encoder.encode_image(images), tiny_clip_encoder.encode_image(images)
    )
    long_clip = [sine_wave(3.0, 16_000, 300.0) + sine_wave(3.0, 16_000, 1300.0)]
    first = tiny_clap_encoder.encode_audio(long_clip, 16_000)
    for _ in range(3):  # rand_trunc would pick a random window each call
        np.testing.assert_array_equal(tiny_clap_encoder.encode_audio(long_clip, 16_000), first)


def test_batching_equals_unbatched(tiny_clip_encoder: Encoder, tiny_clap_encoder: Encoder) -> None:
    for enc in (tiny_clip_encoder, tiny_clap_encoder):
        whole = enc.encode_text(CAPTIONS, batch_size=64)
        single = np.concatenate([enc.encode_text([c]) for c in CAPTIONS])
        np.testing.assert_allclose(enc.encode_text(CAPTIONS, batch_size=2), whole, atol=1e-5)
        np.testing.assert_allclose(single, whole, atol=1e-5)
    images = _images()
    np.testing.assert_allclose(
        tiny_clip_encoder.encode_image(images, batch_size=2),
        tiny_clip_encoder.encode_image(images, batch_size=64),
        atol=1e-5,
    )
    waves = _waves()
    np.testing.assert_allclose(
        tiny_clap_encoder.encode_audio(waves, 16_000, batch_size=1),
        tiny_clap_encoder.encode_audio(waves, 16_000, batch_size=16),
        atol=1e-5,
    )


def test_clap_resamples_to_model_rate(tiny_clap_encoder: Encoder) -> None:
    """8 kHz input equals the same clip resampled to 48 kHz by hand; long clips use the
    first window (max_length_s = 1 s for the tiny model)."""
    wave_8k = sine_wave(0.6, 8000, 500.0)
    at_8k = tiny_clap_encoder.encode_audio([wave_8k], sample_rate=8000)
    at_48k = tiny_clap_encoder.encode_audio([resample(wave_8k, 8000, 48_000)], 48_000)
    np.testing.assert_allclose(at_8k, at_48k, atol=1e-6)
    long_48k = np.concatenate([sine_wave(1.0, 48_000, 500.0), sine_wave(2.0, 48_000, 3000.0)])
    np.testing.assert_allclose(
        tiny_clap_encoder.encode_audio([long_48k], 48_000),
        tiny_clap_encoder.encode_audio([long_48k[:48_000]], 48_000),
        atol=1e-6,
    )


def test_concurrent_calls_match_sequential(
    tiny_clip_encoder: Encoder, tiny_clap_encoder: Encoder
) -> None:
    expected_text = tiny_clip_encoder.encode_text(CAPTIONS)
    expected_audio = tiny_clap_encoder.encode_audio(_waves(), 16_000)
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = [pool.submit(tiny_clip_encoder.encode_text, CAPTIONS) for _ in range(6)]
        audios = [pool.submit(tiny_clap_encoder.encode_audio, _waves(), 16_000) for _ in range(4)]
        for future in texts:
            np.testing.assert_allclose(future.result(), expected_text, atol=1e-6)
        for future in audios:
            np.testing.assert_allclose(future.result(), expected_audio, atol=1e-6)


# -- errors ----------------------------------------------------------------------------
def test_wrong_modality_for_tower(tiny_clip_encoder: Encoder, tiny_clap_encoder: Encoder) -> None:
    with pytest.raises(UnsupportedMediaError, match="has no audio tower"):
        tiny_clip_encoder.encode_audio(_waves(), 16_000)
    with pytest.raises(UnsupportedMediaError, match="has no image tower"):
        tiny_clap_encoder.encode_image(_images(1))


def test_bad_arguments(tiny_clip_encoder: Encoder, tiny_clap_encoder: Encoder) -> None:
    with pytest.raises(InvalidInputError, match="texts: expected a list, got str"):
        tiny_clip_encoder.encode_text("a single string")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"texts\[1\]: expected str"):
        tiny_clip_encoder.encode_text(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"images\[0\]: expected Image"):
        tiny_clip_encoder.encode_image([np.zeros((4, 4, 3))])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="batch_size must be >= 1"):
        tiny_clip_encoder.encode_text(["a"], batch_size=0)
    with pytest.raises(InvalidInputError, match=r"waveforms\[0\]: expected a 1-D"):
        tiny_clap_encoder.encode_audio([np.zeros((2, 100), np.float32)], 16_000)
    with pytest.raises(InvalidInputError, match=r"waveforms\[0\]: empty"):
        tiny_clap_encoder.encode_audio([np.zeros(0, np.float32)], 16_000)
    with pytest.raises(InvalidInputError, match="finite"):
        tiny_clap_encoder.encode_audio([np.full(100, np.nan, np.float32)], 16_000)
    with pytest.raises(InvalidInputError, match="sample_rate must be an integer"):
        tiny_clap_encoder.encode_audio(_waves(), 16_000.0)  # type: ignore[arg-type]


# -- real data and GPU ---------------------------------------------------------------------
def test_real_spoken_digit(tiny_clap_encoder: Encoder, fsdd_dir: Path) -> None:
    """A real 8 kHz FSDD recording decodes and encodes (skips without ../shared)."""
    path = fsdd_dir / "7_george_0.wav"
    wave, rate = decode_audio(read_media_file(path), name=str(path))
    assert rate == 8000 and wave.ndim == 1 and wave.shape[0] > 800
    _assert_unit_rows(tiny_clap_encoder.encode_audio([wave], rate), 1, tiny_models.TINY_CLAP_DIM)


@pytest.mark.gpu
def test_cuda_path_matches_cpu(
    tiny_clip_dir: Path, tiny_clap_dir: Path, tiny_clip_encoder: Encoder
) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    clip = load_encoder("clip", str(tiny_clip_dir), device="auto")
    clap = load_encoder("clap", str(tiny_clap_dir), device="cuda")
    assert clip.device == "cuda" and clap.device == "cuda"
    assert next(clip.model.parameters()).device.type == "cuda"
    np.testing.assert_allclose(
        clip.encode_text(CAPTIONS), tiny_clip_encoder.encode_text(CAPTIONS), atol=1e-4
    )
    _assert_unit_rows(clip.encode_image(_images()), 5, tiny_models.TINY_CLIP_DIM)
    _assert_unit_rows(clap.encode_audio(_waves(), 16_000), 3, tiny_models.TINY_CLAP_DIM)
