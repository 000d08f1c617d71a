"""Retrieval metrics on hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.errors import InvalidInputError
from bridge.model.evaluation import cross_modal_metrics, retrieval_metrics


def test_perfect_instance_retrieval() -> None:
    x = np.eye(5, dtype=np.float32)
    m = retrieval_metrics(x, x)
    assert m["r_at_1"] == 1.0 and m["map"] == 1.0 and m["median_rank"] == 1.0


def test_instance_ranks_by_hand() -> None:
    gallery = np.eye(3, dtype=np.float32)
    # query 0 ranks gallery 1 first then 0 (rank 2); queries 1, 2 are right at rank 1.
    queries = np.array([[0.6, 0.8, 0.0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    m = retrieval_metrics(queries, gallery, ks=(1, 2))
    assert m["r_at_1"] == pytest.approx(2 / 3)
    assert m["r_at_2"] == 1.0
    assert m["map"] == pytest.approx((0.5 + 1 + 1) / 3)


def test_class_level_map_and_p_at_1() -> None:
    gallery = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    labels = np.array([0, 1, 1, 0])
    queries = np.array([[1, 0]], dtype=np.float32)
    m = retrieval_metrics(queries, gallery, [0], labels)
    # ranking: g0 (label 0, rank 1), g1 (1), g3 (0, rank 3), g2 (1): AP = (1/1 + 2/3) / 2
    assert m["p_at_1"] == 1.0
    assert m["map"] == pytest.approx((1 + 2 / 3) / 2)


def test_errors_are_clear() -> None:
    x = np.ones((3, 4), dtype=np.float32)
    with pytest.raises(InvalidInputError, match="instance-level"):
        retrieval_metrics(x, np.ones((2, 4), dtype=np.float32))
    with pytest.raises(InvalidInputError, match="dimension"):
        retrieval_metrics(x, np.ones((3, 5), dtype=np.float32))
    with pytest.raises(InvalidInputError, match="both"):
        retrieval_metrics(x, x, [0, 1, 2], None)


def test_cross_modal_has_both_directions() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    m = cross_modal_metrics(x, x)
    assert m["audio_to_image"]["r_at_1"] == 1.0 and m["image_to_audio"]["r_at_1"] == 1.0
