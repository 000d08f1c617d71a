"""Synthetic spoken digits from eSpeak NG, extra voices for the demo CLAP (train_demo_clap.py
--synthetic-voices N).

FSDD has six speakers; eSpeak NG (Debian package `espeak-ng`, GPL-3.0-or-later; the audio it
produces is not covered by its license) can say the ten digit words in many accents (English
variants of Great Britain, the US, Scotland, Lancaster, the West Midlands, the Caribbean,
Received Pronunciation), voice variants (male, female, croaky, whispered, Klatt-synthesised)
pitches and speeds. The clips are formant-synthesised, not natural speech: they add phonetic
variety (the same word from many vocal tracts), not real voices. Each is trimmed to its
voiced part like the FSDD recordings and resampled to FSDD's 8 kHz.

Only the training script uses this module, so only training needs the espeak-ng binary.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from dataclasses import dataclass

import numpy as np

ACCENTS = (
    "en-gb",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-gb-x-rp",
    "en-029",
)
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "croak", "klatt", "klatt2", "klatt3", "klatt4", "whisper", "Andy", "Gene", "Mike", "boris",
    "david", "edward", "iven", "john", "max", "norbert", "paul", "grandpa",
)  # fmt: skip


@dataclass(frozen=True)
class Voice:
    accent: str
    variant: str
    pitch: int  # espeak-ng -p, 0-99
    speed: int  # espeak-ng -s, words per minute

    def args(self) -> list[str]:
        return ["-v", f"{self.accent}+{self.variant}", "-p", str(self.pitch), "-s", str(self.speed)]


def random_voices(n: int, seed: int) -> list[Voice]:
    rng = np.random.default_rng(seed)
    return [
        Voice(
            str(rng.choice(ACCENTS)),
            str(rng.choice(VARIANTS)),
            int(rng.integers(20, 81)),
            int(rng.integers(120, 221)),
        )
        for _ in range(n)
    ]


def speak(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    """espeak-ng's mono waveform of `text` (float32 in [-1, 1]) and its sample rate."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError(
            "espeak-ng not found: install the Debian package espeak-ng, or train without "
            "--synthetic-voices"
        )
    out = subprocess.run(
        [binary, *voice.args(), "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(out)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return pcm.astype(np.float32) / 32768.0, rate


def trim(
    wave_: np.ndarray, rate: int, floor_db: float = -35.0, margin_s: float = 0.02
) -> np.ndarray:
    """Cut leading and trailing parts whose 10 ms frame energy is `floor_db` below the
    loudest frame (keeping `margin_s` either side), as FSDD's recordings are cut."""
    hop = max(1, rate // 100)
    frames = len(wave_) // hop
    if frames == 0:
        return wave_
    energy = np.square(wave_[: frames * hop].reshape(frames, hop)).mean(1)
    loud = np.flatnonzero(10 * np.log10(energy / max(energy.max(), 1e-20) + 1e-20) > floor_db)
    if len(loud) == 0:
        return wave_
    margin = int(margin_s * rate)
    return wave_[max(0, loud[0] * hop - margin) : min(len(wave_), (loud[-1] + 1) * hop + margin)]


def synthesize(
    words: tuple[str, ...], per_word: int, seed: int, rate: int = 8000
) -> tuple[list[np.ndarray], list[int], list[Voice]]:
    """`per_word` clips of each word (label = its index in `words`), each in its own random
    voice, trimmed and resampled to `rate`: (waveforms, labels, voices)."""
    import soxr

    waves, labels, used = [], [], []
    for label, word in enumerate(words):
        for voice in random_voices(per_word, seed * 1000 + label):
            audio, native = speak(word, voice)
            audio = trim(audio, native)
            waves.append(np.asarray(soxr.resample(audio, native, rate), dtype=np.float32))
            labels.append(label)
            used.append(voice)
    return waves, labels, used
