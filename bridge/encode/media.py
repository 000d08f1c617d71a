"""Media decoding: bytes -> RGB image or mono float32 waveform, with domain errors.

The first stage of the search path (architecture: "decode (bridge/media)"). Every function
is robust to arbitrary bytes: the only exceptions it raises on bad content are

- `UnsupportedMediaError` (415): not an image or audio format we read (unknown bytes with no
  claim to a supported type, or the other modality);
- `MediaDecodeError` (422): the bytes or their name claim a supported format, but cannot be
  decoded (truncated, corrupt, empty, no samples, non-finite samples);
- `PayloadTooLargeError` (413): an image over the pixel limit (decompression bombs) or audio
  over `max_duration_s`.

Each message names the file and the problem. Images: PNG, JPEG, WEBP, BMP, GIF (first
frame) and TIFF through Pillow, EXIF-rotated, alpha flattened on white, converted to RGB.
Audio: whatever libsndfile reads (WAV, FLAC, OGG/Vorbis, AIFF, MP3...), mixed to mono
float32 at its native rate; `resample` converts rates with soxr (a real polyphase/sinc
resampler, not interpolation).
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from bridge.errors import (
    InvalidInputError,
    MediaDecodeError,
    NotFoundError,
    PayloadTooLargeError,
    UnsupportedMediaError,
)

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

Modality = Literal["image", "audio"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".mp3"})
# Pillow formats we open; restricting the list keeps weak-signature formats (TGA, ...) from
# "decoding" random bytes into an image.
PILLOW_FORMATS = ("PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF")
# Pillow's own default bomb limit (about 89.5 M pixels); over it we refuse before decoding.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
# Audio sample rates accepted (telephone 8 kHz and below, up to 768 kHz studio files).
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
# Decoded images are reduced so that their shorter side stays at least this long (CLIP's
# processors look at 224-336 pixels): see _shrunk.
DECODE_MIN_SIDE = 1024
# Images with a side shorter than this are refused: a 1x1 or 1xN "image" carries nothing an
# encoder can use (it is upsampled to 224 px of blur), and 1xN is the start of a stretch
# bomb (below).
MIN_IMAGE_SIDE = 4
# Longer side / shorter side beyond which the decoded image is cropped around its centre.
# CLIP's processor scales the shorter side to 224 px, then keeps the central square: an
# 8 x 2,000,000 PNG (16 M pixels, under the limit, 60 KB compressed) was scaled to
# 224 x 56 M pixels on the way (tests/app/test_hostile_media.py). The crop keeps more than
# the central square, so the embedding is the one the processor would have made.
MAX_ASPECT_RATIO = 16
# libsndfile's "length unknown" (SF_COUNT_MAX), e.g. a streamed FLAC with total_samples 0.
UNKNOWN_FRAMES = 2**63 - 1
# Signatures long enough not to occur by chance (>= 6 fixed bytes) of the other modality's
# containers, for the polyglot check (_check_polyglot).
_AUDIO_INSIDE = re.compile(
    rb"RIFF....WAVE|FORM....AIF[FC]|fLaC\x00\x00\x00\x22|OggS\x00\x02", re.DOTALL
)
_IMAGE_INSIDE = re.compile(
    rb"\x89PNG\r\n\x1a\n|\xff\xd8\xff\xe0\x00\x10JFIF\x00|\xff\xd8\xff\xe1..Exif\x00\x00"
    rb"|GIF8[79]a|RIFF....WEBPVP8",
    re.DOTALL,
)


# The one signature table (format -> content type); the blob store records these types.
CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "WAV": "audio/wav",
    "FLAC": "audio/flac",
    "OGG": "audio/ogg",
    "AIFF": "audio/aiff",
    "MP3": "audio/mpeg",
}


def _image_magic(data: bytes) -> str | None:
    """The image format named by the leading bytes, or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    return None


