"""eSpeak NG digits for the demo CLAP (scripts/demo/synthetic_voices.py): trimming and voice
draws always; the synthesis itself only where the espeak-ng binary is installed (training
needs it, CI does not)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "demo"))
import synthetic_voices as sv  # noqa: E402


def test_trim_cuts_leading_and_trailing_silence_with_a_margin() -> None:
    rate = 8000
    rng = np.random.default_rng(0)
    word = 0.3 * np.sin(2 * np.pi * 300 * np.arange(2400) / rate)
    clip = np.concatenate(
        [1e-4 * rng.standard_normal(4000), word, 1e-4 * rng.standard_normal(4000)]
    )
    out = sv.trim(clip.astype(np.float32), rate, margin_s=0.02)
    assert 2400 <= len(out) <= 2400 + 2 * 160 + 2 * 80  # the word, margins, frame rounding
    assert np.abs(out).max() == pytest.approx(0.3, abs=1e-3)


def test_trim_keeps_a_silent_clip() -> None:
    silent = np.zeros(800, np.float32)
    assert len(sv.trim(silent, 8000)) == 800


def test_random_voices_are_seeded_and_varied() -> None:
    a, b = sv.random_voices(50, 3), sv.random_voices(50, 3)
    assert a == b
    assert a != sv.random_voices(50, 4)
    assert len({v.accent for v in a}) > 3 and len({v.variant for v in a}) > 10
    assert all(20 <= v.pitch <= 80 and 120 <= v.speed <= 220 for v in a)
    assert all(v.accent in sv.ACCENTS and v.variant in sv.VARIANTS for v in a)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_synthesize_says_each_word_in_several_voices() -> None:
    waves, labels, voices = sv.synthesize(("zero", "seven"), 3, seed=0, rate=8000)
    assert labels == [0, 0, 0, 1, 1, 1]
    assert len(set(voices)) == 6
    for wave in waves:
        assert wave.dtype == np.float32 and np.isfinite(wave).all()
        assert 0.15 * 8000 < len(wave) < 1.5 * 8000  # one trimmed word
        assert np.sqrt(np.mean(wave**2)) > 0.01
