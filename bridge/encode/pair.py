"""The two encoders as the service uses them: decode uploads, embed media and text.

CLIP embeds images and text, CLAP audio and text (bridge/encode/encoders.py); this pair is
what ingest, search and retrain call.

Encoding is bounded by a semaphore of `encode_threads` permits so concurrent uploads and
queries do not oversubscribe the cores; torch releases the GIL while it computes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from bridge.errors import InvalidInputError
from bridge.types import Upload

if TYPE_CHECKING:
    from bridge.encode.encoders import Encoder


@dataclass(frozen=True)
class Decoded:
    modality: str
    media: Any  # PIL image or mono float32 waveform at the encoder's rate
    content_type: str


class EncoderPair:
    """CLIP (images, text) and CLAP (audio, text) behind one bounded set of encode slots."""

    def __init__(
        self, clip: Encoder, clap: Encoder, encode_threads: int, max_audio_seconds: float
    ) -> None:
        self.clip = clip
        self.clap = clap
        self.max_audio_seconds = max_audio_seconds
        self._slots = threading.BoundedSemaphore(max(1, encode_threads))

    def decode(self, upload: Upload, label: str) -> Decoded:
        """Sniff and decode one upload (audio resampled to the CLAP rate)."""
        from bridge.encode.media import (
            decode_audio,
            decode_image,
            resample,
            sniff_content_type,
            sniff_modality,
        )

        if not isinstance(upload.data, bytes | bytearray):
            raise InvalidInputError(f"{label}: expected file bytes")
        data = bytes(upload.data)
        modality = sniff_modality(data, upload.filename, upload.content_type)
        if modality == "image":
            media: Any = decode_image(data, label)
        else:
            waveform, rate = decode_audio(data, label, self.max_audio_seconds)
            target = self.clap.sample_rate or rate
            media = resample(waveform, rate, target) if rate != target else waveform
        return Decoded(modality, media, sniff_content_type(data, modality, upload.content_type))

    def encode(self, modality: str, media: Sequence[Any]) -> np.ndarray:
        """(N, D) raw embeddings with the modality's tower (bounded concurrency)."""
        with self._slots:
            if modality == "image":
                return self.clip.encode_image(list(media))
            rate = self.clap.sample_rate
            assert rate is not None, "a CLAP encoder has a sample rate"
            return self.clap.encode_audio(list(media), rate)

    def encode_text(self, space: str, text: str) -> np.ndarray:
        """(1, D) text embedding in the native `space` ("clip" or "clap")."""
        return self.encode_texts(space, [text])

    def encode_texts(self, space: str, texts: list[str]) -> np.ndarray:
        """(N, D) text embeddings in the native `space`, in one pass of its text tower."""
        encoder = self.clip if space == "clip" else self.clap
        with self._slots:
            return encoder.encode_text(texts)

    def encode_captions(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(clip_text, clap_text) embeddings of the same captions."""
        with self._slots:
            return self.clip.encode_text(captions), self.clap.encode_text(captions)

    def dims(self) -> tuple[int, int]:
        return self.clip.dim, self.clap.dim

    def encoder_ids(self) -> dict[str, str]:
        """Which models made the embeddings (recorded with items, indexes and bridges)."""
        return {"clip": self.clip.model_id, "clap": self.clap.model_id}