def _audio_magic(data: bytes) -> str | None:
    """The audio container named by the leading bytes, or None."""
    if data[:4] in (b"RIFF", b"RIFX", b"RF64") and data[8:12] == b"WAVE":
        return "WAV"
    if data.startswith(b"fLaC"):
        return "FLAC"
    if data.startswith(b"OggS"):
        return "OGG"
    if data[:4] == b"FORM" and data[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if data.startswith(b"ID3") or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "MP3"
    return None


def sniff_content_type(data: bytes, modality: Modality, claimed: str | None = None) -> str:
    """The content type of decodable `modality` bytes: from their signature (the table above),
    else the client's claim when it names the modality, else a generic one."""
    magic = _image_magic(data) if modality == "image" else _audio_magic(data)
    if magic is not None:
        return CONTENT_TYPES[magic]
    claim = (claimed or "").split(";")[0].strip().lower()
    return claim if claim.startswith(f"{modality}/") else "application/octet-stream"


def _claimed_modality(filename: str | None, content_type: str | None) -> Modality | None:
    """The modality a file name extension or MIME type claims, or None."""
    if content_type:
        major = content_type.split(";", 1)[0].strip().lower().split("/", 1)[0]
        if major == "image":
            return "image"
        if major == "audio":
            return "audio"
    if filename:
        suffix = Path(filename).suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            return "image"
        if suffix in AUDIO_EXTENSIONS:
            return "audio"
    return None


def sniff_modality(
    data: bytes, filename: str | None = None, content_type: str | None = None
) -> Modality:
    """Decide whether `data` is an image or audio: magic bytes first, then the name/MIME claim.

    Bytes with no known signature and no image/audio claim raise UnsupportedMediaError; a
    claim without a matching signature is returned as claimed (decoding will then raise
    MediaDecodeError, which says the content does not match).
    """
    label = filename or "upload"
    if _image_magic(data):
        return "image"
    if _audio_magic(data):
        return "audio"
    claimed = _claimed_modality(filename, content_type)
    if claimed is not None:
        return claimed
    if not data:
        raise UnsupportedMediaError(f"{label}: empty file (0 bytes), expected an image or audio")
    what = f" (content type {content_type!r})" if content_type else ""
    raise UnsupportedMediaError(
        f"{label}: not a supported image or audio format{what}; "
        "expected PNG, JPEG, WEBP, BMP, GIF, TIFF, WAV, FLAC, OGG, AIFF or MP3"
    )


def _reject_other_modality(data: bytes, name: str, expected: Modality) -> None:
    """Raise UnsupportedMediaError when `data` is plainly the other modality."""
    if expected == "image" and _audio_magic(data) and not _image_magic(data):
        raise UnsupportedMediaError(f"{name}: is audio ({_audio_magic(data)}), expected an image")
    if expected == "audio" and _image_magic(data) and not _audio_magic(data):
        raise UnsupportedMediaError(f"{name}: is an image ({_image_magic(data)}), expected audio")


def _unrecognised(data: bytes, name: str, expected: Modality, detail: str) -> Exception:
    """Error for bytes the decoder could not read: a decode error if they claim the type."""
    signature = _image_magic(data) if expected == "image" else _audio_magic(data)
    # The name may be a label around the file name ("file 0 (x.png)" from ingest): read the
    # extension before any closing punctuation. Path("... (x.png)").suffix was ".png)", so
    # one byte named x.png was a 415 on POST /v1/items and a 422 on POST /v1/search.
    suffix = re.search(r"\.\w+(?=\W*$)", name)
    claimed = _claimed_modality(f"x{suffix.group()}" if suffix else None, None) == expected
    if not data:
        return MediaDecodeError(f"{name}: empty file (0 bytes), expected {expected}")
    if signature:
        return MediaDecodeError(f"{name}: corrupt or truncated {signature} {expected}: {detail}")
    if claimed:
        return MediaDecodeError(
            f"{name}: named as {expected} ({suffix.group() if suffix else ''}) but could not be "
            f"decoded: {detail}"
        )
    return UnsupportedMediaError(f"{name}: not a supported {expected} format ({detail})")


def decode_image(
    data: bytes, name: str = "upload", max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode image bytes into an RGB PIL image (GIF/animated: the first frame).

    EXIF orientation is applied; transparency is flattened onto white. Images with more than
    `max_pixels` pixels raise PayloadTooLargeError before their pixels are decoded.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    _reject_other_modality(data, name, "image")
    try:
        image = Image.open(io.BytesIO(data), formats=_pillow_formats())
    except Image.DecompressionBombError as exc:
        raise PayloadTooLargeError(f"{name}: image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise _unrecognised(data, name, "image", "not an image Pillow can identify") from exc
    except Exception as exc:  # Pillow raises many types on hostile headers
        raise _unrecognised(data, name, "image", f"{type(exc).__name__}: {exc}") from exc
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise MediaDecodeError(f"{name}: image has no pixels ({width}x{height})")
        if min(width, height) < MIN_IMAGE_SIDE:
            raise MediaDecodeError(
                f"{name}: image is {width}x{height} pixels, too small to search with "
                f"(each side needs at least {MIN_IMAGE_SIDE} pixels)"
            )
        if max_pixels is not None and width * height > max_pixels:
            raise PayloadTooLargeError(
                f"{name}: image is {width}x{height} = {width * height} pixels, "
                f"over the limit of {max_pixels}"
            )
        _check_polyglot(data, name, f"{image.format or 'image'} image", _AUDIO_INSIDE)
        try:
            image.seek(0)
            if image.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that is enough
                image.draft(image.mode, _reduced_size(width, height, DECODE_MIN_SIDE))
            image.load()
            oriented = ImageOps.exif_transpose(_shrunk(_cropped(image)))
            return _to_rgb(oriented)
        except Image.DecompressionBombError as exc:
            raise PayloadTooLargeError(f"{name}: image is too large to decode ({exc})") from exc
        except Exception as exc:
            fmt = image.format or "image"
            raise MediaDecodeError(
                f"{name}: corrupt or truncated {fmt} image: {type(exc).__name__}: {exc}"
            ) from exc


def _reduced_size(width: int, height: int, min_side: int) -> tuple[int, int]:
    scale = max(1.0, min(width, height) / min_side)
    return max(1, int(width / scale)), max(1, int(height / scale))


def _shrunk(image: Image.Image) -> Image.Image:
    """``image`` box-reduced by a whole factor while its shorter side stays >= DECODE_MIN_SIDE.

    Encoders look at a few hundred pixels; a 9400 x 9400 RGBA PNG (363 KB, under the pixel
    limit) made three full-size copies on the way to RGB (`mbridge bench image-decode`,
    docs/benchmarks.md: 2.0 GiB and 4.0 s for the full decode, 0.68 GiB and 1.9 s reduced).
    Only the embedding sees the reduced image: the stored original keeps its bytes.
    """
    factor = min(image.size) // DECODE_MIN_SIDE
    if factor < 2:
        return image
    if image.mode not in ("RGB", "RGBA", "L", "LA", "I", "F"):  # P, CMYK, 1...: reduce()
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    return image.reduce(factor)


def _cropped(image: Image.Image) -> Image.Image:
    """``image`` cut around its centre to at most MAX_ASPECT_RATIO : 1 (see that constant)."""
    width, height = image.size
    keep_w, keep_h = (min(side, MAX_ASPECT_RATIO * min(width, height)) for side in (width, height))
    if (keep_w, keep_h) == (width, height):
        return image
    left, top = (width - keep_w) // 2, (height - keep_h) // 2
    return image.crop((left, top, left + keep_w, top + keep_h))


_CONTAINER_NAMES = {b"RIFF": "WAV", b"FORM": "AIFF", b"fLaC": "FLAC", b"OggS": "OGG"}
_CONTAINER_NAMES.update({b"\x89PNG": "PNG", b"GIF8": "GIF", b"\xff\xd8\xff\xe0": "JPEG"})
_CONTAINER_NAMES[b"\xff\xd8\xff\xe1"] = "JPEG"


def _check_polyglot(data: bytes, name: str, what: str, other: re.Pattern[bytes]) -> None:
    """MediaDecodeError when `data` (a decodable `what`) also carries a whole file of the other
    modality: a PNG followed by a WAV, a WAV header over JPEG bytes. Both halves decode, so
    without this the file was stored as whichever its first bytes named."""
    found = other.search(data)
    if found is None:
        return
    if other is _IMAGE_INSIDE and found.group().startswith(b"RIFF"):
        kind = "WEBP"
    else:
        kind = _CONTAINER_NAMES.get(found.group()[:4], "another format's")
    raise MediaDecodeError(
        f"{name}: a {what} that also holds {kind} data at byte {found.start()} "
        "(a polyglot file); upload the image and the audio as separate files"
    )


def _pillow_formats() -> list[str]:
    """PILLOW_FORMATS that this Pillow build can open (MPO, for one, is not in every build)."""
    from PIL import Image

    Image.init()
    return [fmt for fmt in PILLOW_FORMATS if fmt in Image.OPEN]


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of `image`; pixels with alpha are composited onto white."""
    from PIL import Image

    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def decode_audio(
    data: bytes, name: str = "upload", max_duration_s: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode audio bytes into a mono float32 waveform (mean of the channels) and its rate.

    Raises PayloadTooLargeError when the header says the clip is longer than
    `max_duration_s` (checked before the samples are decoded); a header that does not say
    (a streamed FLAC) is read no further than the limit.
    """
    import soundfile as sf

    _reject_other_modality(data, name, "audio")
    if not data:
        raise _unrecognised(data, name, "audio", "empty")
    container = _audio_magic(data)
    if container in ("WAV", "AIFF"):  # MP3, FLAC and OGG carry cover art: images are normal
        _check_polyglot(data, name, f"{container} audio file", _IMAGE_INSIDE)
        _check_sample_chunk(data, name, container)
    try:
        with sf.SoundFile(io.BytesIO(data)) as handle:
            rate = int(handle.samplerate)
            frames = int(handle.frames)
            if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                # e.g. 2^31 - 1 Hz: a few samples resampled to nothing, and the encoder's
                # "empty waveform" error no longer named the file
                raise MediaDecodeError(
                    f"{name}: sample rate {rate} Hz is outside the supported "
                    f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
                )
            known = frames != UNKNOWN_FRAMES
            if known and max_duration_s is not None and frames / rate > max_duration_s:
                raise PayloadTooLargeError(
                    f"{name}: audio is {frames / rate:.2f} s long, "
                    f"over the limit of {max_duration_s:g} s"
                )
            samples = _read_frames(handle, frames if known else None, rate, max_duration_s)
    except (MediaDecodeError, PayloadTooLargeError):
        raise
    except Exception as exc:  # libsndfile errors, struct errors on hostile headers
        raise _unrecognised(data, name, "audio", _sndfile_detail(exc)) from exc
    if samples.shape[0] == 0:
        raise MediaDecodeError(f"{name}: audio contains no samples")
    if max_duration_s is not None and samples.shape[0] / rate > max_duration_s:
        raise PayloadTooLargeError(
            f"{name}: audio is longer than the limit of {max_duration_s:g} s "
            f"(its header does not say how long; decoding stopped at the limit)"
        )
    # A header that promises more than the stream holds: an MP3 cut short (its Xing header
    # counts the whole file's frames) decoded "fine" as its first part.
    missing = frames - samples.shape[0] if known else 0
    if missing > max(2 * MP3_FRAME_SAMPLES, frames // 50):
        raise MediaDecodeError(
            f"{name}: truncated {container or 'audio'} audio: its header declares {frames} "
            f"frames, only {samples.shape[0]} could be decoded"
        )
    mono = samples.mean(axis=1, dtype=np.float32)  # (T,)
    if not np.isfinite(mono).all():
        raise MediaDecodeError(f"{name}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(mono, dtype=np.float32), rate


# Samples in one MPEG layer III frame: the slack allowed between declared and decoded length.
MP3_FRAME_SAMPLES = 1152
# Sample-chunk sizes from here up are "length unknown" placeholders of streaming writers,
# not truncation (ffmpeg writes 0xFFFFFFFF when it cannot seek back).
_PLACEHOLDER_SIZE = 0x7FFFF000
_MAX_CHUNKS = 1024  # chunks walked looking for the samples before giving up


def _read_frames(
    handle: Any, frames: int | None, rate: int, max_duration_s: float | None
) -> np.ndarray:
    """(T, C) float32 samples: the declared `frames`, or (length unknown) up to one frame past
    the duration limit, so that an unknown-length stream cannot fill memory."""
    if frames is not None:
        return np.asarray(handle.read(frames, dtype="float32", always_2d=True))
    if max_duration_s is not None:
        limit = int(max_duration_s * rate) + 1
        return np.asarray(handle.read(limit, dtype="float32", always_2d=True))
    blocks = list(handle.blocks(blocksize=1 << 16, dtype="float32", always_2d=True))
    return np.concatenate(blocks) if blocks else np.zeros((0, handle.channels), np.float32)


def _check_sample_chunk(data: bytes, name: str, container: str) -> None:
    """MediaDecodeError when a WAV's `data` (AIFF's `SSND`) chunk declares more bytes than the
    file holds: a cut-off upload. libsndfile quietly decodes the part that is there."""
    big_endian = data[:4] in (b"RIFX", b"FORM")
    if data[:4] == b"RF64":  # sizes live in the ds64 chunk; libsndfile checks those
        return
    wanted = b"data" if container == "WAV" else b"SSND"
    pos = 12
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(data):
            return
        kind = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "big" if big_endian else "little")
        if kind == wanted:
            held = len(data) - pos - 8
            if 0 < size < _PLACEHOLDER_SIZE and size > held:
                raise MediaDecodeError(
                    f"{name}: truncated {container} audio: its {wanted.decode()} chunk declares "
                    f"{size} bytes of samples, the file holds {held}"
                )
            return
        pos += 8 + size + (size & 1)


def _sndfile_detail(exc: Exception) -> str:
    """libsndfile's reason without the "Error opening <_io.BytesIO object at 0x...>: " that
    soundfile puts in front of it (a memory address in the API's error message)."""
    return f"{type(exc).__name__}: " + re.sub(r"Error opening <[^>]*>: ", "", str(exc))


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono waveform from `orig_sr` to `target_sr` Hz with soxr (HQ); float32 out.

    Output length is round(len * target_sr / orig_sr). Equal rates return a float32 copy.
    """
    wave = np.asarray(waveform)
    if wave.ndim != 1:
        raise InvalidInputError(f"resample: expected a 1-D mono waveform, got shape {wave.shape}")
    if orig_sr <= 0 or target_sr <= 0:
        raise InvalidInputError(
            f"resample: sample rates must be positive, got {orig_sr} -> {target_sr}"
        )
    wave = wave.astype(np.float32, copy=True)
    if orig_sr == target_sr or wave.size == 0:
        return wave
    import soxr

    out = soxr.resample(wave, orig_sr, target_sr, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def read_media_file(path: str | Path, max_bytes: int | None = None) -> bytes:
    """Read a media file's bytes; NotFoundError if missing, PayloadTooLargeError over max_bytes."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: file not found")
    if not path.is_file():
        raise InvalidInputError(f"{path}: not a regular file")
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise PayloadTooLargeError(f"{path}: file is {size} bytes, over the limit of {max_bytes}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"{path}: cannot read file ({exc})") from exc
