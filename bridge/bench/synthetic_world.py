"""A synthetic world for the C-MCR quality benchmark.

One latent semantic space (a mixture of concepts) is seen through two different "contrastive
models": CLIP-like = nonlinear map A with image and text towers, CLAP-like = nonlinear map B with
audio and text towers. Inside each model the non-text modality sits at a constant offset from
text (the modality gap) plus per-sample noise, like real contrastive spaces. Caption pairs are
the same latent through both text towers; memories are unpaired images and unpaired audio; the
test set pairs audio and image of the same latent (never seen in training).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.arrays import l2_normalize


@dataclass(frozen=True)
class WorldConfig:
    latent_dim: int = 24
    concepts: int = 64
    concept_spread: float = 0.45
    space_dim: int = 64
    hidden_dim: int = 128
    modality_gap: float = 1.0
    sample_noise: float = 0.3
    gain: float = 1.0
    captions: int = 20_000
    memory: int = 10_000
    test_pairs: int = 1_000
    seed: int = 0


@dataclass
class World:
    clip_text: np.ndarray
    clap_text: np.ndarray
    image_memory: np.ndarray
    audio_memory: np.ndarray
    test_image: np.ndarray
    test_audio: np.ndarray
    test_concept: np.ndarray
    train_image: np.ndarray  # paired image/audio, for the oracle only
    train_audio: np.ndarray
    config: WorldConfig  # what it was made from


class _Space:
    """A random 2-layer tanh network: latent -> space, plus a modality-gap direction."""

    def __init__(self, cfg: WorldConfig, rng: np.random.Generator) -> None:
        self.w1 = rng.normal(size=(cfg.latent_dim, cfg.hidden_dim)) / np.sqrt(cfg.latent_dim)
        self.b1 = rng.normal(size=cfg.hidden_dim) * 0.5
        self.w2 = rng.normal(size=(cfg.hidden_dim, cfg.space_dim)) / np.sqrt(cfg.hidden_dim)
        gap = rng.normal(size=cfg.space_dim)
        self.gap = gap / np.linalg.norm(gap)
        self.cfg = cfg

    def text(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._embed(z, rng, 0.0)

    def other(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._embed(z, rng, self.cfg.modality_gap)

    def _embed(self, z: np.ndarray, rng: np.random.Generator, gap: float) -> np.ndarray:
        h = np.tanh(self.cfg.gain * (z @ self.w1 + self.b1)) @ self.w2
        h = l2_normalize(h) + gap * self.gap
        h = h + rng.normal(size=h.shape) * self.cfg.sample_noise / np.sqrt(self.cfg.space_dim)
        return l2_normalize(h)


def make_world(cfg: WorldConfig = WorldConfig()) -> World:
    rng = np.random.default_rng(cfg.seed)
    centers = rng.normal(size=(cfg.concepts, cfg.latent_dim))

    def latents(n: int) -> tuple[np.ndarray, np.ndarray]:
        concept = rng.integers(0, cfg.concepts, size=n)
        z = centers[concept] + rng.normal(size=(n, cfg.latent_dim)) * cfg.concept_spread
        return z, concept

    clip, clap = _Space(cfg, rng), _Space(cfg, rng)
    z_cap, _ = latents(cfg.captions)
    z_img, _ = latents(cfg.memory)
    z_aud, _ = latents(cfg.memory)
    z_test, test_concept = latents(cfg.test_pairs)
    z_pair, _ = latents(cfg.memory)
    return World(
        clip_text=clip.text(z_cap, rng),
        clap_text=clap.text(z_cap, rng),
        image_memory=clip.other(z_img, rng),
        audio_memory=clap.other(z_aud, rng),
        test_image=clip.other(z_test, rng),
        test_audio=clap.other(z_test, rng),
        test_concept=test_concept,
        train_image=clip.other(z_pair, rng),
        train_audio=clap.other(z_pair, rng),
        config=cfg,
    )
