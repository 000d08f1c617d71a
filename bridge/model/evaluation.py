"""Retrieval metrics: R@K, mAP and median rank, instance level and class level.

Instance level: query i's only relevant gallery item is gallery row i (needs equal N).
Class level: every gallery item with the query's label is relevant; P@1 is the fraction of
queries whose top-1 shares their label, R@K the fraction with a relevant item in the top K.
Scores are inner products of L2-normalised rows (cosine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bridge.arrays import l2_normalize, validate_matrix
from bridge.errors import InvalidInputError


def _relevance_ranks(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_labels: np.ndarray | None,
    gallery_labels: np.ndarray | None,
    chunk: int = 1024,
) -> list[np.ndarray]:
    """For each query, the sorted 1-based ranks of its relevant gallery items."""
    ranks: list[np.ndarray] = []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ gallery.T  # (C, G)
        order = np.argsort(-scores, axis=1, kind="stable")
        for row, ranking in enumerate(order):
            q = start + row
            if query_labels is None or gallery_labels is None:
                relevant = ranking == q
            else:
                relevant = gallery_labels[ranking] == query_labels[q]
            ranks.append(np.flatnonzero(relevant) + 1)
    return ranks


def retrieval_metrics(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_labels: Sequence[Any] | np.ndarray | None = None,
    gallery_labels: Sequence[Any] | np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Metrics for retrieving `gallery` rows with `queries` rows (one direction)."""
    queries = l2_normalize(validate_matrix(queries, "queries"))
    gallery = l2_normalize(validate_matrix(gallery, "gallery", queries.shape[1]))
    q_labels = None if query_labels is None else np.asarray(query_labels)
    g_labels = None if gallery_labels is None else np.asarray(gallery_labels)
    if (q_labels is None) != (g_labels is None):
        raise InvalidInputError("give labels for both queries and gallery, or for neither")
    if q_labels is None and len(queries) != len(gallery):
        raise InvalidInputError(
            f"instance-level metrics need as many queries as gallery rows "
            f"({len(queries)} != {len(gallery)}); give labels for class-level metrics"
        )
    if q_labels is not None and (len(q_labels) != len(queries) or len(g_labels) != len(gallery)):  # type: ignore[arg-type]
        raise InvalidInputError("labels must have one entry per row")
    ranks = _relevance_ranks(queries, gallery, q_labels, g_labels)
    first = np.array([r[0] if len(r) else np.inf for r in ranks], dtype=np.float64)
    metrics: dict[str, float] = {f"r_at_{k}": float(np.mean(first <= k)) for k in ks}
    metrics["p_at_1"] = metrics.get("r_at_1", float(np.mean(first <= 1)))
    metrics["map"] = float(np.mean([_average_precision(r) for r in ranks]))
    metrics["median_rank"] = float(np.median(first))
    metrics["queries"] = float(len(queries))
    metrics["gallery"] = float(len(gallery))
    return metrics


def _average_precision(ranks: np.ndarray) -> float:
    """AP for one query from the 1-based ranks of its relevant items."""
    if len(ranks) == 0:
        return 0.0
    hits = np.arange(1, len(ranks) + 1)
    return float(np.mean(hits / ranks))


def cross_modal_metrics(
    shared_image: np.ndarray,
    shared_audio: np.ndarray,
    image_labels: Sequence[Any] | np.ndarray | None = None,
    audio_labels: Sequence[Any] | np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """audio->image and image->audio metrics in the shared space."""
    return {
        "audio_to_image": retrieval_metrics(shared_audio, shared_image, audio_labels, image_labels),
        "image_to_audio": retrieval_metrics(shared_image, shared_audio, image_labels, audio_labels),
    }
