"""Property tests of the media decoders (Hypothesis): any bytes, under any name, either decode
or raise one of the errors the API maps to a 4xx (MediaDecodeError 422, UnsupportedMediaError
415, PayloadTooLargeError 413), with a message that names the file. Never another exception.

Inputs: arbitrary bytes; bytes behind each format's signature (so that the format's parser,
not the sniffer, meets them); and valid files of every format with bytes overwritten, cut
or appended. Derandomised with a bounded number of examples, so runs are repeatable and
take a few seconds.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_factory import make_audio_bytes, make_image_bytes
from PIL import Image

from bridge.encode.media import MIN_IMAGE_SIDE, decode_audio, decode_image, sniff_modality
from bridge.errors import MediaDecodeError, PayloadTooLargeError, UnsupportedMediaError

FOUR_XX = (MediaDecodeError, UnsupportedMediaError, PayloadTooLargeError)
PROPERTY = settings(
    derandomize=True,
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
NAMES = st.sampled_from(["upload", "x.png", "x.jpg", "x.gif", "x.wav", "x.flac", "x.mp3", "x.bin"])
SIGNATURES = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WAVE",
    b"RF64\xff\xff\xff\xffWAVE",
    b"fLaC",
    b"OggS",
    b"FORM\x00\x00\x00\x00AIFF",
    b"ID3",
    b"\xff\xfb",
]
VALID = [make_image_bytes(16, 12, fmt=f, seed=2) for f in ("PNG", "JPEG", "WEBP", "BMP", "GIF")]
VALID += [make_image_bytes(16, 12, fmt="TIFF", seed=2)]
VALID += [make_audio_bytes(0.05, 8_000, fmt=f) for f in ("WAV", "FLAC", "OGG")]
VALID += [make_audio_bytes(0.05, 8_000, fmt="AIFF", subtype="PCM_16")]
VALID += [make_audio_bytes(0.2, 8_000, fmt="MP3", subtype="MPEG_LAYER_III")]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid file with a few bytes overwritten, then maybe cut short or extended."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data) + draw(st.binary(max_size=64))


PAYLOADS = st.one_of(
    st.binary(max_size=512),
    st.builds(lambda sig, rest: sig + rest, st.sampled_from(SIGNATURES), st.binary(max_size=512)),
    mutated(),
)


def _decode(data: bytes, name: str) -> object:
    """What the service does with an upload: sniff, then decode as that modality."""
    if sniff_modality(data, name) == "image":
        return decode_image(data, name)
    return decode_audio(data, name, max_duration_s=5.0)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's warnings on odd headers
@PROPERTY
@given(data=PAYLOADS, name=NAMES)
def test_any_bytes_decode_or_raise_a_4xx_error(data: bytes, name: str) -> None:
    try:
        result = _decode(data, name)
    except FOUR_XX as exc:
        assert str(exc).startswith(name), str(exc)  # the message names the file
        return
    if isinstance(result, Image.Image):
        assert result.mode == "RGB" and min(result.size) >= MIN_IMAGE_SIDE
    else:
        wave, rate = result  # type: ignore[misc]
        assert wave.dtype == np.float32 and wave.ndim == 1 and wave.size > 0
        assert np.isfinite(wave).all() and wave.size / rate <= 5.0


@pytest.mark.filterwarnings("ignore::UserWarning")
@PROPERTY
@given(data=PAYLOADS, name=NAMES)
def test_each_decoder_alone_raises_only_4xx_errors(data: bytes, name: str) -> None:
    """Called directly (as `mbridge embed` does), on bytes of either modality."""
    for decode in (lambda: decode_image(data, name), lambda: decode_audio(data, name, 5.0)):
        with contextlib.suppress(FOUR_XX):
            decode()


@PROPERTY
@given(data=st.binary(max_size=64), name=st.text(max_size=20), ctype=st.text(max_size=20))
def test_sniffing_any_claim_is_a_modality_or_415(data: bytes, name: str, ctype: str) -> None:
    with contextlib.suppress(UnsupportedMediaError):
        assert sniff_modality(data, name or None, ctype or None) in ("image", "audio")
