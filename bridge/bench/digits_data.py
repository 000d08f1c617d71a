"""Readers for the digits world: the MNIST test set (IDX) and the Free Spoken Digit Dataset.

Layout under a data dir (../shared/data/README.md): `mnist/t10k-images-idx3-ubyte.gz`,
`mnist/t10k-labels-idx1-ubyte.gz` and `fsdd/recordings/{digit}_{speaker}_{take}.wav` (8 kHz).
Conventions: MNIST images 0-4999 train image-side models and memories, 5000-9999 are for
evaluation only; FSDD takes 0-4 are the test set, takes 5-49 training.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bridge.errors import InvalidInputError, NotFoundError

if TYPE_CHECKING:
    from PIL import Image

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
MNIST_TRAIN = range(0, 5000)
MNIST_EVAL = range(5000, 10000)
FSDD_TRAIN_TAKES = range(5, 50)
FSDD_TEST_TAKES = range(0, 5)

FSDD_SOURCE = "Free Spoken Digit Dataset, github.com/Jakobovski/free-spoken-digit-dataset @ 26eb9aa"
FSDD_LICENSE = "CC BY-SA 4.0"
MNIST_SOURCE = "MNIST test set (LeCun, Cortes, Burges), copy from github.com/kelas/mnist"
MNIST_LICENSE = "CC BY-SA 3.0"


def _read_idx(path: Path) -> np.ndarray:
    """Read a uint8 IDX file (optionally gzipped) into an array of its declared shape."""
    if not path.is_file():
        raise NotFoundError(f"MNIST file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic >> 8 != 0x08:  # 0x08 = unsigned byte
        raise InvalidInputError(f"{path}: not a uint8 IDX file (magic {magic:#x})")
    ndim = magic & 0xFF
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (10000, 28, 28) uint8, labels (10000,) int64) of the MNIST test set."""
    root = Path(data_dir) / "mnist"
    images = _read_idx(root / "t10k-images-idx3-ubyte.gz")
    labels = _read_idx(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if images.shape != (10000, 28, 28) or labels.shape != (10000,):
        raise InvalidInputError(f"unexpected MNIST shapes {images.shape}, {labels.shape}")
    return images, labels


def mnist_pil(images: np.ndarray) -> list[Image.Image]:
    """uint8 (N, 28, 28) -> RGB PIL images (what the service decodes uploads to)."""
    from PIL import Image

    return [Image.fromarray(img, mode="L").convert("RGB") for img in images]


@dataclass(frozen=True)
class Clip:
    """One FSDD recording."""

    path: Path
    digit: int
    speaker: str
    take: int

    @property
    def name(self) -> str:
        return f"{self.digit}_{self.speaker}_{self.take}.wav"


def list_fsdd(
    data_dir: str | Path, takes: Iterable[int], speakers: Sequence[str] = FSDD_SPEAKERS
) -> list[Clip]:
    """FSDD clips with the given takes and speakers, sorted by (speaker, digit, take)."""
    root = Path(data_dir) / "fsdd" / "recordings"
    take_list = sorted(set(takes))
    clips = [
        Clip(root / f"{digit}_{speaker}_{take}.wav", digit, speaker, take)
        for speaker in speakers
        for digit in range(10)
        for take in take_list
        if (root / f"{digit}_{speaker}_{take}.wav").is_file()
    ]
    if not clips:
        raise NotFoundError(f"no FSDD recordings under {root}")
    return clips


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 waveform and its sample rate."""
    import soundfile as sf

    wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return wave.mean(axis=1).astype(np.float32), int(rate)
