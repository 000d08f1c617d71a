"""A corpus of hostile media uploads, generated in memory (no binary files are committed).

Every case is a file the service must refuse with a 4xx whose message says what was wrong:
truncated files of each accepted format, headers that lie (length, channels, sample rate,
dimensions), decompression bombs that declare huge sizes or carry overlong, compressed or
looping chunks, polyglots (two formats in one file), empty and one-byte files, non-finite
float samples, audio of 0 s and of hours, and images of 1x1 and 1xN pixels.

`hostile_cases()` returns them all; each is a `HostileCase` with the file's name, bytes and
content type, a sentence saying what it is, the status the API must answer and a regular
expression that its `detail` must match. Everything is deterministic (seeded noise, fixed
tones), built from media_factory's encoders plus hand-written headers (struct + zlib), and
small: the largest case (a real long audio file within the upload limit) is under 8 MB.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from media_factory import make_audio_bytes, make_image_bytes, make_wav_bytes

# What the API answers (app/errors.py): 422 a file that claims a format but cannot be
# decoded, 415 bytes of no supported format, 413 over a size or duration limit.
DECODE, UNSUPPORTED, TOO_LARGE = 422, 415, 413
# The duration limit the cases assume (the API test fixtures' BRIDGE_MAX_AUDIO_SECONDS).
MAX_AUDIO_SECONDS = 5.0

IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "bmp": "BMP", "gif": "GIF"}
IMAGE_FORMATS["tiff"] = "TIFF"
IMAGE_TYPES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "bmp": "image/bmp",
    "gif": "image/gif",
    "tiff": "image/tiff",
}
AUDIO_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "aiff": "audio/aiff",
    "mp3": "audio/mpeg",
}
AUDIO_SUBTYPES = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "aiff": ("AIFF", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


@dataclass(frozen=True)
class HostileCase:
    name: str  # the upload's file name (unique: also the pytest id)
    data: bytes
    content_type: str
    what: str  # what the file is, for the reader of a failure
    status: int  # the status the API must answer
    says: str  # a regular expression the error detail must match (case-insensitive)


# ------------------------------------------------------------------ building blocks
def png_chunk(kind: bytes, payload: bytes, length: int | None = None) -> bytes:
    """A PNG chunk with a correct CRC; `length` overrides the length field (a lie)."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    size = len(payload) if length is None else length
    return struct.pack(">I", size) + kind + payload + struct.pack(">I", crc)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_file(width: int, height: int, rows: Iterator[bytes] | None = None, *extra: bytes) -> bytes:
    """An 8-bit RGB PNG of width x height; `rows` yields the filtered scanlines (default:
    black), compressed as they come so that huge images never exist uncompressed here."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    packer = zlib.compressobj(9)
    if rows is None:
        rows = (b"\x00" + b"\x00" * (3 * width) for _ in range(height))
    idat = b"".join(packer.compress(row) for row in rows) + packer.flush()
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + b"".join(extra)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def noisy_image(fmt: str, width: int = 64, height: int = 48) -> bytes:
    """A seeded-noise image in Pillow format `fmt` (noise keeps the compressed data long)."""
    return make_image_bytes(width, height, fmt=fmt, seed=7)


def tone(ext: str, seconds: float = 1.0, rate: int = 16_000) -> bytes:
    fmt, subtype = AUDIO_SUBTYPES[ext]
    return make_audio_bytes(seconds, rate, fmt=fmt, subtype=subtype)


def wav_header(
    *,
    channels: int = 1,
    rate: int = 8_000,
    bits: int = 16,
    fmt_tag: int = 1,
    data_size: int,
    block_align: int | None = None,
    byte_rate: int | None = None,
) -> bytes:
    """A canonical 44-byte WAV header whose fields say whatever the caller wants."""
    if block_align is None:
        block_align = channels * bits // 8
    if byte_rate is None:
        byte_rate = rate * block_align
    fmt = struct.pack(
        "<HHIIHH", fmt_tag, channels, rate, byte_rate & 0xFFFFFFFF, block_align & 0xFFFF, bits
    )
    riff_size = min(0xFFFFFFFF, 4 + 8 + len(fmt) + 8 + data_size)
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", data_size)
    )


def float_wav(samples: np.ndarray, rate: int = 16_000) -> bytes:
    """A 32-bit IEEE-float WAV holding `samples` exactly (NaN and Inf included)."""
    payload = samples.astype("<f4").tobytes()
    return wav_header(rate=rate, bits=32, fmt_tag=3, data_size=len(payload)) + payload


def flac_streaminfo_patched(
    data: bytes, *, rate: int | None = None, total: int | None = None, channels: int | None = None
) -> bytes:
    """A FLAC file with fields of its STREAMINFO block rewritten (the frames keep theirs)."""
    assert data[:4] == b"fLaC"
    info = bytearray(data[8:42])  # the 34-byte STREAMINFO after the block header
    packed = int.from_bytes(info[10:18], "big")  # rate(20) channels-1(3) bps-1(5) total(36)
    old_rate, old_ch = packed >> 44, (packed >> 41) & 0x7
    bps, old_total = (packed >> 36) & 0x1F, packed & ((1 << 36) - 1)
    new_rate = old_rate if rate is None else rate
    new_ch = old_ch if channels is None else channels - 1
    new_total = old_total if total is None else total
    packed = (new_rate << 44) | (new_ch << 41) | (bps << 36) | new_total
    info[10:18] = packed.to_bytes(8, "big")
    return data[:8] + bytes(info) + data[42:]


def jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose SOF marker declares width x height (the scan data stays as it was)."""
    i = 2
    while i + 4 <= len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            out = bytearray(data)
            out[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        i += 2 + length
    raise ValueError("no SOF marker")


def gif_with_size(data: bytes, width: int, height: int) -> bytes:
    """A GIF whose logical screen and first image descriptor declare width x height."""
    out = bytearray(data)
    out[6:10] = struct.pack("<HH", width, height)
    descriptor = out.index(b"\x2c", 13)  # first image descriptor (after the global table)
    out[descriptor + 5 : descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(out)


def webp_vp8x(width: int, height: int) -> bytes:
    """A WebP extended header (VP8X) declaring a width x height canvas, with no image data."""
    payload = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little")
    payload += (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def tiff_file(width: int, height: int, *, next_ifd_self: bool = False) -> bytes:
    """A little-endian 8-bit greyscale TIFF declaring width x height in one strip (its whole
    pixels when small, else 8 bytes); `next_ifd_self` makes the IFD chain loop to itself."""
    strip = width * height if width * height <= 4096 else 8
    entries = [
        (256, 4, 1, width),  # ImageWidth (LONG)
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (273, 4, 1, 8),  # StripOffsets -> right after the header
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, strip),  # StripByteCounts
    ]
    ifd_offset = 8 + strip
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<I", value) if kind == 4 else struct.pack("<HH", value, 0)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", ifd_offset if next_ifd_self else 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + b"\x40" * strip + ifd


def bmp_header(width: int, height: int, bits: int = 24, payload: bytes = b"") -> bytes:
    """A BMP (BITMAPINFOHEADER) declaring width x height at `bits` per pixel."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, len(payload), 0, 0, 0, 0)
    size = 14 + len(info) + len(payload)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(info)) + info + payload


# ------------------------------------------------------------------ the cases
def _truncated() -> Iterator[HostileCase]:
    for ext, fmt in IMAGE_FORMATS.items():
        whole = noisy_image(fmt)
        for label, cut in (("half", len(whole) // 2), ("header", 20), ("one-byte", 1)):
            yield HostileCase(
                f"truncated-{label}.{ext}",
                whole[:cut],
                IMAGE_TYPES[ext],
                f"a {fmt} image cut to {cut} of its {len(whole)} bytes",
                DECODE,
                r"truncated|corrupt|could not be decoded|cannot identify",
            )
    for ext in AUDIO_TYPES:
        whole = tone(ext)
        for label, cut in (("half", len(whole) // 2), ("header", 30), ("one-byte", 1)):
            yield HostileCase(
                f"truncated-{label}.{ext}",
                whole[:cut],
                AUDIO_TYPES[ext],
                f"a {ext} tone cut to {cut} of its {len(whole)} bytes",
                DECODE,
                r"truncated|corrupt|could not be decoded|no samples",
            )


def _lying_headers() -> Iterator[HostileCase]:
    tone_bytes = (np.sin(np.arange(8_000) / 5) * 8_000).astype("<i2").tobytes()
    wav = "audio/wav"
    lies: list[tuple[str, bytes, str, int, str]] = [
        (
            "wav-channels-0.wav",
            wav_header(channels=0, data_size=len(tone_bytes), block_align=2) + tone_bytes,
            "a WAV declaring 0 channels",
            DECODE,
            r"corrupt|channel",
        ),
        (
            "wav-channels-65535.wav",
            wav_header(channels=65535, data_size=len(tone_bytes)) + tone_bytes,
            "a WAV declaring 65535 channels over 16 KB of samples",
            DECODE,
            r"corrupt|channel",
        ),
        (
            "wav-rate-0.wav",
            wav_header(rate=0, data_size=len(tone_bytes)) + tone_bytes,
            "a WAV declaring a sample rate of 0 Hz",
            DECODE,
            r"sample rate|corrupt",
        ),
        (
            "wav-rate-1hz.wav",
            wav_header(rate=1, data_size=len(tone_bytes)) + tone_bytes,
            "a WAV declaring 1 Hz (8000 samples = 2.2 hours at that rate)",
            DECODE,
            r"sample rate 1 Hz",
        ),
        (
            "wav-rate-4ghz.wav",
            wav_header(rate=0xFFFFFFFF, data_size=len(tone_bytes)) + tone_bytes,
            "a WAV declaring 4294967295 Hz",
            DECODE,
            r"sample rate|corrupt",
        ),
        (
            "wav-bits-0.wav",
            wav_header(bits=0, data_size=len(tone_bytes), block_align=2) + tone_bytes,
            "a WAV declaring 0 bits per sample",
            DECODE,
            r"corrupt|bits",
        ),
        (
            "wav-format-unknown.wav",
            wav_header(fmt_tag=0x1234, data_size=len(tone_bytes)) + tone_bytes,
            "a WAV with an unknown format tag (0x1234)",
            DECODE,
            r"corrupt|format",
        ),
        (
            "wav-data-longer-than-file.wav",
            wav_header(data_size=len(tone_bytes) * 100) + tone_bytes,
            "a WAV whose data chunk declares 100 times the bytes the file has (truncated)",
            DECODE,
            r"truncated",
        ),
        (
            "wav-declares-hours.wav",
            wav_header(rate=1_000, bits=8, data_size=0x70000000) + tone_bytes,
            "an 8-bit 1 kHz WAV whose data chunk declares 1.9 G samples (522 hours)",
            DECODE,
            r"truncated",
        ),
        (
            "wav-no-data.wav",
            wav_header(data_size=0),
            "a WAV with an empty data chunk (0 s of audio)",
            DECODE,
            r"no samples",
        ),
        (
            "flac-rate-1hz.flac",
            flac_streaminfo_patched(tone("flac"), rate=1),
            "a FLAC whose STREAMINFO says 1 Hz",
            DECODE,
            r"sample rate|corrupt",
        ),
        (
            "flac-declares-hours.flac",
            flac_streaminfo_patched(tone("flac"), total=(1 << 36) - 1),
            "a FLAC whose STREAMINFO declares 2^36 samples (49 days) over 1 s of frames",
            TOO_LARGE,
            r"over the limit",
        ),
        (
            "flac-channels-8.flac",
            flac_streaminfo_patched(tone("flac"), channels=8),
            "a mono FLAC whose STREAMINFO says 8 channels",
            DECODE,
            r"corrupt|channel",
        ),
    ]
    for name, data, what, status, says in lies:
        yield HostileCase(
            name, data, wav if name.endswith(".wav") else "audio/flac", what, status, says
        )
    png = noisy_image("PNG")
    yield HostileCase(
        "png-ihdr-larger.png",
        PNG_SIGNATURE
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 640, 480, 8, 2, 0, 0, 0))
        + png[33:],
        "image/png",
        "a 64x48 PNG whose IHDR says 640x480 (the pixel data runs out)",
        DECODE,
        r"truncated|corrupt",
    )
    yield HostileCase(
        "png-ihdr-zero.png",
        PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 0, 8, 2, 0, 0, 0)) + png[33:],
        "image/png",
        "a PNG whose IHDR says 0x0",
        DECODE,
        r"corrupt|no pixels|truncated",
    )
    yield HostileCase(
        "bmp-negative-size.bmp",
        bmp_header(-5, -2_000_000_000),
        "image/bmp",
        "a BMP header declaring -5 x -2000000000 pixels and no pixel data",
        TOO_LARGE,
        r"too large",
    )


def _bombs() -> Iterator[HostileCase]:
    yield HostileCase(
        "bomb-100k-square.png",
        png_file(100_000, 100_000, iter(())),
        "image/png",
        "a 100000x100000 PNG (10^10 pixels) with an empty IDAT",
        TOO_LARGE,
        r"too large|over the limit",
    )
    yield HostileCase(
        "bomb-10k-square.png",
        png_file(10_000, 10_000, iter(())),
        "image/png",
        "a 10000x10000 PNG (10^8 pixels, just over the limit) with an empty IDAT",
        TOO_LARGE,
        r"over the limit|too large",
    )
    yield HostileCase(
        "bomb-65535.jpg",
        jpeg_with_size(noisy_image("JPEG"), 65_535, 65_535),
        "image/jpeg",
        "a 64x48 JPEG whose SOF declares 65535x65535",
        TOO_LARGE,
        r"too large|over the limit",
    )
    yield HostileCase(
        "bomb-65535.gif",
        gif_with_size(noisy_image("GIF"), 65_535, 65_535),
        "image/gif",
        "a 64x48 GIF whose screen and frame declare 65535x65535",
        TOO_LARGE,
        r"too large|over the limit",
    )
    yield HostileCase(
        "bomb-16m.webp",
        webp_vp8x(1 << 24, 1 << 24),
        "image/webp",
        "a WebP VP8X header declaring a 16777216x16777216 canvas and no image",
        TOO_LARGE,
        r"too large|over the limit",
    )
    yield HostileCase(
        "bomb-100k.tiff",
        tiff_file(100_000, 100_000),
        "image/tiff",
        "a TIFF declaring 100000x100000 pixels with an 8-byte strip",
        TOO_LARGE,
        r"too large|over the limit",
    )
    yield HostileCase(
        "bomb-2g.bmp",
        bmp_header(60_000, 60_000, payload=b"\x00" * 64),
        "image/bmp",
        "a BMP declaring 60000x60000 pixels with 64 bytes of data",
        TOO_LARGE,
        r"too large|over the limit",
    )
    # Chunks: an overlong length field, an iCCP profile and a zTXt that inflate to 64 MB,
    # 20000 tEXt chunks before the image data.
    inflating = zlib.compress(b"\x00" * (64 << 20), 9)
    yield HostileCase(
        "chunk-overlong.png",
        PNG_SIGNATURE
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
        + png_chunk(b"tEXt", b"a\x00b", length=0x7FFFFFF0)
        + png_chunk(b"IEND", b""),
        "image/png",
        "a PNG with a tEXt chunk whose length field says 2 GB",
        DECODE,
        r"truncated|corrupt",
    )
    yield HostileCase(
        "chunk-iccp-bomb.png",
        png_file(16, 16, None, png_chunk(b"iCCP", b"p\x00\x00" + inflating)),
        "image/png",
        "a 16x16 PNG whose iCCP profile inflates to 64 MB",
        DECODE,
        r"corrupt|too large|decompressed",
    )
    yield HostileCase(
        "chunk-ztxt-bomb.png",
        png_file(16, 16, None, png_chunk(b"zTXt", b"k\x00\x00" + inflating)),
        "image/png",
        "a 16x16 PNG whose zTXt chunk inflates to 64 MB",
        DECODE,
        r"corrupt|too large|decompressed",
    )
    # Each zTXt stays under Pillow's 1 MB per-chunk limit; together they pass its 64 MB cap.
    almost_1mb = zlib.compress(b"\x00" * ((1 << 20) - 1024), 9)
    yield HostileCase(
        "chunk-ztxt-many.png",
        png_file(16, 16, None, *[png_chunk(b"zTXt", b"k\x00\x00" + almost_1mb)] * 100),
        "image/png",
        "a 16x16 PNG with 100 zTXt chunks inflating to 1 MB each (100 MB of text)",
        DECODE,
        r"corrupt|too much memory",
    )


def _polyglots() -> Iterator[HostileCase]:
    png = noisy_image("PNG")
    jpeg = noisy_image("JPEG")
    wav = make_wav_bytes(0.5, 16_000)
    yield HostileCase(
        "png-then-wav.png",
        png + wav,
        "image/png",
        "a valid PNG followed by a whole WAV file",
        DECODE,
        r"polyglot|also holds",
    )
    yield HostileCase(
        "jpeg-then-wav.jpg",
        jpeg + wav,
        "image/jpeg",
        "a valid JPEG followed by a whole WAV file",
        DECODE,
        r"polyglot|also holds",
    )
    yield HostileCase(
        "wav-then-png.wav",
        wav + png,
        "audio/wav",
        "a valid WAV followed by a whole PNG file",
        DECODE,
        r"polyglot|also holds",
    )
    yield HostileCase(
        "wav-header-on-jpeg.wav",
        wav_header(rate=16_000, data_size=len(jpeg) // 2 * 2) + jpeg[: len(jpeg) // 2 * 2],
        "audio/wav",
        "a WAV header whose data chunk is JPEG bytes",
        DECODE,
        r"polyglot|also holds",
    )


def _tiny_and_empty() -> Iterator[HostileCase]:
    yield HostileCase("empty.png", b"", "image/png", "a 0-byte file named .png", DECODE, r"empty")
    yield HostileCase("empty.wav", b"", "audio/wav", "a 0-byte file named .wav", DECODE, r"empty")
    yield HostileCase(
        "empty.bin", b"", "application/octet-stream", "a 0-byte file, no claim", DECODE, r"empty"
    )
    yield HostileCase(
        "one-byte.bin",
        b"\x00",
        "application/octet-stream",
        "a single zero byte with no claim",
        UNSUPPORTED,
        r"not a supported",
    )
    yield HostileCase(
        "one-byte-ff.mp3",
        b"\xff",
        "audio/mpeg",
        "a single 0xFF byte named .mp3 (half an MPEG sync word)",
        DECODE,
        r"could not be decoded|corrupt",
    )
    for width, height in ((1, 1), (1, 500), (500, 1), (3, 3)):
        yield HostileCase(
            f"tiny-{width}x{height}.png",
            make_image_bytes(width, height, fmt="PNG", seed=1),
            "image/png",
            f"a valid {width}x{height} PNG",
            DECODE,
            rf"{width}x{height}.*too small",
        )


def _audio_content() -> Iterator[HostileCase]:
    for label, bad in (("nan", np.nan), ("inf", np.inf), ("neg-inf", -np.inf)):
        samples = np.sin(np.arange(16_000, dtype=np.float32) / 7) * 0.5
        samples[1_000] = bad
        yield HostileCase(
            f"float-{label}.wav",
            float_wav(samples),
            "audio/wav",
            f"a 1 s float32 WAV with one {label} sample",
            DECODE,
            r"NaN or infinite",
        )
    flac = tone("flac")
    yield HostileCase(
        "zero-seconds.flac",
        flac_streaminfo_patched(flac[:42], total=0),  # soundfile writes no 0-sample FLAC
        "audio/flac",
        "a FLAC with a STREAMINFO block (length unknown) and no audio frames",
        DECODE,
        r"no samples|corrupt or truncated FLAC",
    )
    silence = make_audio_bytes(600, 8_000, amplitude=0.0, fmt="FLAC", subtype="PCM_16")
    yield HostileCase(
        "unknown-length-10min.flac",
        flac_streaminfo_patched(silence, total=0),
        "audio/flac",
        f"10 min of FLAC silence ({len(silence)} bytes) whose STREAMINFO says length unknown",
        TOO_LARGE,
        r"longer than the limit of 5 s",
    )
    for ext in ("wav", "ogg", "aiff"):
        fmt, subtype = AUDIO_SUBTYPES[ext]
        buffer = io.BytesIO()
        import soundfile as sf

        sf.write(buffer, np.zeros((0, 1), np.float32), 16_000, format=fmt, subtype=subtype)
        yield HostileCase(
            f"zero-seconds.{ext}",
            buffer.getvalue(),
            AUDIO_TYPES[ext],
            f"a {fmt} file with 0 samples",
            DECODE,
            r"no samples|corrupt|could not be decoded",
        )
    hours = 2.0
    yield HostileCase(
        "long-2h.wav",
        make_audio_bytes(hours * 3600, 1_000, 50.0, fmt="WAV", subtype="PCM_U8"),
        "audio/wav",
        "a real 2-hour 8-bit 1 kHz WAV (7.2 MB, within the upload limit)",
        TOO_LARGE,
        r"7200\.00 s long, over the limit of 5 s",
    )
    yield HostileCase(
        "long-2h.flac",
        make_audio_bytes(hours * 3600, 1_000, 50.0, fmt="FLAC", subtype="PCM_16"),
        "audio/flac",
        "a real 2-hour 1 kHz FLAC",
        TOO_LARGE,
        r"over the limit of 5 s",
    )


@dataclass(frozen=True)
class ToleratedCase:
    """Odd but legitimate input that must be accepted (2xx) within the same bounds."""

    name: str
    data: bytes
    content_type: str
    what: str


def tolerated_cases() -> list[ToleratedCase]:
    """Files that look hostile but are valid: stored, within the time and memory bounds."""
    tone_bytes = (np.sin(np.arange(8_000) / 5) * 8_000).astype("<i2").tobytes()
    wide_row = b"\x00" + b"\x80" * (3 * 2_000_000)
    return [
        ToleratedCase(
            "wide-2000000x8.png",
            png_file(2_000_000, 8, (wide_row for _ in range(8))),
            "image/png",
            "a 2000000x8 PNG (16 M pixels, under the limit); CLIP's resize (shorter side to "
            "224 px) made it 56 M pixels wide",
        ),
        ToleratedCase(
            "ifd-loop.tiff",
            tiff_file(16, 16, next_ifd_self=True),
            "image/tiff",
            "a 16x16 TIFF whose IFD chain points back to itself (its first frame is fine)",
        ),
        ToleratedCase(
            "many-text.png",
            png_file(16, 16, None, *[png_chunk(b"tEXt", b"k\x00" + b"v" * 100)] * 20_000),
            "image/png",
            "a 16x16 PNG preceded by 20000 tEXt chunks (2 MB of text, under Pillow's caps)",
        ),
        ToleratedCase(
            "streamed-size.wav",
            wav_header(data_size=0xFFFFFFFF) + tone_bytes,
            "audio/wav",
            "a WAV whose data size is the 0xFFFFFFFF placeholder of a streaming writer",
        ),
    ]


GROUPS: tuple[Callable[[], Iterator[HostileCase]], ...] = (
    _truncated,
    _lying_headers,
    _bombs,
    _polyglots,
    _tiny_and_empty,
    _audio_content,
)


def hostile_cases() -> list[HostileCase]:
    """Every case of the corpus (names are unique)."""
    cases = [case for group in GROUPS for case in group()]
    names = [case.name for case in cases]
    assert len(set(names)) == len(names), "case names must be unique"
    return cases
