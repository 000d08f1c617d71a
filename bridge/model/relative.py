"""Relative representations: the training-free competitor of the bridge (ASIF, Norelli et al.
2023; Moschella et al. 2023).

The same caption corpus the bridge trains on is encoded by both text towers. An audio clip is
described by its similarities to the N captions in CLAP's space, an image by its similarities
to the same N captions in CLIP's space; row j of both descriptions is caption j, so the two
can be compared directly (cosine), with no training at all. Options, as in ASIF: keep only
each item's `top_k` most similar captions (0 = all), raise the kept similarities to `power`
(sharpens), or replace them by a softmax at `temperature`.

What it needs: the caption corpus in both spaces, as the bridge does, and nothing else; what
it costs at query time: N dot products per item and an N-wide (sparse) vector to compare.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bridge.arrays import l2_normalize, validate_matrix
from bridge.errors import InvalidInputError


@dataclass(frozen=True)
class RelativeConfig:
    top_k: int = 0  # keep each row's k most similar captions; 0 keeps every caption
    power: float = 1.0  # kept similarities (clipped at 0) raised to this power
    temperature: float = 0.0  # > 0: softmax(similarity / temperature) instead of the power

    def __post_init__(self) -> None:
        if self.top_k < 0 or self.power <= 0 or self.temperature < 0:
            raise InvalidInputError(
                f"relative representation needs top_k >= 0, power > 0, temperature >= 0; got {self}"
            )


def relative_representation(
    items: np.ndarray, captions: np.ndarray, config: RelativeConfig = RelativeConfig()
) -> np.ndarray:
    """(n, N) unit rows: each item's similarities to the N caption embeddings of its own
    space, sparsified and sharpened by `config`. Items and captions are L2-normalised first."""
    captions = l2_normalize(validate_matrix(captions, "caption embeddings"))
    items = l2_normalize(validate_matrix(items, "item embeddings", captions.shape[1]))
    sims = items @ captions.T  # (n, N)
    if config.temperature > 0:
        sims = sims / config.temperature
        sims = np.exp(sims - sims.max(axis=1, keepdims=True))
    else:
        sims = np.maximum(sims, 0.0) ** config.power
    if 0 < config.top_k < sims.shape[1]:
        # Zero all but each row's top_k (argpartition: linear time per row).
        drop = np.argpartition(-sims, config.top_k, axis=1)[:, config.top_k :]
        np.put_along_axis(sims, drop, 0.0, axis=1)
    return l2_normalize(sims.astype(np.float32))


def relative_pair(
    audio: np.ndarray,
    image: np.ndarray,
    clap_text: np.ndarray,
    clip_text: np.ndarray,
    config: RelativeConfig = RelativeConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Audio (CLAP) and images (CLIP) described over the same caption corpus (row j of
    `clap_text` and `clip_text` is caption j): two comparable (n, N) matrices."""
    if len(clap_text) != len(clip_text):
        raise InvalidInputError(
            f"the caption corpus must be the same in both spaces: {len(clap_text)} CLAP rows, "
            f"{len(clip_text)} CLIP rows"
        )
    return (
        relative_representation(audio, clap_text, config),
        relative_representation(image, clip_text, config),
    )
