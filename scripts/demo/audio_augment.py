"""Waveform and log-mel augmentation for the demo CLAP (scripts/demo/train_demo_clap.py).

FSDD has six speakers, so a tower trained on it learns their voices and rooms as much as the
digits. These transforms make new voices and recording conditions out of the training clips:

- waveform (numpy, at the clip's own rate, before resampling to the model rate): speed
  perturbation by resampling (tempo, pitch and formants move together, as between a short
  and a long vocal tract), random equalisation (a smooth random gain curve over frequency:
  microphones, rooms), reverberation with a synthetic exponentially decaying impulse
  response, additive white / pink / brown noise at a chosen SNR, gain, leading silence and
  random crops;
- log-mel features (torch, per batch): a frequency warp of the mel axis (vocal-tract-length
  perturbation, VTLP) and a time stretch, so pitch/formants and tempo also move apart.

Every function draws only from the generator it is given, so a seeded run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def speed_perturb(wave: np.ndarray, factor: float) -> np.ndarray:
    """Play `wave` `factor` times faster: length / factor samples, every frequency * factor.

    The classic Kaldi speed perturbation: resample as if the clip had been recorded at
    rate * factor (soxr, high quality)."""
    import soxr

    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return wave.astype(np.float32, copy=True)
    return np.asarray(soxr.resample(wave, factor, 1.0), dtype=np.float32)


def signal_power(wave: np.ndarray) -> float:
    return float(np.mean(np.square(wave, dtype=np.float64)))


def colored_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectral density ~ 1 / f**exponent (0 white, 1 pink,
    2 brown), unit power."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=n)
    return (noise / max(np.sqrt(np.mean(noise**2)), 1e-12)).astype(np.float32)


def add_noise(
    wave: np.ndarray, snr_db: float, rng: np.random.Generator, exponent: float = 0.0
) -> np.ndarray:
    """`wave` plus coloured noise scaled so that 10 log10(P_wave / P_noise) == snr_db."""
    noise = colored_noise(len(wave), exponent, rng)
    scale = np.sqrt(signal_power(wave) / 10 ** (snr_db / 10))
    return (wave + scale * noise).astype(np.float32)


def apply_gain(wave: np.ndarray, gain_db: float) -> np.ndarray:
    return (wave * 10 ** (gain_db / 20)).astype(np.float32)


def synthetic_rir(
    rate: int, rt60: float, rng: np.random.Generator, direct_ratio_db: float = 0.0
) -> np.ndarray:
    """A room impulse response: a unit direct path, then Gaussian noise under an exponential
    envelope that decays by 60 dB in `rt60` seconds (a diffuse tail), starting 1-5 ms late,
    scaled so that the tail's energy is `direct_ratio_db` below the direct path's."""
    n = max(2, int(rt60 * rate))
    delay = int(rng.uniform(0.001, 0.005) * rate) + 1
    t = np.arange(n - delay) / rate
    tail = rng.standard_normal(n - delay) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078
    tail *= np.sqrt(10 ** (-direct_ratio_db / 10) / max(np.sum(tail**2), 1e-12))
    rir = np.zeros(n, dtype=np.float64)
    rir[0] = 1.0
    rir[delay:] = tail
    return rir.astype(np.float32)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with `rir` (FFT), keep the input's length and its RMS level."""
    n = len(wave) + len(rir) - 1
    size = 1 << (n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(rir, size), size)[: len(wave)]
    wet *= np.sqrt(signal_power(wave) / max(signal_power(wet), 1e-20))
    return wet.astype(np.float32)


def random_eq(wave: np.ndarray, rng: np.random.Generator, max_db: float = 10.0) -> np.ndarray:
    """Multiply the spectrum by a smooth random gain curve (a random tilt plus random bumps,
    within +-max_db, interpolated from 6 control points); keeps the RMS level."""
    spectrum = np.fft.rfft(wave)
    points = (
        rng.uniform(-max_db, max_db, 6) * 0.5
        + np.linspace(-1, 1, 6) * rng.uniform(-max_db, max_db) * 0.5
    )
    curve_db = np.interp(np.linspace(0, 1, len(spectrum)), np.linspace(0, 1, 6), points)
    out = np.fft.irfft(spectrum * 10 ** (curve_db / 20), n=len(wave))
    out *= np.sqrt(signal_power(wave) / max(signal_power(out), 1e-20))
    return out.astype(np.float32)


