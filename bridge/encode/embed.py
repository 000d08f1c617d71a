"""`mbridge embed`: captions, image folders or audio folders -> a float32 (N, D) .npy file.

The first stage of the offline pipeline (embed -> .npy -> train -> checkpoint). Inputs:

- text: a UTF-8 file with one caption per line; row i of the output is line i. A blank line
  is an error that names the line (skipping it would silently shift every later row against
  files built from the same caption list). A UTF-8 BOM and trailing line ends are accepted.
- image / audio: a folder (its direct children with a supported extension, sorted by name;
  hidden files skipped), a text file listing one path per line (blank lines and lines
  starting with "#" skipped; relative paths resolve against the list file's folder), or a
  single media file. Row i of the output is the i-th path.

Media are decoded with bridge.encode.media (RGB images; mono audio resampled to the encoder's rate)
batch by batch, so memory stays bounded for large folders. Progress goes to stderr (tqdm).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bridge.arrays import atomic_save_npy, validate_matrix
from bridge.encode.encoders import ENCODER_MODALITIES, Encoder, load_encoder
from bridge.encode.media import (
    AUDIO_EXTENSIONS,
    IMAGE_EXTENSIONS,
    decode_audio,
    decode_image,
    read_media_file,
    resample,
)
from bridge.errors import InvalidInputError, NotFoundError, UnsupportedMediaError
from bridge.io import read_captions
from bridge.modalities import EMBED_MODALITIES

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZES = {"text": 64, "image": 64, "audio": 16}
_EXTENSIONS = {"image": IMAGE_EXTENSIONS, "audio": AUDIO_EXTENSIONS}


def list_media_paths(input_path: str | Path, modality: str) -> list[Path]:
    """The media files an `embed` input names, in output-row order (see module docstring)."""
    if modality not in _EXTENSIONS:
        raise InvalidInputError(
            f"modality must be image or audio for media paths, got {modality!r}"
        )
    extensions = _EXTENSIONS[modality]
    path = Path(input_path)
    if not path.exists():
        raise NotFoundError(f"{path}: input not found")
    if path.is_dir():
        found = sorted(
            (p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        paths = [p for p in found if p.suffix.lower() in extensions]
        if not paths:
            raise InvalidInputError(
                f"{path}: folder holds no {modality} files ({', '.join(sorted(extensions))})"
            )
        return paths
    if path.suffix.lower() in extensions:
        return [path]
    return _read_path_list(path, modality)


def _read_path_list(list_file: Path, modality: str) -> list[Path]:
    """Paths listed one per line in `list_file`, relative ones resolved beside it."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"{list_file}: expected a {modality} folder, a {modality} file or a UTF-8 list of "
            f"paths, but the file is not text ({exc.reason})"
        ) from exc
    paths: list[Path] = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        candidate = Path(entry).expanduser()
        if not candidate.is_absolute():
            candidate = list_file.parent / candidate
        if not candidate.is_file():
            raise NotFoundError(f"{list_file} line {number}: file not found: {candidate}")
        paths.append(candidate)
    if not paths:
        raise InvalidInputError(f"{list_file}: the list names no {modality} files")
    return paths


def embed_inputs(
    encoder: Encoder,
    modality: str,
    input_path: str | Path,
    batch_size: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Embed every caption or media file that `input_path` names: float32 (N, D), unit rows."""
    _check_modality(encoder.kind, modality)
    size = batch_size or DEFAULT_BATCH_SIZES[modality]
    if size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {size}")
    items: Sequence[Any]
    encode: Callable[[list[Any]], np.ndarray]
    if modality == "text":
        items = read_captions(input_path)
        encode = partial(_encode_texts, encoder, batch_size=size)
    elif modality == "image":
        items = list_media_paths(input_path, modality)
        encode = partial(_encode_image_files, encoder, batch_size=size)
    else:
        items = list_media_paths(input_path, modality)
        encode = partial(_encode_audio_files, encoder, batch_size=size)
    logger.info(
        "embedding %d %s input(s) from %s with %r", len(items), modality, input_path, encoder
    )
    return _run_batches(items, size, encode, modality, progress)


def _run_batches(
    items: Sequence[Any],
    size: int,
    encode: Callable[[list[Any]], np.ndarray],
    modality: str,
    progress: bool,
) -> np.ndarray:
    """Encode `items` batch by batch with a tqdm bar on stderr (shown past one batch)."""
    from tqdm import tqdm

    chunks: list[np.ndarray] = []
    with tqdm(
        total=len(items),
        desc=f"embed {modality}",
        unit=modality,
        file=sys.stderr,
        disable=not progress or len(items) <= size,
    ) as bar:
        for start in range(0, len(items), size):
            batch = list(items[start : start + size])
            chunks.append(encode(batch))
            bar.update(len(batch))
    return np.concatenate(chunks, axis=0)


def _encode_texts(encoder: Encoder, captions: list[str], batch_size: int) -> np.ndarray:
    return encoder.encode_text(captions, batch_size=batch_size)


def _encode_image_files(encoder: Encoder, paths: list[Path], batch_size: int) -> np.ndarray:
    images = [decode_image(read_media_file(p), name=str(p)) for p in paths]
    return encoder.encode_image(images, batch_size=batch_size)


def _encode_audio_files(encoder: Encoder, paths: list[Path], batch_size: int) -> np.ndarray:
    """Decode, mix to mono and resample each file to the encoder's rate, then encode."""
    rate = encoder.sample_rate
    if rate is None:  # pragma: no cover - _check_modality guarantees an audio tower
        raise UnsupportedMediaError(f"{encoder!r} has no audio tower")
    waves = []
    for p in paths:
        wave, native_rate = decode_audio(read_media_file(p), name=str(p))
        waves.append(resample(wave, native_rate, rate))
    return encoder.encode_audio(waves, sample_rate=rate, batch_size=batch_size)


def _check_modality(kind: str, modality: str) -> None:
    """Reject unknown modalities and ones the chosen tower does not have."""
    if modality not in EMBED_MODALITIES:
        raise InvalidInputError(f"modality must be one of {EMBED_MODALITIES}, got {modality!r}")
    if kind not in ENCODER_MODALITIES:
        raise InvalidInputError(f"encoder must be one of {tuple(ENCODER_MODALITIES)}, got {kind!r}")
    supported = ENCODER_MODALITIES[kind]
    if modality not in supported:
        raise UnsupportedMediaError(
            f"a {kind} encoder cannot embed {modality} (it handles {', '.join(supported)})"
        )


def run_embed(
    encoder_kind: str,
    model: str | Path,
    modality: str,
    input_path: str | Path,
    output_path: str | Path,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool = True,
) -> int:
    """The whole `mbridge embed` command: load, embed, write OUT.npy atomically; return N.

    Inputs are checked before the model is loaded, so a typo fails fast; on any error no
    output file is written.
    """
    _check_modality(encoder_kind, modality)
    if modality == "text":
        if not Path(input_path).is_file():
            raise NotFoundError(f"{input_path}: captions file not found")
    else:
        list_media_paths(input_path, modality)
    encoder = load_encoder(encoder_kind, model, device=device)
    embeddings = embed_inputs(encoder, modality, input_path, batch_size, progress)
    embeddings = validate_matrix(embeddings, f"{modality} embeddings", encoder.dim)
    atomic_save_npy(output_path, embeddings)
    logger.info("wrote %s: %d x %d float32", output_path, *embeddings.shape)
    return int(embeddings.shape[0])
