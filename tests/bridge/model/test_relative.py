"""Relative representations: the training-free competitor over the caption corpus."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.bench.synthetic_world import World
from bridge.errors import InvalidInputError
from bridge.model.evaluation import retrieval_metrics
from bridge.model.relative import RelativeConfig, relative_pair, relative_representation


def test_rows_are_unit_and_keep_only_the_top_k_captions() -> None:
    rng = np.random.default_rng(0)
    items, captions = rng.standard_normal((7, 8)), rng.standard_normal((30, 8))
    rel = relative_representation(items, captions, RelativeConfig(top_k=4, power=2.0))
    assert rel.shape == (7, 30) and rel.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rel, axis=1), 1.0, atol=1e-6)
    assert ((rel > 0).sum(axis=1) <= 4).all()
    # The kept captions are each row's most similar ones.
    sims = (items / np.linalg.norm(items, axis=1, keepdims=True)) @ (
        captions / np.linalg.norm(captions, axis=1, keepdims=True)
    ).T
    for row in range(7):
        assert set(np.flatnonzero(rel[row])) <= set(np.argsort(-sims[row])[:4])
    soft = relative_representation(items, captions, RelativeConfig(temperature=0.05))
    assert (soft > 0).all()  # a softmax keeps every caption


def test_relative_representations_retrieve_across_spaces_without_training(
    small_world: World,
) -> None:
    w = small_world
    chance = 10 / len(w.test_audio)
    asif = RelativeConfig(top_k=100, power=8.0)
    audio, image = relative_pair(w.test_audio, w.test_image, w.clap_text, w.clip_text, asif)
    assert retrieval_metrics(audio, image)["r_at_10"] > 6 * chance  # 0.435: no training
    audio, image = relative_pair(w.test_audio, w.test_image, w.clap_text, w.clip_text)
    assert retrieval_metrics(audio, image)["r_at_10"] > 3 * chance  # dense: 0.255


def test_bad_inputs_are_rejected(small_world: World) -> None:
    w = small_world
    with pytest.raises(InvalidInputError, match="same in both spaces"):
        relative_pair(w.test_audio, w.test_image, w.clap_text[:10], w.clip_text)
    with pytest.raises(InvalidInputError):
        RelativeConfig(power=0)
    with pytest.raises(InvalidInputError, match="item embeddings"):
        relative_representation(w.test_audio[:, :5], w.clap_text)
