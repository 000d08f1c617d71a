"""The demo CLAP's augmentation (scripts/demo/audio_augment.py): each transform does what its
docstring says, measured on synthetic signals, and the augmented clips still featurize into
what the committed ClapFeatureExtractor makes of clean ones."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "demo"))
import audio_augment as aug  # noqa: E402

RATE = 8000


def tone(freq: float, seconds: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_freq(wave: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


def rms(wave: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.15, 1.25])
def test_speed_perturb_scales_duration_and_frequency(factor: float) -> None:
    wave = tone(500.0)
    out = aug.speed_perturb(wave, factor)
    assert abs(len(out) - len(wave) / factor) <= 1
    assert out.dtype == np.float32
    assert peak_freq(out) == pytest.approx(500.0 * factor, abs=4.0)


def test_speed_perturb_rejects_a_non_positive_factor() -> None:
    with pytest.raises(ValueError, match="positive"):
        aug.speed_perturb(tone(500.0), 0.0)


@pytest.mark.parametrize("snr_db", [0.0, 5.0, 20.0, 40.0])
@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_add_noise_has_the_requested_snr(snr_db: float, exponent: float) -> None:
    wave = tone(440.0)
    out = aug.add_noise(wave, snr_db, np.random.default_rng(0), exponent)
    noise = out - wave
    measured = 10 * np.log10(np.mean(wave.astype(np.float64) ** 2) / np.mean(noise**2.0))
    assert measured == pytest.approx(snr_db, abs=0.05)
    assert out.shape == wave.shape


def test_colored_noise_slopes_downwards_with_its_exponent() -> None:
    rng = np.random.default_rng(1)
    low_share = []
    for exponent in (0.0, 1.0, 2.0):
        spectrum = np.abs(np.fft.rfft(aug.colored_noise(16000, exponent, rng))) ** 2
        low_share.append(spectrum[: len(spectrum) // 8].sum() / spectrum.sum())
    assert low_share[0] == pytest.approx(1 / 8, abs=0.02)  # white: flat
    assert low_share[0] < low_share[1] < low_share[2]


@pytest.mark.parametrize("rt60", [0.1, 0.3, 0.7])
def test_synthetic_rir_decays_by_60_db_in_rt60(rt60: float) -> None:
    rir = aug.synthetic_rir(16000, rt60, np.random.default_rng(2), direct_ratio_db=0.0)
    assert len(rir) == int(rt60 * 16000)
    assert rir[0] == 1.0
    tail = rir[1:].astype(np.float64)
    assert np.sum(tail**2) == pytest.approx(1.0, rel=1e-4)  # DRR 0 dB: tail energy = direct
    # Schroeder backward integration: time for the energy decay curve to fall from -5 to
    # -25 dB, times 3, estimates RT60 (T20)
    edc = np.cumsum((tail**2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    t5, t25 = np.argmax(edc_db < -5), np.argmax(edc_db < -25)
    assert 3 * (t25 - t5) / 16000 == pytest.approx(rt60, rel=0.15)


def test_reverberate_keeps_length_and_level_and_smears_the_signal() -> None:
    rng = np.random.default_rng(3)
    wave = np.zeros(4000, np.float32)
    wave[1000:1400] = tone(300.0, 0.05)
    out = aug.reverberate(wave, aug.synthetic_rir(RATE, 0.5, rng))
    assert out.shape == wave.shape
    assert np.isfinite(out).all()
    assert rms(out) == pytest.approx(rms(wave), rel=1e-4)
    assert np.abs(out).max() < 4 * np.abs(wave).max()
    # energy after the burst ends: none in the dry signal, a decaying tail in the wet one
    assert rms(out[1500:2000]) > 0.05 * rms(wave)
    assert rms(out[1500:2000]) > rms(out[3500:4000])


def test_random_eq_keeps_level_and_reshapes_the_spectrum() -> None:
    rng = np.random.default_rng(4)
    wave = aug.colored_noise(8000, 0.0, rng)
    out = aug.random_eq(wave, rng, max_db=10.0)
    assert out.shape == wave.shape
    assert rms(out) == pytest.approx(rms(wave), rel=1e-4)
    gain = np.abs(np.fft.rfft(out)) / np.maximum(np.abs(np.fft.rfft(wave)), 1e-9)
    gain_db = 20 * np.log10(gain)
    assert gain_db.max() - gain_db.min() > 1.0
    assert gain_db.max() - gain_db.min() < 40.0


def test_shift_and_crop_pads_with_leading_silence_and_keeps_most_of_the_clip() -> None:
    wave = tone(400.0) + 0.5
    for seed in range(20):
        out = aug.shift_and_crop(wave, RATE, np.random.default_rng(seed), 0.1, 0.8)
        pad = int(np.argmax(out != 0))
        assert 0 <= pad <= 0.1 * RATE
        assert 0.8 * len(wave) - 1 <= len(out) - pad <= len(wave)
        assert np.all(out[pad:] != 0)


def test_wave_augment_is_seeded_and_varied() -> None:
    wave = tone(300.0, 0.4) * np.hanning(3200).astype(np.float32)
    chain = aug.WaveAugment(p_clean=0.0)
    a = chain(wave, RATE, np.random.default_rng(5))
    b = chain(wave, RATE, np.random.default_rng(5))
    c = chain(wave, RATE, np.random.default_rng(6))
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.allclose(a, c)
    assert np.isfinite(a).all() and a.dtype == np.float32
    clean = aug.WaveAugment(p_clean=1.0)(wave, RATE, np.random.default_rng(5))
    np.testing.assert_array_equal(clean, wave)


def test_augmented_clips_featurize_like_clean_ones() -> None:
    """The committed demo-clap extractor turns augmented clips (longer, shorter, noisy,
    quiet) into the same (1, T, F) log-mel shape as clean ones, all finite."""
    import soxr
    from transformers import ClapFeatureExtractor

    extractor = ClapFeatureExtractor.from_pretrained(str(REPO / "models" / "demo-clap"))
    rng = np.random.default_rng(7)
    wave = tone(250.0, 0.45) * np.hanning(3600).astype(np.float32)
    clips = [wave] + [aug.WaveAugment(p_clean=0.0)(wave, RATE, rng) for _ in range(12)]
    waves = [soxr.resample(c, RATE, extractor.sampling_rate).astype(np.float32) for c in clips]
    out = extractor(waves, sampling_rate=extractor.sampling_rate, return_tensors="pt")
    feats = out["input_features"]
    assert tuple(feats.shape[:2]) == (len(clips), 1)
    assert feats.shape[3] == extractor.feature_size
    assert torch.isfinite(feats).all()
    warped = aug.warp_features(feats, torch.Generator().manual_seed(0), 0.1, 0.15)
    assert warped.shape == feats.shape
    assert torch.isfinite(warped).all()


def test_warp_features_moves_a_formant_and_keeps_shape() -> None:
    T, Fq = 101, 32
    feats = torch.full((64, 1, T, Fq), -80.0)
    feats[..., 10] = 0.0  # one bright mel bin
    warped = aug.warp_features(feats, torch.Generator().manual_seed(1), 0.2, 0.0)
    assert warped.shape == feats.shape
    peaks = warped[:, 0, 0].argmax(dim=1)
    assert peaks.min() >= 8 and peaks.max() <= 12  # 10 * [1/1.2, 1.2]
    assert len(set(peaks.tolist())) > 1  # items are warped differently
    same = aug.warp_features(feats, torch.Generator().manual_seed(1), 0.0, 0.0)
    assert torch.equal(same, feats)


def test_warp_features_time_stretch_changes_tempo() -> None:
    T, Fq = 100, 8
    pulse = torch.zeros(T)
    pulse[::20] = 1.0  # a click every 20 frames
    feats = pulse[None, None, :, None].repeat(32, 1, 1, Fq)
    stretched = aug.warp_features(feats, torch.Generator().manual_seed(2), 0.0, 0.5)
    assert stretched.shape == feats.shape
    periods = []
    for item in stretched[:, 0, :, 0]:
        spectrum = torch.fft.rfft(item - item.mean()).abs()
        periods.append(T / float(spectrum[1:].argmax() + 1))
    assert min(periods) < 18 and max(periods) > 22