def shift_and_crop(
    wave: np.ndarray, rate: int, rng: np.random.Generator, max_pad_s: float, min_keep: float
) -> np.ndarray:
    """Drop up to (1 - min_keep) of the clip from its two ends, then prepend up to max_pad_s
    of silence (a later start, as when a recording begins before the word)."""
    n = len(wave)
    keep = int(n * rng.uniform(min_keep, 1.0))
    start = int(rng.integers(0, n - keep + 1))
    pad = int(rng.uniform(0, max_pad_s) * rate)
    return np.concatenate([np.zeros(pad, np.float32), wave[start : start + keep]])


@dataclass(frozen=True)
class WaveAugment:
    """Probabilities and ranges of the waveform chain (train_demo_clap.py --augment)."""

    p_clean: float = 0.25  # this share of draws is left untouched
    speed: tuple[float, float] = (0.87, 1.15)
    p_eq: float = 0.6
    eq_db: float = 10.0
    p_reverb: float = 0.4
    rt60: tuple[float, float] = (0.1, 0.7)
    drr_db: tuple[float, float] = (-3.0, 12.0)
    p_noise: float = 0.6
    snr_db: tuple[float, float] = (5.0, 40.0)
    gain_db: tuple[float, float] = (-30.0, 6.0)
    p_shift: float = 0.5
    max_pad_s: float = 0.15
    min_keep: float = 0.85

    def __call__(self, wave: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
        """One random augmented version of `wave` (mono, `rate` Hz)."""
        if rng.random() < self.p_clean:
            return wave.astype(np.float32, copy=True)
        # log-uniform speed factor, so slowing down and speeding up are equally likely
        lo, hi = np.log(self.speed[0]), np.log(self.speed[1])
        out = speed_perturb(wave, float(np.exp(rng.uniform(lo, hi))))
        if rng.random() < self.p_eq:
            out = random_eq(out, rng, self.eq_db)
        if rng.random() < self.p_reverb:
            rir = synthetic_rir(rate, rng.uniform(*self.rt60), rng, rng.uniform(*self.drr_db))
            out = reverberate(out, rir)
        if rng.random() < self.p_shift:
            out = shift_and_crop(out, rate, rng, self.max_pad_s, self.min_keep)
        if rng.random() < self.p_noise:
            out = add_noise(out, rng.uniform(*self.snr_db), rng, float(rng.choice([0, 1, 2])))
        return apply_gain(out, rng.uniform(*self.gain_db))


def warp_features(
    feats: torch.Tensor, gen: torch.Generator, freq_warp: float, time_stretch: float
) -> torch.Tensor:
    """(B, 1, T, F) log-mel: stretch each item's mel axis by a factor in [1/(1+freq_warp),
    1+freq_warp] (VTLP: formants move up or down; bins beyond the edge repeat the last one)
    and its time axis by a factor in [1/(1+time_stretch), 1+time_stretch] (repeated or cut
    to T frames, as the extractor's repeat-pad does). Shapes are kept."""
    B, C, T, Fq = feats.shape
    if freq_warp <= 0 and time_stretch <= 0:
        return feats
    log_f = (torch.rand(B, generator=gen) * 2 - 1) * float(np.log1p(freq_warp))
    log_t = (torch.rand(B, generator=gen) * 2 - 1) * float(np.log1p(time_stretch))
    out = torch.empty_like(feats)
    for i in range(B):
        x = feats[i : i + 1]  # (1, C, T, F)
        alpha = float(torch.exp(log_f[i]))
        src_f = torch.clamp(torch.arange(Fq, dtype=torch.float32) / alpha, max=Fq - 1)
        lo = src_f.floor().long()
        hi = torch.clamp(lo + 1, max=Fq - 1)
        w = src_f - lo
        x = x[..., lo] * (1 - w) + x[..., hi] * w
        new_t = max(2, round(T * float(torch.exp(log_t[i]))))
        if new_t != T:
            x = F.interpolate(x, size=(new_t, Fq), mode="bilinear", align_corners=False)
            x = x.repeat(1, 1, -(-T // new_t), 1)[:, :, :T] if new_t < T else x[:, :, :T]
        out[i] = x[0]
    return out
