"""Synthetic media for tests: encoded WAV/FLAC/OGG audio and PNG/JPEG/... images as bytes.

Everything is generated in memory and deterministic (sine tones, seeded noise, solid or
gradient images), so tests need no data files. conftest.py exposes these functions as
fixtures (`make_wav_bytes`, `make_audio_bytes`, `make_png_bytes`, `make_image_bytes`); tests
may also import them directly (`from media_factory import make_wav_bytes`).
"""

from __future__ import annotations

import io

import numpy as np


def sine_wave(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """A mono float32 sine tone of `seconds` at `rate` Hz."""
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    return (amplitude * np.sin(2.0 * np.pi * freq * t)).astype(np.float32)


def make_audio_bytes(
    seconds: float = 1.0,
    rate: int = 16_000,
    freq: float = 440.0,
    *,
    channels: int = 1,
    fmt: str = "WAV",
    subtype: str | None = None,
    amplitude: float = 0.5,
) -> bytes:
    """Encode a sine tone with soundfile. fmt: "WAV", "FLAC" or "OGG" (Vorbis).

    With channels > 1 channel c carries the tone at amplitude `amplitude / (c + 1)`, so a
    mono mix is distinguishable from any single channel.
    """
    import soundfile as sf

    mono = sine_wave(seconds, rate, freq, amplitude)
    if channels == 1:
        data: np.ndarray = mono
    else:
        data = np.stack([mono / (c + 1) for c in range(channels)], axis=1)
    if subtype is None:
        subtype = {"WAV": "PCM_16", "FLAC": "PCM_16", "OGG": "VORBIS"}[fmt.upper()]
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def make_wav_bytes(
    seconds: float = 1.0, rate: int = 16_000, freq: float = 440.0, channels: int = 1
) -> bytes:
    """A 16-bit PCM WAV file (bytes) holding a sine tone."""
    return make_audio_bytes(seconds, rate, freq, channels=channels, fmt="WAV")


def make_image(
    width: int = 48, height: int = 40, color: tuple[int, int, int] | None = None, seed: int = 0
):  # -> PIL.Image.Image (untyped to keep Pillow out of import time)
    """An RGB image: a solid `color`, or (color=None) seeded noise over a gradient."""
    from PIL import Image

    if color is not None:
        return Image.new("RGB", (width, height), color)
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, width, dtype=np.float64)[None, :, None]
    noise = rng.integers(0, 64, size=(height, width, 3))
    pixels = np.clip(gradient + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def make_image_bytes(
    width: int = 48,
    height: int = 40,
    color: tuple[int, int, int] | None = None,
    fmt: str = "PNG",
    seed: int = 0,
    mode: str = "RGB",
) -> bytes:
    """Encode an image with Pillow. fmt: PNG, JPEG, WEBP, BMP, GIF. mode: RGB, L, RGBA, P..."""
    image = make_image(width, height, color, seed)
    if mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def make_png_bytes(
    width: int = 48, height: int = 40, color: tuple[int, int, int] | None = None, seed: int = 0
) -> bytes:
    """A PNG file (bytes): solid `color`, or seeded noise when color is None."""
    return make_image_bytes(width, height, color, "PNG", seed)
