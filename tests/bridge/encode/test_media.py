"""bridge.encode.media: sniffing, image/audio decoding, error classes and messages, resampling."""

from __future__ import annotations

import io
import struct
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from media_factory import make_audio_bytes, make_image_bytes, make_wav_bytes, sine_wave
from PIL import Image

from bridge.encode import media
from bridge.encode.media import (
    DECODE_MIN_SIDE,
    decode_audio,
    decode_image,
    read_media_file,
    resample,
    sniff_modality,
)
from bridge.errors import (
    BridgeError,
    InvalidInputError,
    MediaDecodeError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)

IMAGE_FORMATS = ["PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"]
AUDIO_FORMATS = ["WAV", "FLAC", "OGG"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but carries (almost) no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# -- sniffing -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_sniff_images_by_content(fmt: str) -> None:
    assert sniff_modality(make_image_bytes(fmt=fmt)) == "image"
    # content wins over a misleading name and MIME type
    assert sniff_modality(make_image_bytes(fmt=fmt), "x.wav", "audio/wav") == "image"


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_sniff_audio_by_content(fmt: str) -> None:
    data = make_audio_bytes(0.2, 16_000, fmt=fmt)
    assert sniff_modality(data) == "audio"
    assert sniff_modality(data, "x.png", "image/png") == "audio"


def test_sniff_falls_back_to_claims_then_rejects_unknown() -> None:
    garbage = b"just some text, not media"
    assert sniff_modality(garbage, content_type="image/png; charset=x") == "image"
    assert sniff_modality(garbage, filename="clip.FLAC") == "audio"
    with pytest.raises(UnsupportedMediaError, match="notes.txt: not a supported"):
        sniff_modality(garbage, filename="notes.txt", content_type="text/plain")
    with pytest.raises(UnsupportedMediaError, match="empty"):
        sniff_modality(b"")


# -- images -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", IMAGE_FORMATS)
def test_decode_image_formats_to_rgb(fmt: str) -> None:
    image = decode_image(make_image_bytes(37, 21, color=(200, 30, 10), fmt=fmt), name=f"a.{fmt}")
    assert image.mode == "RGB"
    assert image.size == (37, 21)
    r, g, b = image.getpixel((5, 5))  # type: ignore[misc]
    assert abs(r - 200) < 12 and abs(g - 30) < 12 and abs(b - 10) < 12


def test_decode_image_grayscale_and_alpha() -> None:
    gray = decode_image(make_image_bytes(8, 8, color=(90, 90, 90), mode="L"))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (90, 90, 90)
    transparent = Image.new("RGBA", (6, 6), (10, 20, 30, 0))
    buffer = io.BytesIO()
    transparent.save(buffer, format="PNG")
    flattened = decode_image(buffer.getvalue())
    assert flattened.getpixel((3, 3)) == (255, 255, 255)  # flattened on white


def test_decode_gif_takes_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    image = decode_image(buffer.getvalue(), "anim.gif")
    r, g, b = image.getpixel((5, 5))  # type: ignore[misc]
    assert r > 200 and b < 50


def test_decode_image_errors_name_file_and_problem(make_wav_bytes: Callable[..., bytes]) -> None:
    png = make_image_bytes(fmt="PNG")
    with pytest.raises(UnsupportedMediaError, match="notes.txt: not a supported image"):
        decode_image(b"hello, I am a text file\n", "notes.txt")
    with pytest.raises(MediaDecodeError, match=r"photo.png: named as image \(.png\)"):
        decode_image(b"hello, I am a text file\n", "photo.png")
    with pytest.raises(MediaDecodeError, match="cut.png: corrupt or truncated PNG"):
        decode_image(png[: len(png) // 2], "cut.png")
    with pytest.raises(MediaDecodeError, match="zero.png: empty file"):
        decode_image(b"", "zero.png")
    with pytest.raises(UnsupportedMediaError, match="voice.wav: is audio"):
        decode_image(make_wav_bytes(0.1, 8000, 300), "voice.wav")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("fmt", "mode", "size"),
    [
        ("PNG", "RGBA", (4300, 2200)),  # alpha: composited after the reduction
        ("PNG", "P", (2100, 3100)),  # palette: converted, then reduced
        ("JPEG", "RGB", (4200, 2400)),  # decoded at a quarter or half scale (draft)
    ],
)
def test_big_images_are_reduced_to_what_encoders_need(
    fmt: str, mode: str, size: tuple[int, int]
) -> None:
    """Shorter side kept >= DECODE_MIN_SIDE, aspect and content kept (the memory and time
    it saves: `mbridge bench image-decode`)."""
    width, height = size
    image = Image.new("RGB", size, (200, 0, 0))
    image.paste((0, 0, 200), (width // 2, 0, width, height))  # right half blue
    buf = io.BytesIO()
    image.convert(mode).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    out = decode_image(buf.getvalue())
    assert out.mode == "RGB"
    assert DECODE_MIN_SIDE <= min(out.size) < min(size) / 1.9
    assert out.width / out.height == pytest.approx(width / height, rel=0.01)
    pixels = np.asarray(out).astype(int)
    left, right = pixels[:, : out.width // 4], pixels[:, -out.width // 4 :]
    assert left[..., 0].mean() > 150 and left[..., 2].mean() < 50
    assert right[..., 2].mean() > 150 and right[..., 0].mean() < 50


def test_decode_image_refuses_decompression_bombs() -> None:
    bomb = _png_header_only(30_000, 30_000)  # 900 M pixels: over 2x Pillow's limit
    with pytest.raises(PayloadTooLargeError, match="bomb.png: image is too large"):
        decode_image(bomb, "bomb.png")
    moderate = _png_header_only(10_000, 10_000)  # 100 M pixels: over our default limit
    with pytest.raises(PayloadTooLargeError, match="over the limit of 89478485"):
        decode_image(moderate, "big.png")
    with pytest.raises(PayloadTooLargeError, match="48x40 = 1920 pixels"):
        decode_image(make_image_bytes(48, 40), "small.png", max_pixels=1000)


# -- audio -------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_decode_audio_formats(fmt: str) -> None:
    wave, rate = decode_audio(make_audio_bytes(0.5, 22_050, 440.0, fmt=fmt), f"tone.{fmt}")
    assert rate == 22_050
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.shape[0] - 11_025) <= (0 if fmt != "OGG" else 64)
    if fmt != "OGG":  # lossless: same samples up to 16-bit quantisation
        np.testing.assert_allclose(wave, sine_wave(0.5, 22_050, 440.0), atol=1e-4)
    spectrum = np.abs(np.fft.rfft(wave))
    peak_hz = np.argmax(spectrum) * rate / wave.shape[0]
    assert abs(peak_hz - 440.0) < 5.0


def test_stereo_is_mixed_to_mono(make_audio_bytes: Callable[..., bytes]) -> None:
    data = make_audio_bytes(0.25, 16_000, 300.0, channels=2)
    stereo, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    assert stereo.shape[1] == 2
    wave, rate = decode_audio(data, "stereo.wav")
    assert rate == 16_000 and wave.shape == (stereo.shape[0],)
    np.testing.assert_allclose(wave, stereo.mean(axis=1), atol=1e-6)
    # channel amplitudes 0.5 and 0.25 -> the mix peaks near 0.375, unlike either channel
    assert 0.36 < float(np.abs(wave).max()) < 0.39


def test_decode_audio_errors_name_file_and_problem(make_wav_bytes: Callable[..., bytes]) -> None:
    wav = make_wav_bytes(0.2, 8000, 300)
    with pytest.raises(MediaDecodeError, match="cut.wav: corrupt or truncated WAV audio"):
        decode_audio(wav[:30], "cut.wav")
    with pytest.raises(MediaDecodeError, match="fake.wav: named as audio"):
        decode_audio(b"\x00\x01garbage" * 50, "fake.wav")
    with pytest.raises(UnsupportedMediaError, match="blob: not a supported audio format"):
        decode_audio(b"\x00\x01garbage" * 50, "blob")
    with pytest.raises(MediaDecodeError, match="zero.wav: empty file"):
        decode_audio(b"", "zero.wav")
    with pytest.raises(UnsupportedMediaError, match="pic.png: is an image"):
        decode_audio(make_image_bytes(fmt="PNG"), "pic.png")


@pytest.mark.parametrize("rate", [1, 999, 768_001, 2**31 - 1])
def test_decode_audio_rejects_sample_rates_nothing_records_at(rate: int) -> None:
    """2^31 - 1 Hz decoded, then resampled to nothing: the encoder said "empty waveform"."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros(64, np.float32), 8000, format="WAV", subtype="PCM_16")
    wav = bytearray(buf.getvalue())
    struct.pack_into("<II", wav, 24, rate, rate * 2)  # the fmt chunk's rate and byte rate
    with pytest.raises(MediaDecodeError, match=f"odd.wav: sample rate {rate} Hz is outside"):
        decode_audio(bytes(wav), "odd.wav")
    assert decode_audio(buf.getvalue(), "ok.wav")[1] == 8000


def test_decode_audio_rejects_empty_and_non_finite_samples() -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(0, dtype=np.float32), 8000, format="WAV", subtype="PCM_16")
    with pytest.raises(MediaDecodeError, match="silent.wav: audio contains no samples"):
        decode_audio(buffer.getvalue(), "silent.wav")
    samples = np.zeros(100, dtype=np.float32)
    samples[10] = np.nan
    buffer = io.BytesIO()
    sf.write(buffer, samples, 8000, format="WAV", subtype="FLOAT")
    with pytest.raises(MediaDecodeError, match="nan.wav: audio contains NaN"):
        decode_audio(buffer.getvalue(), "nan.wav")


def test_truncated_wav_data_is_refused(make_wav_bytes: Callable[..., bytes]) -> None:
    """A WAV cut inside its sample data is refused (its data chunk declares more than is
    there: a cut-off upload, issue 18's hostile corpus); a streaming writer's placeholder
    size (0xFFFFFFFF) is not a cut and decodes what is there."""
    wav = make_wav_bytes(1.0, 8000, 300)
    with pytest.raises(MediaDecodeError, match="half.wav: truncated WAV.* 16000 bytes.* 8000"):
        decode_audio(wav[: 44 + 2 * 4000], "half.wav")
    streamed = wav[:40] + b"\xff\xff\xff\xff" + wav[44 : 44 + 2 * 4000]
    wave, rate = decode_audio(streamed, "streamed.wav")
    assert rate == 8000 and wave.shape == (4000,)


def test_audio_duration_limit(make_wav_bytes: Callable[..., bytes]) -> None:
    wav = make_wav_bytes(3.0, 8000, 300)
    with pytest.raises(PayloadTooLargeError, match=r"long.wav: audio is 3.00 s long, over .* 2 s"):
        decode_audio(wav, "long.wav", max_duration_s=2.0)
    wave, _ = decode_audio(wav, "long.wav", max_duration_s=3.0)
    assert wave.shape == (24_000,)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("seed", range(3))
def test_arbitrary_bytes_only_raise_domain_errors(seed: int) -> None:
    """Mutated, truncated and random payloads never crash the decoders."""
    rng = np.random.default_rng(seed)
    seeds = [make_audio_bytes(0.1, 8000, fmt=f) for f in AUDIO_FORMATS] + [
        make_image_bytes(16, 16, fmt=f) for f in IMAGE_FORMATS
    ]
    outcomes: Counter[str] = Counter()
    for i in range(120):
        base = seeds[i % len(seeds)]
        if i % 3 == 0:
            data = base[: int(rng.integers(0, len(base)))]
        elif i % 3 == 1:
            mutated = bytearray(base)
            for _ in range(int(rng.integers(1, 16))):
                mutated[int(rng.integers(0, len(mutated)))] = int(rng.integers(0, 256))
            data = bytes(mutated)
        else:
            data = base[:12] + rng.bytes(int(rng.integers(0, 600)))
        for decode in (decode_image, decode_audio):
            try:
                decode(data, "fuzz")  # type: ignore[operator]
                outcomes["decoded"] += 1
            except BridgeError as exc:  # anything else propagates and fails the test
                outcomes[type(exc).__name__] += 1
    # the corpus exercises both paths: some payloads survive, others are rejected
    assert outcomes["decoded"] > 0 and outcomes["MediaDecodeError"] > 0


# -- resampling ----------------------------------------------------------------------------
def test_resample_rate_and_length_keep_the_tone() -> None:
    wave = sine_wave(1.0, 8000, 440.0)
    up = resample(wave, 8000, 48_000)
    assert up.dtype == np.float32 and up.shape == (48_000,)
    peak_hz = np.argmax(np.abs(np.fft.rfft(up))) * 48_000 / up.shape[0]
    assert abs(peak_hz - 440.0) < 2.0
    np.testing.assert_allclose(up[::6][100:-100], wave[100:-100], atol=2e-2)
    assert resample(sine_wave(0.5, 44_100), 44_100, 16_000).shape == (8000,)


def test_resample_filters_aliasing() -> None:
    """A 12 kHz tone cannot exist at 16 kHz: a real resampler removes it (naive decimation
    would fold it down to 4 kHz at full strength)."""
    high = sine_wave(1.0, 48_000, 12_000.0, amplitude=0.5)
    down = resample(high, 48_000, 16_000)
    assert down.shape == (16_000,)
    assert float(np.sqrt(np.mean(down[200:-200] ** 2))) < 0.01
    naive = high[::3]
    assert float(np.sqrt(np.mean(naive**2))) > 0.3


def test_resample_identity_and_validation() -> None:
    wave = np.arange(10, dtype=np.float64)
    same = resample(wave, 16_000, 16_000)
    assert same.dtype == np.float32 and np.array_equal(same, wave.astype(np.float32))
    with pytest.raises(InvalidInputError, match="1-D"):
        resample(np.zeros((2, 10)), 8000, 16_000)
    with pytest.raises(InvalidInputError, match="positive"):
        resample(wave, 0, 16_000)


# -- files -------------------------------------------------------------------------------
def test_read_media_file(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(make_wav_bytes(0.1, 8000))
    assert read_media_file(path) == path.read_bytes()
    with pytest.raises(NotFoundError, match="missing.wav: file not found"):
        read_media_file(tmp_path / "missing.wav")
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_media_file(tmp_path)
    with pytest.raises(PayloadTooLargeError, match="over the limit of 10"):
        read_media_file(path, max_bytes=10)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_survives_the_reduction_of_big_images(fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buf = io.BytesIO()
    Image.new("RGB", (4000, 2400), (200, 0, 0)).save(buf, fmt, exif=exif.tobytes())
    out = decode_image(buf.getvalue())
    assert out.height > out.width and min(out.size) >= DECODE_MIN_SIDE


@pytest.mark.parametrize(
    ("head", "modality", "expected"),
    [
        (b"RF64\xff\xff\xff\xffWAVEds64", "audio", "audio/wav"),
        (b"RIFX\x00\x00\x00\x24WAVEfmt ", "audio", "audio/wav"),
        (b"\xff\xfb\x90\x64" + bytes(12), "audio", "audio/mpeg"),  # MP3 frame, no ID3 tag
        (b"ID3\x04\x00\x00" + bytes(10), "audio", "audio/mpeg"),
        (b"\x89PNG\r\n\x1a\n" + bytes(8), "image", "image/png"),
    ],
)
def test_content_type_comes_from_the_decoders_own_signatures(
    head: bytes, modality: str, expected: str
) -> None:
    """One signature table: every format the decoder accepts gets its content type (the blob
    store used to record RF64/RIFX WAV and MP3 without an ID3 tag as octet-stream)."""
    assert media.sniff_content_type(head, modality, None) == expected  # type: ignore[arg-type]


def test_content_type_falls_back_to_a_matching_claim_only() -> None:
    assert media.sniff_content_type(b"????", "audio", "audio/x-custom; q=1") == "audio/x-custom"
    assert media.sniff_content_type(b"????", "audio", "image/png") == "application/octet-stream"
